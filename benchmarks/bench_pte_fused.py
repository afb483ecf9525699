"""Fused vs unfused ExecuTorch export of the same model and quant (SmolLM2-135M-Instruct, 8da4w, linears on
XNNPACK, static KV cache of 1024 positions), decode and prefill tokens/s through edgechat's PTE engine:

- fused: llama::update_cache + llama::custom_sdpa, q/k/v as one matmul, gate/up as one matmul (the default);
- fused ops, separate projections: the same fused attention ops, q/k/v and gate/up as separate matmuls
  (measures the projection fusion alone);
- unfused: edgechat's plain attention (index_copy_ into the cache, repeat_interleave for GQA, masked SDPA
  over the whole cache), separate projections.

One process holds all three programs; each round runs them one after another in a rotated order (prefill
of the same prompt, then greedy decode), and the figures are medians over rounds.

    .venv/bin/python benchmarks/bench_pte_fused.py [--rounds 5] [--decode 64]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pte_common import MAX_SEQ_LEN, cached_pte, export_info  # noqa: E402
from common import DATA, THREADS, Bench, cpu_busy_cores, md_table, median, ratio, rotate  # noqa: E402

VARIANTS = {
    "fused": dict(fused_ops=True, fuse_qkv=True, fuse_mlp=True),
    "fused ops, separate projections": dict(fused_ops=True, fuse_qkv=False, fuse_mlp=False),
    "unfused": dict(fused_ops=False, fuse_qkv=False, fuse_mlp=False),
}
GOAL = 2.0  # fused / unfused decode tokens/s


def prompt_ids(engine, n: int) -> list[int]:
    text = (DATA / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8")[:20000] if DATA.exists() else \
        "The quick brown fox jumps over the lazy dog. " * 200
    return engine.tokenize(text, add_bos=engine.add_bos)[:n]


def run_once(engine, ids: list[int], n_decode: int) -> dict:
    engine.reset()
    t = time.perf_counter()
    logits = engine.forward(ids, 0)
    prefill_s = time.perf_counter() - t
    steps = []
    pos = len(ids)
    for _ in range(n_decode):
        tok = int(np.argmax(logits))
        t = time.perf_counter()
        logits = engine.forward([tok], pos)
        steps.append(time.perf_counter() - t)
        pos += 1
    return {"prefill_tok_s": len(ids) / prefill_s, "decode_tok_s": len(steps) / sum(steps),
            "step_ms_median": 1e3 * float(np.median(steps))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens (prefill)")
    ap.add_argument("--decode", type=int, default=64, help="greedy decode steps per round")
    ap.add_argument("--fresh", action="store_true", help="re-export instead of using benchmarks/.cache")
    args = ap.parse_args()
    bench = Bench("bench_pte_fused")

    from runtimes.pte_engine import PteEngine

    paths = {name: cached_pte("8da4w", fresh=args.fresh, **opts) for name, opts in VARIANTS.items()}
    engines = {name: PteEngine(p, threads=THREADS) for name, p in paths.items()}
    ids = prompt_ids(next(iter(engines.values())), args.prompt)
    for e in engines.values():  # warm-up: first calls allocate and pack weights
        run_once(e, ids[:16], 4)
    runs = {name: [] for name in engines}
    busy = []
    for r in range(args.rounds):
        busy.append(cpu_busy_cores(0.5))
        for name in rotate(list(engines), r):
            runs[name].append(run_once(engines[name], ids, args.decode))
        print(f"[bench_pte_fused] round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {runs[n][-1]['decode_tok_s']:.1f}" for n in engines), file=sys.stderr)

    table, results = [], {}
    for name in engines:
        dec = median(x["decode_tok_s"] for x in runs[name])
        pre = median(x["prefill_tok_s"] for x in runs[name])
        results[name] = {"export": export_info(paths[name]), "decode_tok_s_median": dec, "prefill_tok_s_median": pre,
                         "step_ms_median": median(x["step_ms_median"] for x in runs[name]), "runs": runs[name]}
    base = results["unfused"]
    for name, res in results.items():
        table.append([name, round(res["decode_tok_s_median"], 1), round(res["prefill_tok_s_median"], 1),
                      round(res["step_ms_median"], 2), ratio(res["decode_tok_s_median"], base["decode_tok_s_median"]),
                      ratio(res["prefill_tok_s_median"], base["prefill_tok_s_median"]),
                      round(res["export"]["bytes"] / 2**20, 1)])
    fused_ratio = ratio(results["fused"]["decode_tok_s_median"], base["decode_tok_s_median"])
    proj_ratio = ratio(results["fused"]["decode_tok_s_median"],
                       results["fused ops, separate projections"]["decode_tok_s_median"])
    proj_prefill = ratio(results["fused"]["prefill_tok_s_median"],
                         results["fused ops, separate projections"]["prefill_tok_s_median"])
    md = (f"SmolLM2-135M-Instruct, 8da4w (group 32, 4-bit embedding), max_seq_len {MAX_SEQ_LEN}, {THREADS} threads, "
          f"{args.rounds} interleaved rounds of a {len(ids)}-token prefill and {args.decode} greedy decode steps "
          f"(WikiText-2 text); medians. Other processes kept {median(busy)} cores busy (median, sampled before "
          f"each round).\n\n"
          + md_table(["program", "decode tok/s", "prefill tok/s", "decode step ms", "decode vs unfused",
                      "prefill vs unfused", "MiB"], table)
          + "\n\n" + md_table(["goal", "value", "met"], [
              [f"fused / unfused decode tok/s >= {GOAL}", fused_ratio, "yes" if fused_ratio and fused_ratio >= GOAL else "NO"]])
          + f"\n\nProjection fusion alone (fused ops, one q/k/v and one gate/up matmul vs separate ones): decode "
          f"x{proj_ratio:.3f}, prefill x{proj_prefill:.3f}.\n")
    bench.write({"threads": THREADS, "rounds": args.rounds, "prompt_tokens": len(ids), "decode_steps": args.decode,
                 "max_seq_len": MAX_SEQ_LEN, "busy_cores_per_round": busy, "results": results,
                 "fused_vs_unfused_decode": fused_ratio, "projection_fusion_decode": proj_ratio,
                 "projection_fusion_prefill": proj_prefill, "goal": {"fused_vs_unfused_decode": GOAL}}, md)
    print(md)


if __name__ == "__main__":
    main()
