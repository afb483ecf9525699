"""bench_serve's load test: concurrent openai clients against a running `edgechat serve`, every reply checked
against the Chat API's greedy reply in this process; latency percentiles and the server's memory."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from common import md_table

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.", "How many legs has a spider?",
             "What do bees make?", "Give me a word that rhymes with cat.", "What is 12 plus 30?",
             "Why is the sky blue?", "Say hello in Spanish."]


def proc_mib(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


def client_for(port: int):
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)


def load_test(path: Path, port: int, pid: int, clients: int, requests: int, n: int, threads: int,
              n_ctx: int) -> tuple[dict, str]:
    """--clients threads send --requests requests in all to the server on `port` (process `pid`); each reply
    checked against Chat.send's greedy reply in this process."""
    import edgechat

    chat = edgechat.load(path, n_ctx=n_ctx, threads=threads)
    want = {}
    for q in QUESTIONS:  # the reference: Chat.send, greedy, each question alone
        chat.reset()
        want[q] = chat.send(q, max_tokens=n, temperature=0).text
    chat.engine.close()
    del chat
    client = client_for(port)
    for q in QUESTIONS:  # warm-up: every prompt once, so the "before" RSS holds the buffers a request needs
        client.chat.completions.create(model=path.name, messages=[{"role": "user", "content": q}], max_tokens=n,
                                       temperature=0)
    before = proc_mib(pid)
    lock, counter, results = threading.Lock(), [0], []

    def one(c, i: int) -> dict:
        q, stream = QUESTIONS[i % len(QUESTIONS)], i % 2 == 0
        t0 = time.perf_counter()
        kw = dict(model=path.name, messages=[{"role": "user", "content": q}], max_tokens=n, temperature=0)
        try:
            if stream:
                parts, ttft, finish = [], None, None
                for ch in c.chat.completions.create(stream=True, **kw):
                    if ch.choices and ch.choices[0].delta.content:
                        ttft = ttft or time.perf_counter() - t0
                        parts.append(ch.choices[0].delta.content)
                    if ch.choices and ch.choices[0].finish_reason:
                        finish = ch.choices[0].finish_reason
                text = "".join(parts)
            else:
                r = c.chat.completions.create(**kw)
                text, ttft, finish = r.choices[0].message.content, None, r.choices[0].finish_reason
            err = None
        except Exception as e:  # counted as a wrong answer, with its message
            text, ttft, finish, err = "", None, None, f"{type(e).__name__}: {e}"
        return {"i": i, "stream": stream, "question": q, "ok": err is None and text == want[q] and bool(finish),
                "latency_s": time.perf_counter() - t0, "ttft_s": ttft, "finish": finish, "error": err,
                "text": text if text != want[q] else None}

    def worker():
        c = client_for(port)
        while True:
            with lock:
                if counter[0] >= requests:  # bounded: exactly `requests` in all
                    return
                i = counter[0]
                counter[0] += 1
            r = one(c, i)
            with lock:
                results.append(r)

    t = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    after = proc_mib(pid)
    ok = sum(r["ok"] for r in results)
    lat = [r["latency_s"] for r in results]
    pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else None  # noqa: E731
    by = {k: [r["latency_s"] for r in results if r["stream"] == s] for k, s in (("streamed", True), ("whole", False))}
    ttfts = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
    res = {"clients": clients, "requests": len(results), "answered_correctly": ok, "max_tokens": n,
           "wall_s": round(wall, 2), "requests_per_s": len(results) / wall,
           "latency_s": {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "max": max(lat)},
           **{f"latency_{k}_s": {"n": len(v), "p50": pct(v, 0.5), "p95": pct(v, 0.95)} for k, v in by.items()},
           "ttft_streamed_s": {"p50": pct(ttfts, 0.5), "p95": pct(ttfts, 0.95)},
           "server_rss_mib_before": before, "server_rss_mib_after": after,
           "rss_growth_mib": after["VmRSS"] - before["VmRSS"],
           "wrong": [r for r in results if not r["ok"]][:10]}
    md = (f"## Load: {clients} concurrent clients, {len(results)} requests (every other one streamed, "
          f"{len(QUESTIONS)} questions, greedy, max_tokens {n})\n\n"
          + md_table(["requests", "correct", "p50 latency s", "p95 latency s", "p50 streamed TTFT s", "req/s",
                      "server VmRSS before MiB", "after MiB", "growth MiB", "VmHWM after MiB"],
                     [[len(results), ok, res["latency_s"]["p50"], res["latency_s"]["p95"], res["ttft_streamed_s"]["p50"],
                       res["requests_per_s"], before["VmRSS"], after["VmRSS"], res["rss_growth_mib"],
                       after["VmHWM"]]])
          + "\n\nCorrect: the reply equals Chat.send's greedy reply to the same question in this process, and has a "
          "finish reason. One model serves its requests one at a time, so the latency is mostly queueing: with "
          f"{clients} clients a request waits for up to {clients - 1} others.\n")
    return res, md
