"""`edgechat serve` as a child process, for programs that start their own server (an app's launcher, the tests,
the benchmarks): started on any free port (port 0) and the port read from the line the server prints once it
listens; stopped as Ctrl-C would, then killed if it does not end."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start(*args, env: dict | None = None, python: str = sys.executable) -> tuple[subprocess.Popen, int]:
    """args: serve's own (artifacts and options; --port 0 is added). Returns the process and its port."""
    proc = subprocess.Popen([python, "-m", "edgechat.cli", "serve", *map(str, args), "--port", "0"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    line = proc.stderr.readline()
    m = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"serve did not start: {line}{proc.stderr.read()}")
    return proc, int(m.group(1))


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM (serve closes its engines and exits), SIGKILL after `timeout` s; the exit code."""
    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
