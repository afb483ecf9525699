"""Decode speed of SmolLM2-135M: Q4_K_M and Q8_0 GGUF (llama.cpp engine) vs the torch fp32 reference engine.

Each engine lives in its own worker subprocess (this script re-invoked with --worker), so its peak RSS is its
own; the parent drives the workers, one at a time, so the compared engines see the same machine load. Every
generation is one Chat.send() of the same prompt, greedy, max_tokens=N, after chat.reset(). Each round:
  sequential   each engine generates its reply alone (order rotated per round): edgechat's Stats.decode_tok_s
  interleaved  the three replies advance in turn, --chunk tokens at a time (order rotated per chunk); each
               token step is timed inside its worker: decode tok/s = (N-1) / (sum of the step times after the
               first). (Chunks, not single tokens: an engine's threads spin a moment after their work, which
               would slow whichever engine runs next.)
Before each round the script waits (up to --quiet-timeout s) until other processes keep fewer than --max-busy
cores busy, and records what it saw; the headline uses the quiet rounds when there are 3 or more.
Reports decode tokens/s, ratios to torch (medians of per-round ratios), model bytes, peak RSS, and decode
bandwidth (model bytes x tokens/s) next to the machine's measured memory-copy bandwidth.

    .venv/bin/python benchmarks/bench_speed_vs_torch.py [--rounds 5] [--tokens 64] [--chunk 16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (THREADS, Bench, add_interleave_args, artifact, cached_convert, cpu_busy_cores, md_table,  # noqa: E402
                    median, memcpy_bandwidth, ratio, rotate, rss_mb, summary, wait_quiet)

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
N_CTX = 2048
GOAL = 4.0  # Q4_K_M decode >= 4x torch fp32


# -- worker -------------------------------------------------------------------------------------------
def worker(kind: str, path: str | None, tokens: int) -> None:
    import edgechat

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    t = time.perf_counter()
    if kind == "torch":
        chat = edgechat.load(None, engine="torch", n_ctx=N_CTX, threads=THREADS, max_tokens=tokens, temperature=0.0)
    else:
        chat = edgechat.load(path, n_ctx=N_CTX, threads=THREADS, max_tokens=tokens, temperature=0.0)
    say({"ready": True, "load_s": time.perf_counter() - t, "engine": chat.engine.name,
         "model_bytes": chat.engine.model_bytes, **{f"after_load_{k}": v for k, v in rss_mb().items()}})
    gen = None
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "start":  # interleaved mode: prefill + first token now, then one token per "step"
            chat.reset()
            t = time.perf_counter()
            gen = chat.send(PROMPT, stream=True)
            next(gen)
            say({"t": time.perf_counter() - t})
        elif cmd.startswith("steps"):
            ts = []
            for _ in range(int(cmd.split()[1])):
                t = time.perf_counter()
                next(gen)
                ts.append(time.perf_counter() - t)
            say({"t": ts})
        elif cmd == "finish":
            for _ in gen:
                pass
            gen = None
            say({"ids": chat.last_reply.token_ids})
        else:  # "run": one whole reply
            chat.reset()
            stamps = []
            t0 = time.perf_counter()
            for _ in chat.send(PROMPT, stream=True):
                stamps.append(time.perf_counter())
            r = chat.last_reply
            s = r.stats
            say({"ids": r.token_ids, "completion_tokens": s.completion_tokens, "stop": s.stop_reason,
                 "decode_tok_s": s.decode_tok_s, "ext_decode_tok_s": (len(r.token_ids) - 1) / (stamps[-1] - stamps[0]),
                 "prefill_tok_s": s.prefill_tok_s, "ttft_s": s.ttft_s, "itl_p50_ms": s.itl_p50_ms,
                 "total_s": time.perf_counter() - t0, **rss_mb()})
    say({"done": True, **rss_mb()})


class Worker:
    def __init__(self, kind: str, path: Path | None, tokens: int):
        cmd = [sys.executable, __file__, "--worker", kind, "--tokens", str(tokens)] + (["--path", str(path)] if path else [])
        self.kind = kind
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.kind} exited with {self.p.wait()}")
        return json.loads(line)

    def ask(self, cmd: str = "run") -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self._read()

    run = ask

    def quit(self) -> dict:
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        out = self._read()
        self.p.wait(timeout=60)
        return out


# -- parent -------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_interleave_args(ap, rounds=5, tokens=64)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.path, args.tokens)

    bench = Bench("bench_speed_vs_torch")
    out = cached_convert(["q4_k_m", "q8_0"], fresh=args.fresh)
    paths = {"q4_k_m": artifact(out, "q4_k_m"), "q8_0": artifact(out, "q8_0"), "torch": None}
    bw_before = memcpy_bandwidth()
    # start one at a time so that loading (torch dequantizes the Q4_1 source) does not overlap
    workers = {k: Worker(k if k == "torch" else "gguf", p, args.tokens) for k, p in paths.items()}
    for w in workers.values():
        w.run()  # warm-up
    runs = {k: [] for k in workers}
    inter = {k: [] for k in workers}
    names = list(workers)
    load = []
    for r in range(args.rounds):
        q = wait_quiet(args.max_busy, args.quiet_timeout)
        for k in rotate(names, r):
            runs[k].append(workers[k].run())
        steps = {k: [workers[k].ask("start")["t"]] for k in rotate(names, r)}
        done, i = 1, 0
        while done < args.tokens:
            m = min(args.chunk, args.tokens - done)
            for k in rotate(names, r + i):
                steps[k] += workers[k].ask(f"steps {m}")["t"]
            done, i = done + m, i + 1
        for k in names:
            dec = sorted(steps[k][1:])
            inter[k].append({"ids": workers[k].ask("finish")["ids"], "ttft_s": steps[k][0],
                             "step_decode_tok_s": len(dec) / sum(dec), "step_p50_ms": dec[len(dec) // 2] * 1e3})
        q["busy_cores_after"] = cpu_busy_cores(1.0)
        q["quiet"] = q["quiet"] and q["busy_cores_after"] is not None and q["busy_cores_after"] <= args.max_busy
        load.append(q)
        print(f"round {r + 1}/{args.rounds} (others busy {q['busy_cores_before']}/{q['busy_cores_after']} cores): sequential " + ", ".join(f"{k} {runs[k][-1]['decode_tok_s']:.1f}" for k in names)
              + " | interleaved " + ", ".join(f"{k} {inter[k][-1]['step_decode_tok_s']:.1f}" for k in names) + " tok/s",
              file=sys.stderr)
    final = {k: w.quit() for k, w in workers.items()}
    bw_after = memcpy_bandwidth()
    copy_gbs = median([bw_before["copy_gb_s"], bw_after["copy_gb_s"]])

    quiet = [i for i, q in enumerate(load) if q["quiet"]]
    sel = quiet if len(quiet) >= 3 else list(range(args.rounds))
    headline_from = f"{len(quiet)} quiet rounds" if len(quiet) >= 3 else "all rounds (fewer than 3 quiet rounds)"
    all_runs, all_inter = runs, inter
    runs = {k: [v[i] for i in sel] for k, v in all_runs.items()}
    inter = {k: [v[i] for i in sel] for k, v in all_inter.items()}
    rows, per = [], {}
    for k, w in workers.items():
        v = runs[k]
        model_bytes = w.info["model_bytes"]
        tok_s = median(x["step_decode_tok_s"] for x in inter[k])  # interleaved
        per[k] = {
            "engine": w.info["engine"],
            "file": paths[k].name if paths[k] else "fp32 parameters (embedded SmolLM2-135M-Instruct, dequantized)",
            "model_bytes": model_bytes,
            "decode_tok_s": summary([x["decode_tok_s"] for x in v]),
            "ext_decode_tok_s": summary([x["ext_decode_tok_s"] for x in v]),
            "prefill_tok_s": median(x["prefill_tok_s"] for x in v),
            "ttft_s": median(x["ttft_s"] for x in v),
            "itl_p50_ms": median(x["itl_p50_ms"] for x in v),
            "completion_tokens": sorted({x["completion_tokens"] for x in v}),
            "stop": sorted({x["stop"] for x in v}),
            "load_s": w.info["load_s"],
            "rss_after_load_mb": w.info["after_load_rss_mb"],
            "peak_rss_mb": final[k]["peak_rss_mb"],
            "decode_bandwidth_gb_s": model_bytes * tok_s / 1e9,
            "decode_bandwidth_vs_copy": model_bytes * tok_s / 1e9 / copy_gbs,
            "decode_bandwidth_gb_s_sequential": model_bytes * median(x["decode_tok_s"] for x in v) / 1e9,
            "token_ids": v[0]["ids"],
        }
    for k in per:  # per-round ratios to torch
        per[k]["interleaved_decode_tok_s"] = summary([x["step_decode_tok_s"] for x in inter[k]])
        per[k]["interleaved_step_p50_ms"] = median(x["step_p50_ms"] for x in inter[k])
        per[k]["interleaved_speedup_vs_torch"] = summary([a["step_decode_tok_s"] / b["step_decode_tok_s"]
                                                          for a, b in zip(inter[k], inter["torch"])])
        per[k]["interleaved_p50_step_speedup_vs_torch"] = summary([b["step_p50_ms"] / a["step_p50_ms"]
                                                                   for a, b in zip(inter[k], inter["torch"])])
        per[k]["sequential_p50_step_speedup_vs_torch"] = summary([b["itl_p50_ms"] / a["itl_p50_ms"]
                                                                  for a, b in zip(runs[k], runs["torch"])])
        per[k]["interleaved_same_ids_as_sequential"] = all(x["ids"] == per[k]["token_ids"] for x in inter[k])
        per[k]["speedup_vs_torch"] = summary([a["decode_tok_s"] / b["decode_tok_s"] for a, b in zip(runs[k], runs["torch"])])
        per[k]["ext_speedup_vs_torch"] = summary([a["ext_decode_tok_s"] / b["ext_decode_tok_s"]
                                                  for a, b in zip(runs[k], runs["torch"])])
        ids, ref = per[k]["token_ids"], per["torch"]["token_ids"]
        per[k]["same_prefix_as_torch"] = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
        rows.append([k, per[k]["engine"], model_bytes_mib(per[k]["model_bytes"]),
                     per[k]["interleaved_decode_tok_s"]["median"], per[k]["interleaved_speedup_vs_torch"]["median"],
                     per[k]["decode_tok_s"]["median"], per[k]["speedup_vs_torch"]["median"],
                     per[k]["prefill_tok_s"], per[k]["peak_rss_mb"], per[k]["decode_bandwidth_gb_s"],
                     per[k]["decode_bandwidth_vs_copy"]])
    speedup = per["q4_k_m"]["interleaved_speedup_vs_torch"]["median"]
    seq_speedup = per["q4_k_m"]["speedup_vs_torch"]["median"]
    p50_speedup = per["q4_k_m"]["interleaved_p50_step_speedup_vs_torch"]["median"]
    results = {
        "prompt": PROMPT, "tokens": args.tokens, "rounds": args.rounds, "n_ctx": N_CTX, "threads": THREADS,
        "memcpy_bandwidth": {"before": bw_before, "after": bw_after, "copy_gb_s_median": copy_gbs},
        "engines": per,
        "goal": f"Q4_K_M decode tokens/s >= {GOAL} x torch fp32",
        "goal_met": speedup is not None and speedup >= GOAL,
        "goal_met_sequential": seq_speedup is not None and seq_speedup >= GOAL,
        "goal_met_p50_step": p50_speedup is not None and p50_speedup >= GOAL,
        "ratio_of_medians": {k: ratio(per[k]["decode_tok_s"]["median"], per["torch"]["decode_tok_s"]["median"]) for k in per},
        "machine_load_per_round": load, "quiet_rounds": len(quiet), "max_busy": args.max_busy, "chunk": args.chunk,
        "medians_from": headline_from,
        "runs": {"sequential": {k: [{m: x for m, x in d.items() if m != "ids"} for d in v] for k, v in all_runs.items()},
                 "interleaved": {k: [{m: x for m, x in d.items() if m != "ids"} for d in v] for k, v in all_inter.items()}},
    }
    md = (f"SmolLM2-135M-Instruct, prompt through the chat template, greedy, {args.tokens} new tokens, {THREADS} threads, "
          f"n_ctx={N_CTX}; {args.rounds} rounds (+1 warm-up), medians over {headline_from}; each engine in its own "
          f"worker process. Interleaved: the three replies advance in turn, {args.chunk} tokens at a time, each token "
          f"step timed alone; sequential: each reply "
          f"alone, edgechat's Stats.decode_tok_s. Speedup = median of per-round ratios to torch. Decode bandwidth = "
          f"model bytes x decode tok/s (interleaved); machine memory copy (numpy, {bw_before['array_mib']} MiB, "
          f"1 thread): {copy_gbs:.2f} GB/s copied (= {2 * copy_gbs:.2f} GB/s read+write).\n\n"
          + md_table(["engine", "runtime", "model MiB", "decode tok/s (interleaved)", "speedup vs torch (interleaved)",
                      "decode tok/s (sequential, Stats)", "speedup vs torch (sequential)", "prefill tok/s",
                      "peak RSS MiB", "decode GB/s", "decode GB/s / copy GB/s"], rows)
          + f"\n\nGoal: Q4_K_M decode >= {GOAL}x torch fp32: **{'met' if results['goal_met'] else 'NOT met'}** "
            f"(interleaved: median per-round speedup {speedup:.2f}x, min "
            f"{per['q4_k_m']['interleaved_speedup_vs_torch']['min']:.2f}, max "
            f"{per['q4_k_m']['interleaved_speedup_vs_torch']['max']:.2f}; sequential: {seq_speedup:.2f}x; from the "
            f"median token step (robust to stalls caused by other processes): interleaved "
            f"{p50_speedup:.2f}x, sequential {per['q4_k_m']['sequential_p50_step_speedup_vs_torch']['median']:.2f}x).\n\n"
          + md_table(["engine", "step p50 ms (interleaved)", "ITL p50 ms (sequential)", "p50-step speedup vs torch (interleaved)",
                      "p50-step speedup vs torch (sequential)"],
                     [[k, per[k]["interleaved_step_p50_ms"], median(x["itl_p50_ms"] for x in runs[k]),
                       per[k]["interleaved_p50_step_speedup_vs_torch"]["median"],
                       per[k]["sequential_p50_step_speedup_vs_torch"]["median"]] for k in per]) + "\n\n"
            f"Peak RSS is each worker's VmHWM (llama.cpp maps the GGUF: the mapped weights count once touched; the "
            f"torch worker's peak includes dequantizing the Q4_1 source at load). Greedy tokens agree with torch "
            f"for the first {per['q8_0']['same_prefix_as_torch']} (Q8_0) / {per['q4_k_m']['same_prefix_as_torch']} "
            f"(Q4_K_M) of {args.tokens} tokens.\n\n"
            f"Other processes' load per round (cores busy, before/after; {args.max_busy} or less = quiet): "
            + ", ".join(f"{q['busy_cores_before']}/{q['busy_cores_after']}" for q in load) + ".\n")
    bench.write(results, md)


def model_bytes_mib(b: int) -> float:
    return b / 2**20


if __name__ == "__main__":
    main()
