"""One artifact in its own process for a profiling run: its load time, peak RSS and CPU time are its own, and
engines never share a process. The parent sends conversations over a pipe and gets each reply's stats."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from edgechat.core.errors import EdgechatError

ROOT = Path(__file__).resolve().parents[2]


def serve(rx: Connection, tx: Connection, artifact: str, options: dict) -> None:
    try:
        import edgechat

        chat = edgechat.load(artifact, **options)
        tx.send({"ok": True, "engine": chat.engine.name, "bytes": chat.engine.model_bytes, "load_s": chat.load_s,
                 "threads": chat.engine_facts["threads"], "cpu_backend": chat.engine_facts["cpu_backend"],
                 "energy_source": chat.meter.source, "pid": os.getpid()})
    except EdgechatError as e:
        tx.send({"ok": False, "error": str(e)})
        return
    except Exception:
        tx.send({"ok": False, "error": traceback.format_exc(limit=3)})
        return
    while True:
        try:
            msg = rx.recv()
        except EOFError:  # the parent went away
            break
        if msg is None:
            break
        try:
            chat.reset()
            stats = [chat.send(turn, max_tokens=msg["max_tokens"]).stats.as_dict() for turn in msg["turns"]]
            tx.send({"ok": True, "stats": stats})
        except EdgechatError as e:
            tx.send({"ok": False, "error": str(e)})
    chat.engine.close()


class Worker:
    """The parent's handle on one artifact's process: a fresh interpreter (`python -m edgechat.app.profiling_worker`,
    so the caller's own script is never re-imported), talking over two pipes."""

    def __init__(self, artifact: str, options: dict):
        self.artifact = artifact
        p_read, c_write = os.pipe()
        c_read, p_write = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "edgechat.app.profiling_worker", str(c_read), str(c_write),
                                      artifact, json.dumps(options)], pass_fds=(c_read, c_write), env=env,
                                     stdout=subprocess.DEVNULL)
        os.close(c_read)
        os.close(c_write)
        self.rx, self.tx = Connection(p_read, writable=False), Connection(p_write, readable=False)
        self.info = self._reply()
        self.pid = self.info["pid"]

    def _reply(self) -> dict:
        try:
            msg = self.rx.recv()
        except EOFError:
            code = self.proc.wait()
            raise EdgechatError(f"the worker for {self.artifact} died (exit code {code})") from None
        if not msg["ok"]:
            self.close()
            raise EdgechatError(f"{self.artifact}: {msg['error']}")
        return msg

    def send(self, turns: list[str], max_tokens: int) -> list[dict]:
        self.tx.send({"turns": turns, "max_tokens": max_tokens})
        return self._reply()["stats"]

    def close(self) -> None:
        try:
            self.tx.send(None)
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()
        self.rx.close()
        self.tx.close()


if __name__ == "__main__":
    r, w, art, opts = sys.argv[1:5]
    serve(Connection(int(r), writable=False), Connection(int(w), readable=False), art, json.loads(opts))
