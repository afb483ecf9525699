"""`edgechat serve` measured against the Chat API in-process, on the same Q4_K_M GGUF of the embedded SmolLM2
(loopback only; the server is a subprocess, stopped at the end).

overhead  interleaved rounds (order rotated per round): the same greedy request of --tokens tokens through the
          server (the official openai client, streaming; on a server with --stream-interval-ms, serve's default,
          and on one sending a chunk per token, also read by a raw SSE client) and through Chat.send(stream=True)
          in this process, with the same threads, n_ctx and cache reuse (both sides keep the previous round's ids, as the server's
          Chat does between requests). One external stopwatch for both: TTFT = request to first text piece,
          decode tok/s = (completion tokens - 1) / (last piece - first piece). Goal: decode within 3%, TTFT
          within 10 ms; the figures are medians of per-round ratios and differences.
load      --clients concurrent clients (threads, one openai client each) send --requests requests in all,
          every other one streamed, over a few prompts: each reply must equal Chat.send's greedy reply to that
          prompt; p50/p95 latency; the server's VmRSS after a warm-up and after all requests.

    .venv/bin/python benchmarks/bench_serve.py [--gguf-dir DIR] [--rounds 9] [--tokens 128] [--clients 8] [--requests 200]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edgechat.app import serve_process  # noqa: E402
from edgechat.app.serve_request import STREAM_INTERVAL_S  # noqa: E402
from common import (PYTHON, THREADS, Bench, artifact, cached_convert, cpu_busy_cores, md_table, median,  # noqa: E402
                    rotate, summary)
from serve_load import client_for, load_test  # noqa: E402

N_CTX = 2048
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def start_server(path: Path, env: dict | None = None, *args) -> tuple[subprocess.Popen, int]:
    return serve_process.start(path, "--threads", THREADS, "--n-ctx", N_CTX, *args, env=env, python=PYTHON)


def stop_server(proc: subprocess.Popen) -> int:
    return serve_process.stop(proc)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat fields 14 and 15)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_stack() -> dict:
    """What uvicorn runs on here ("auto" picks uvloop and httptools when installed)."""
    from importlib.util import find_spec

    return {"loop": "uvloop" if find_spec("uvloop") else "asyncio",
            "http": "httptools" if find_spec("httptools") else "h11"}


# -- overhead -----------------------------------------------------------------------------------------
def timed(pieces, completion_tokens) -> dict:
    """pieces: an iterator of text pieces; the request was sent at the time of the call."""
    t0 = time.perf_counter()
    marks, text = [], []
    for p in pieces:
        if p:
            marks.append(time.perf_counter())
            text.append(p)
    n = completion_tokens()
    decode = (n - 1) / (marks[-1] - marks[0]) if len(marks) > 1 and marks[-1] > marks[0] else None
    return {"ttft_s": marks[0] - t0, "decode_tok_s": decode, "tokens": n, "text": "".join(text)}


def via_server(client, model: str, text: str, n: int) -> dict:
    last = {}

    def pieces():
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                                max_tokens=n, temperature=0, stream=True)
        for ch in stream:
            if ch.usage:
                last["usage"], last["edgechat"] = ch.usage, (ch.model_extra or {}).get("edgechat")
            if ch.choices and ch.choices[0].delta.content:
                yield ch.choices[0].delta.content

    r = timed(pieces(), lambda: last["usage"].completion_tokens)
    r["own"] = {k: last["edgechat"][k] for k in ("ttft_s", "decode_tok_s", "cached_tokens")}
    return r


def via_raw_sse(port: int, model: str, text: str, n: int) -> dict:
    """The same request read by the leanest client (http.client, one json.loads per event): what the server
    itself costs, without the openai client's per-chunk work competing with the engine for the cores."""
    import http.client
    import json

    last = {}

    def pieces():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": n, "temperature": 0,
             "stream": True}), {"Content-Type": "application/json"})
        for line in conn.getresponse():
            if line.startswith(b"data: {"):
                ev = json.loads(line[6:])
                if ev.get("usage"):
                    last.update(ev)
                if ev["choices"] and ev["choices"][0]["delta"].get("content"):
                    yield ev["choices"][0]["delta"]["content"]
        conn.close()

    r = timed(pieces(), lambda: last["usage"]["completion_tokens"])
    r["own"] = {k: last["edgechat"][k] for k in ("ttft_s", "decode_tok_s", "cached_tokens")}
    return r


def in_process(chat, text: str, n: int) -> dict:
    chat.messages = []  # stateless, as a server request is; the cache of the previous request stays
    r = timed(chat.send(text, stream=True, max_tokens=n, temperature=0), lambda: chat.last_reply.stats.completion_tokens)
    s = chat.last_reply.stats
    r["own"] = {"ttft_s": s.ttft_s, "decode_tok_s": s.decode_tok_s, "cached_tokens": s.cached_tokens}
    return r


def with_cpu(fn, pid: int | None):
    """fn's result with the CPU seconds it cost: this process's (the client, or the in-process engine) plus the
    server's. CPU time is far less sensitive than wall time to other processes sharing the cores."""
    def run(text):
        c0, s0 = time.process_time(), proc_cpu_s(pid) if pid else 0.0
        r = fn(text)
        r["here_cpu_s"], r["server_cpu_s"] = time.process_time() - c0, (proc_cpu_s(pid) - s0) if pid else 0.0
        r["cpu_s"] = r["here_cpu_s"] + r["server_cpu_s"]
        return r
    return run


def overhead(path: Path, port: int, pid: int, rounds: int, n: int, env: dict, interval_ms: float
             ) -> tuple[dict, str]:
    import edgechat

    chat = edgechat.load(path, n_ctx=N_CTX, threads=THREADS)
    # each side its own server: the sides must not reuse each other's cache
    per_token, pt_port = start_server(path, env, "--stream-interval-ms", 0)
    raw_proc, raw_port = start_server(path, env, "--stream-interval-ms", 0)
    client, pt_client = client_for(port), client_for(pt_port)
    try:
        return _overhead(path, chat, rounds, n, {
            f"serve, openai client, chunks >= {interval_ms:g} ms apart":
                with_cpu(lambda t: via_server(client, path.name, t, n), pid),
            "serve, openai client, a chunk per token":
                with_cpu(lambda t: via_server(pt_client, path.name, t, n), per_token.pid),
            "serve, raw SSE client, a chunk per token":
                with_cpu(lambda t: via_raw_sse(raw_port, path.name, t, n), raw_proc.pid),
            "chat": with_cpu(lambda t: in_process(chat, t, n), None)})
    finally:
        stop_server(per_token)
        stop_server(raw_proc)


def _overhead(path, chat, rounds, n, sides) -> tuple[dict, str]:
    for side in sides.values():  # warm-up: page the weights in, allocate the compute buffers
        side(PROMPT)
    runs = {k: [] for k in sides}
    busy = []
    for r in range(rounds):
        busy.append(cpu_busy_cores(0.5))
        for name in rotate(list(sides), r):
            runs[name].append(sides[name](f"{PROMPT} (Draft {r + 1}.)"))  # a new tail each round, same for all
        print(f"[overhead] round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]['decode_tok_s']:.1f} tok/s ttft {1e3 * v[-1]['ttft_s']:.0f} ms" for k, v in runs.items()),
            file=sys.stderr)
    same = all(len({x["text"] for x in xs}) == 1 for xs in zip(*runs.values()))
    ref = runs["chat"]
    res = {"rounds": rounds, "tokens": n, "n_ctx": N_CTX, "threads": THREADS, "same_text": same,
           "busy_cores_other": busy, "sides": {}}
    rows, lines = [], []
    for k, v in runs.items():
        side = {"decode_tok_s": summary([x["decode_tok_s"] for x in v]),
                "ttft_ms": summary([1e3 * x["ttft_s"] for x in v]),
                "own_decode_tok_s": summary([x["own"]["decode_tok_s"] for x in v]),
                "own_ttft_ms": summary([1e3 * x["own"]["ttft_s"] for x in v]),
                "cpu_ms_per_token": summary([1e3 * x["cpu_s"] / x["tokens"] for x in v]),
                "here_cpu_ms_per_token": summary([1e3 * x["here_cpu_s"] / x["tokens"] for x in v]),
                "server_cpu_ms_per_token": summary([1e3 * x["server_cpu_s"] / x["tokens"] for x in v]),
                "tokens": [x["tokens"] for x in v], "cached_tokens": [x["own"]["cached_tokens"] for x in v]}
        if k != "chat":
            side["decode_ratio"] = summary([a["decode_tok_s"] / b["decode_tok_s"] for a, b in zip(v, ref)])
            side["ttft_diff_ms"] = summary([1e3 * (a["ttft_s"] - b["ttft_s"]) for a, b in zip(v, ref)])
            side["cpu_per_token_ratio"] = summary([(a["cpu_s"] / a["tokens"]) / (b["cpu_s"] / b["tokens"])
                                                   for a, b in zip(v, ref)])
            d, t = side["decode_ratio"], side["ttft_diff_ms"]
            lines.append(f"- {k}: decode **{d['median']:.3f}** of Chat's (range {d['min']:.3f}-{d['max']:.3f}; "
                         f"goal >= 0.97), TTFT **{t['median']:+.1f} ms** (range {t['min']:+.1f} to {t['max']:+.1f}; "
                         f"goal <= 10 ms), CPU per token {side['cpu_per_token_ratio']['median']:.3f}x Chat's")
        res["sides"][k] = side
        rows.append([k, side["decode_tok_s"]["median"], side["ttft_ms"]["median"], side["own_decode_tok_s"]["median"],
                     side["own_ttft_ms"]["median"], side["cpu_ms_per_token"]["median"],
                     side["here_cpu_ms_per_token"]["median"], side["server_cpu_ms_per_token"]["median"],
                     median(side["tokens"])])
    md = ("## Server overhead (streaming, interleaved)\n\n"
          + md_table(["side", "decode tok/s", "TTFT ms", "engine's own decode tok/s", "engine's own TTFT ms",
                      "CPU ms/token (server + client)", "of it: client or in-process", "of it: server",
                      "tokens"], rows)
          + f"\n\nMedians of {rounds} per-round ratios and differences against Chat in-process:\n\n"
          + "\n".join(lines) + f"\n\nSame text on every side every round: {same}. Cores kept busy by other "
          f"processes before each round: {busy}.\n")
    return res, md


def main():
    global THREADS
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--load-tokens", type=int, default=16)
    ap.add_argument("--skip", choices=["overhead", "load"], help="run one part only (results: bench_serve_load or "
                    "bench_serve_overhead instead of bench_serve)")
    ap.add_argument("--gguf-dir", help="an edgechat output directory with a q4_k_m GGUF of the embedded SmolLM2 "
                    "(default: converted into benchmarks/.cache)")
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the server process only (an experiment's knob)")
    ap.add_argument("--threads", type=int, default=THREADS, help="the engine's threads, on both sides")
    ap.add_argument("--stream-interval-ms", type=float, default=1e3 * STREAM_INTERVAL_S,
                    help="the main server's (serve's default; the overhead part also runs servers at 0)")
    ap.add_argument("--name", help="results file stem (default: by --skip)")
    args = ap.parse_args()
    THREADS = args.threads
    bench = Bench(args.name or {None: "bench_serve", "load": "bench_serve_overhead", "overhead": "bench_serve_load"}[args.skip])
    path = artifact(Path(args.gguf_dir) if args.gguf_dir else cached_convert(["q8_0", "q4_k_m"]), "q4_k_m")
    env = dict(kv.split("=", 1) for kv in args.server_env)
    proc, port = start_server(path, env, "--stream-interval-ms", args.stream_interval_ms)
    out, md = {"artifact": path.name, "server_env": env, "server_stack": server_stack(),
               "stream_interval_ms": args.stream_interval_ms}, ""
    try:
        if args.skip != "overhead":
            r, m = overhead(path, port, proc.pid, args.rounds, args.tokens, env, args.stream_interval_ms)
            out["overhead"], md = r, md + m + "\n"
            out["loadavg_after_overhead"] = __import__("os").getloadavg()
        if args.skip != "load":
            r, m = load_test(path, port, proc.pid, args.clients, args.requests, args.load_tokens, THREADS,
                             N_CTX)
            out["load"], md = r, md + m
    finally:
        out["server_exit_code"] = stop_server(proc)
    stack = out["server_stack"]
    bench.write(out, md + f"\nThe server ran on uvicorn with {stack['loop']} and {stack['http']}"
                + (f", environment {env}" if env else "") + f"; it stopped at the end (exit code "
                f"{out['server_exit_code']}).\n")


if __name__ == "__main__":
    main()
