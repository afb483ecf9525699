"""Probe overhead: decode tokens/s of one Chat with its probes on (per-token timestamps, TTFT/ITL stats, peak
RSS, the energy meter) vs off (Chat.probes = False), same engine, rounds alternating with the order rotating.
Goal: under 1% slower with probes on.

Decode speed is timed by one external stopwatch for both sides (generated tokens after the first over the
time from the first streamed piece to the last), so the probes' own figures are not used to judge them.
A busy machine makes single rounds noisy; the microbenchmark below bounds the cost from first principles:
the per-token probe call, and the per-reply meter and statistics, against the measured time per token.

    .venv/bin/python benchmarks/bench_probe_overhead.py [--rounds 15] [--tokens 128] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Bench, artifact, cached_convert, md_table, median, rotate, summary  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
GOAL = 0.01


def one_reply(chat, probes: bool, tokens: int) -> dict:
    chat.probes = probes
    chat.reset()
    stamps = []
    t0 = time.perf_counter()
    for _ in chat.complete(PROMPT, stream=True, max_tokens=tokens):
        stamps.append(time.perf_counter())
    total = time.perf_counter() - t0
    n = len(chat.last_reply.token_ids)
    return {"decode_tok_s": (n - 1) / (stamps[-1] - stamps[0]), "end_to_end_tok_s": n / total, "tokens": n,
            "pieces": len(stamps), "stats_decode_tok_s": chat.last_reply.stats.decode_tok_s}


def micro(chat, tokens: int) -> dict:
    """Costs of the probe code itself, in isolation."""
    from edgechat.probes.latency import ReplyTimer, Stats

    timer = ReplyTimer()
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        timer.token()
    token_ns = (time.perf_counter() - t) / n * 1e9
    meter, reps = chat.meter, 2000
    t = time.perf_counter()
    for _ in range(reps):
        meter.end(meter.begin())
    meter_us = (time.perf_counter() - t) / reps * 1e6
    timers = []
    for _ in range(200):
        tm = ReplyTimer()
        tm.marks = [i * 0.01 for i in range(tokens)]
        tm.t_first = 0.0
        timers.append(tm)
    t = time.perf_counter()
    for tm in timers:
        tm.finish(Stats(prefill_tokens=10), 0.0, 0.001)
    finish_us = (time.perf_counter() - t) / len(timers) * 1e6
    return {"timer_token_ns": token_ns, "meter_begin_end_us": meter_us, "stats_finish_us": finish_us,
            "meter": meter.source}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="engine threads (default 1: the probes' cost does not depend on them, and one thread is "
                         "far less disturbed by other processes on a 2-core machine)")
    ap.add_argument("--quant", default="q4_k_m")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    bench = Bench("bench_probe_overhead")

    import edgechat
    from edgechat.probes.machine_load import LoadMonitor

    path = artifact(cached_convert([args.quant], fresh=args.fresh), args.quant)
    chat = edgechat.load(path, threads=args.threads, n_ctx=1024, max_tokens=args.tokens)
    for probes in (True, False):  # warm-up
        one_reply(chat, probes, 16)
    runs = {True: [], False: []}
    with LoadMonitor() as load:
        for r in range(args.rounds):
            for probes in rotate([True, False], r):
                runs[probes].append(one_reply(chat, probes, args.tokens))
            print(f"round {r + 1}/{args.rounds}: on {runs[True][-1]['decode_tok_s']:.1f}, off "
                  f"{runs[False][-1]['decode_tok_s']:.1f} tok/s", file=sys.stderr)
    machine_load = load.summary()
    m = micro(chat, args.tokens)
    ratios = [a["decode_tok_s"] / b["decode_tok_s"] for a, b in zip(runs[True], runs[False])]
    e2e = [a["end_to_end_tok_s"] / b["end_to_end_tok_s"] for a, b in zip(runs[True], runs[False])]
    on, off = median(x["decode_tok_s"] for x in runs[True]), median(x["decode_tok_s"] for x in runs[False])
    overhead = 1 - median(ratios)
    per_token_s = 1 / off
    bound = (m["timer_token_ns"] * 1e-9 + (m["meter_begin_end_us"] + m["stats_finish_us"]) * 1e-6 / args.tokens) \
        / per_token_s
    results = {
        "model": path.name, "threads": args.threads, "tokens": args.tokens, "rounds": args.rounds,
        "decode_tok_s_on": summary([x["decode_tok_s"] for x in runs[True]]),
        "decode_tok_s_off": summary([x["decode_tok_s"] for x in runs[False]]),
        "ratio_on_off": summary(ratios), "end_to_end_ratio_on_off": summary(e2e),
        "overhead_median_of_round_ratios": overhead, "microbenchmark": m, "overhead_bound_from_micro": bound,
        "machine_load": machine_load, "goal": f"probes on at most {GOAL:.0%} slower",
        "goal_met_measured": overhead < GOAL, "goal_met_bound": bound < GOAL,
        "runs": {"on": runs[True], "off": runs[False]},
    }
    md = (f"`{path.name}`, {args.threads} thread(s), greedy continuation, {args.tokens} tokens, {args.rounds} rounds "
          "alternating probes on/off (order rotating), one external stopwatch.\n\n"
          + md_table(["probes", "decode tok/s (median)", "min", "max"],
                     [["on", on, results["decode_tok_s_on"]["min"], results["decode_tok_s_on"]["max"]],
                      ["off", off, results["decode_tok_s_off"]["min"], results["decode_tok_s_off"]["max"]]])
          + "\n\n" + md_table(["measure", "value"], [
              ["on/off decode ratio, median of rounds", median(ratios)],
              ["overhead (1 - ratio)", f"{100 * overhead:+.2f}%"],
              ["on/off end-to-end ratio, median", median(e2e)],
              ["ReplyTimer.token() per token", f"{m['timer_token_ns']:.0f} ns"],
              ["energy meter begin+end per reply", f"{m['meter_begin_end_us']:.1f} us ({m['meter']})"],
              ["latency statistics per reply", f"{m['stats_finish_us']:.1f} us"],
              ["bound: probe time / time per token", f"{100 * bound:.4f}%"]])
          + f"\n\nGoal: probes cost under {GOAL:.0%} of decode speed: bound from the microbenchmark "
            f"**{'met' if bound < GOAL else 'NOT met'}** ({100 * bound:.4f}%); interleaved measurement "
            f"{'met' if overhead < GOAL else 'not met'} ({100 * overhead:+.2f}%, noise included)."
          + f"\n\nOther processes used {machine_load['other_cpu_cores_mean']} cores on average (max "
            f"{machine_load['other_cpu_cores_max']})." + (f"\n\n**Warning:** {machine_load['warning']}."
                                                          if machine_load["warning"] else "") + "\n")
    bench.write(results, md)
    chat.engine.close()


if __name__ == "__main__":
    main()
