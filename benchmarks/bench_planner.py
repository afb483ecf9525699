"""Planner estimate vs measured decode tokens/s on `host`: SmolLM2-135M-Instruct at Q8_0 and Q4_K_M (GGUF,
llama.cpp) and 8da4w (.pte, ExecuTorch), with 1 and 2 threads. Goal: the estimate within 25% of the measured speed.

The estimate is targets/'s, for the artifact as it stands (its own tensor types), on the `host` profile
built for that thread count (bandwidth and compute measured by numpy at the start, before any engine runs).
Nothing in the estimator is fitted to these runs. The measured side is Chat.complete() on a fixed story
prompt, greedy, N tokens; every (quant x threads) engine runs in its own worker process, all loaded at once
and interleaved, the order rotating each round; medians. The machine's load (other processes' CPU use) is recorded beside the figures:
on a busy 2-core machine a 2-thread llama.cpp spins at its barriers and slows several-fold, so read the
1-thread rows as the cleaner comparison when the warning is set.

    .venv/bin/python benchmarks/bench_planner.py [--rounds 7] [--tokens 128] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CACHE, PYTHON, ROOT, THREADS, Bench, artifact, cached_convert, md_table,  # noqa: E402
                    median, rotate, summary)

PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
QUANTS = ("q8_0", "q4_k_m")
GOAL = 0.25


def cached_pte(quant: str, fresh: bool = False) -> Path:
    """The default model exported to .pte at `quant` (converters/pte_export), cached like cached_convert. The
    export runs in its own process (the CLI): exporting and then running ExecuTorch programs in one process
    crashed once in libtorch here."""
    import shutil
    import subprocess

    from bench_pte_common import pte_hash  # keyed as bench_pte_common's programs are

    out = CACHE / "convert" / f"default-pte-{quant}-{pte_hash()}"
    if (out / "edgechat.json").exists() and not fresh:
        return artifact(out, quant)
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([PYTHON, "-m", "edgechat.cli", "convert", "-o", str(out), "--format", "pte", "--quant", quant,
                    "--no-eval", "--threads", str(THREADS)], check=True, cwd=ROOT)
    return artifact(out, quant)


def pte_manifest(path: Path) -> dict | None:
    """When and with what the .pte was made (its directory's edgechat.json)."""
    import json

    m = path.parent / "edgechat.json"
    if not m.exists():
        return None
    d = json.loads(m.read_text())
    return {"path": str(path), "created": d.get("created"), "artifact": next(
        (a for a in d.get("artifacts", []) if a.get("file") == path.name), None)}


def worker(path: str, threads: int, tokens: int) -> None:
    """One engine: warm up, then one greedy reply per line read; its stats as a JSON line."""
    import json

    import edgechat

    chat = edgechat.load(path, threads=threads, n_ctx=1024, max_tokens=tokens, power="estimate")
    chat.complete(PROMPT, max_tokens=16)  # page the weights in (the .pte engine's first call loads its kernels)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        chat.reset()
        st = chat.complete(PROMPT).stats
        print(json.dumps({"decode_tok_s": st.decode_tok_s, "prefill_tok_s": st.prefill_tok_s,
                          "prefill_tokens": st.prefill_tokens, "completion_tokens": st.completion_tokens,
                          "cpu_s": st.cpu_s, "decode_s": st.decode_s}), flush=True)


class Worker:
    def __init__(self, path: Path, threads: int, tokens: int):
        import subprocess

        self.p = subprocess.Popen([PYTHON, __file__, "--worker", str(path), "--worker-threads", str(threads),
                                   "--tokens", str(tokens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        self._read()

    def _read(self) -> dict:
        import json

        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with {self.p.wait()}")
        return json.loads(line)

    def ask(self) -> dict:
        self.p.stdin.write("run\n")
        return self._read()

    def quit(self) -> None:
        self.p.stdin.write("quit\n")
        self.p.stdin.close()
        self.p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="wait up to this many seconds for other processes to go quiet before measuring")
    ap.add_argument("--fresh", action="store_true", help="reconvert instead of using benchmarks/.cache")
    ap.add_argument("--no-pte", action="store_true", help="leave out 8da4w (.pte, ExecuTorch)")
    ap.add_argument("--pte", type=Path, help="an existing 8da4w .pte of the default model (default: export, cached)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.worker_threads, args.tokens)
    thread_counts = [int(t) for t in args.threads.split(",")]
    bench = Bench("bench_planner")

    from edgechat.probes.machine_load import LoadMonitor, wait_for_quiet
    from edgechat.app.targeting import get_profile, plan_for

    out = cached_convert(list(QUANTS), fresh=args.fresh)
    paths = {q: artifact(out, q) for q in QUANTS}
    quants = list(QUANTS)
    if not args.no_pte:
        paths["8da4w"] = args.pte or cached_pte("8da4w", args.fresh)
        quants.append("8da4w")
    quiet = wait_for_quiet(args.wait_quiet) if args.wait_quiet else None
    profiles = {t: get_profile("host", threads=t) for t in thread_counts}  # measured before any engine runs
    sides = [(q, t) for t in thread_counts for q in quants]
    # each side in its own process: engines sharing one process (llama.cpp's and ExecuTorch's thread pools, at
    # different thread counts) halved the 2-thread speed here
    chats = {(q, t): Worker(paths[q], t, args.tokens) for q, t in sides}
    runs = {s: [] for s in sides}
    with LoadMonitor() as load:
        for r in range(args.rounds):
            for s in rotate(sides, r):
                runs[s].append(chats[s].ask())
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{q}/{t}t {runs[(q, t)][-1]['decode_tok_s']:.1f}" for q, t in sides) + " tok/s", file=sys.stderr)
    machine_load = load.summary()
    rows, results = [], []
    for q, t in sides:
        xs = runs[(q, t)]
        prompt_tokens = xs[0]["prefill_tokens"]
        gen = int(median(x["completion_tokens"] for x in xs))
        if q == "8da4w":  # a .pte: planned from the source's shape at the exporter's default layout
            p = plan_for(None, "host", formats=["pte"], quants=[q], prompt_tokens=prompt_tokens, gen_tokens=gen,
                         n_ctx=1024, threads=t)
        else:  # a GGUF: planned as it stands, its own tensor types
            p = plan_for(paths[q], "host", as_is=True, prompt_tokens=prompt_tokens, gen_tokens=gen, n_ctx=1024,
                         threads=t)
        est, est_pp = p.chosen.decode_tok_s, p.chosen.prefill_tok_s
        meas, meas_pp = median(x["decode_tok_s"] for x in xs), median(x["prefill_tok_s"] for x in xs)
        # load-robust cross-check at 1 thread: tokens per second of the process's own CPU time
        cpu_rate = median(x["completion_tokens"] / x["cpu_s"] for x in xs) if t == 1 else None
        err = est / meas - 1
        results.append({"quant": q, "threads": t, "artifact": paths[q].name, "bytes": paths[q].stat().st_size,
                        "prompt_tokens": prompt_tokens, "generated_tokens": gen,
                        "estimated_decode_tok_s": est, "measured_decode_tok_s": meas, "error": err,
                        "within_goal": abs(err) <= GOAL, "estimated_prefill_tok_s": est_pp,
                        "measured_prefill_tok_s": meas_pp, "measured": summary([x["decode_tok_s"] for x in xs]),
                        "tokens_per_cpu_second": cpu_rate,
                        "error_vs_cpu_time": None if cpu_rate is None else est / cpu_rate - 1,
                        "decode_ms_per_token_estimated": 1e3 / est,
                        "slots": [{"name": s.name, "decode_ms": s.decode_ms} for s in p.chosen.slots[:2]],
                        "runs": xs})
        rows.append([q, t, est, meas, f"{100 * err:+.1f}%", "yes" if abs(err) <= GOAL else "no",
                     "-" if cpu_rate is None else f"{cpu_rate:.1f} ({100 * (est / cpu_rate - 1):+.1f}%)", est_pp, meas_pp])
    prof = {t: {"bandwidth_gbs": p.cpu.bandwidth_gbs, "fp32_gflops": p.cpu.fp32_gflops, "int8_gops": p.cpu.int8_gops,
                "op_overhead_us": p.cpu.op_overhead_us, "token_overhead_us": p.cpu.token_overhead_us,
                "measured": p.measured} for t, p in profiles.items()}
    met = [r for r in results if r["within_goal"]]
    doc = {"prompt": PROMPT, "tokens": args.tokens, "rounds": args.rounds, "host_profiles": prof,
           "machine_load": machine_load, "waited_for_quiet": quiet, "goal": f"|estimate / measured - 1| <= {GOAL}",
           "goal_met": len(met) == len(results), "results": results,
           "not_run": {"8da4w": "left out (--no-pte)"} if args.no_pte else {},
           "pte_manifest": None if args.no_pte else pte_manifest(paths["8da4w"])}
    md = ("SmolLM2-135M-Instruct on `host` (GGUF: llama.cpp; .pte: ExecuTorch); greedy continuation of a "
          f"{results[0]['prompt_tokens']}-token prompt, "
          f"{args.tokens} tokens, {args.rounds} interleaved rounds (+1 warm-up), medians. Estimates from targets/ for "
          "each file as it stands, on the host profile measured for that thread count:\n\n"
          + md_table(["threads", "bandwidth GB/s (numpy)", "fp32 GFLOP/s (numpy)", "int8 GOP/s (derived)"],
                     [[t, v["bandwidth_gbs"], v["fp32_gflops"], v["int8_gops"]] for t, v in prof.items()])
          + "\n\n" + md_table(["quant", "threads", "estimated tg t/s", "measured tg t/s", "estimate error",
                               f"within {GOAL:.0%}", "tokens per CPU-second (error)", "estimated pp t/s",
                               "measured pp t/s"], rows)
          + "\n\nTokens per CPU-second (1 thread): generated tokens over the process's CPU time for the reply, a "
            "cross-check that other processes sharing the core barely move; the goal is judged on wall-clock tg t/s."
          + f"\n\nGoal: decode estimate within {GOAL:.0%} of the measured speed: **{len(met)}/{len(results)} met**."
          + f"\n\nOther processes used {machine_load['other_cpu_cores_mean']} cores on average during the runs "
            f"(max {machine_load['other_cpu_cores_max']}); load average {machine_load['loadavg_start']} -> "
            f"{machine_load['loadavg_end']}."
          + (f"\n\n**Warning:** {machine_load['warning']}." if machine_load["warning"] else "")
          + ("\n\n8da4w (ExecuTorch): left out (--no-pte).\n" if args.no_pte else
             "\n\n8da4w is the .pte from converters/pte_export (ExecuTorch, XNNPACK), planned from the source's shape.\n"))
    bench.write(doc, md)
    for c in chats.values():
        c.quit()


if __name__ == "__main__":
    main()
