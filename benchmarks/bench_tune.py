"""The `edgechat tune` frontier on SmolLM2-135M-Instruct for `host` and for `rpi5-8gb`: the candidates are built and
measured once (quality vs the source, greedy match, decode speed here with the artifacts interleaved in their own
processes), then each target's frontier is drawn from them (host: the speed measured here; rpi5-8gb: the planner's
estimate), with the candidate `tune` would choose for the constraint. Writes bench_tune.json/.md and one
frontier chart + table per target (bench_tune-<target>.png/.md) into benchmarks/results/.

    nice -n 10 .venv/bin/python benchmarks/bench_tune.py [--budget-minutes 2] [--kept 0.9] [--max-kld 0.05]
        [--quant q8_0 ...] [--bpw 5.0 ...] [--imatrix] [--format pte [--share-tied] [--awq]] [--target T ...] [--name NAME]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, Bench, loadavg, md_table  # noqa: E402

TARGETS = ["host", "rpi5-8gb"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--name", default="bench_tune", help="results file stem")
    ap.add_argument("--budget-minutes", type=float, default=2.0, help="distillation wall time per student")
    ap.add_argument("--kept", type=float, action="append", help="students' kept fractions (default: the budget rule's)")
    ap.add_argument("--max-kld", type=float, default=0.05)
    ap.add_argument("--target", action="append", help=f"frontiers to draw (default: {', '.join(TARGETS)})")
    ap.add_argument("--format", default="gguf", choices=["gguf", "pte"], help="the candidates' format")
    ap.add_argument("--share-tied", action="store_true", help="pte: the --bpw plans hold the tied matrix once")
    ap.add_argument("--awq", action="store_true", help="pte: activation-aware scales")
    ap.add_argument("--quant", action="append", help="quant schemes (default: every scheme of the format edgechat makes)")
    # the per-tensor sensitivity pass of the --bpw plans and the importance matrix took 1108 s and 416 s on SmolLM2
    # here (bench_quality_per_byte.json): past this benchmark's quarter hour, so both are asked for explicitly
    ap.add_argument("--bpw", type=float, action="append", default=[], help="--bpw plans (default: none)")
    ap.add_argument("--imatrix", action="store_true", help="quantize with an importance matrix")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from edgechat.app import frontier
    from edgechat.app.tune import TuneOptions, check_options, for_target, frontier_notes, measure, write_frontier
    from edgechat.core.sources import load_model
    from edgechat.reports.progress import Steps

    bench = Bench(args.name)
    opts = TuneOptions(max_kld=args.max_kld, budget_minutes=args.budget_minutes, kept=args.kept,
                       prompts=args.prompts, runs=args.runs, threads=args.threads, bpw=args.bpw,
                       imatrix=args.imatrix, format=args.format, share_tied=args.share_tied, awq=args.awq)
    if args.quant:
        opts.quants = args.quant
    fmt = check_options(opts)
    teacher = load_model(args.source)
    with tempfile.TemporaryDirectory(prefix="bench_tune-") as work, Steps() as steps:
        targets = args.target or TARGETS
        rows, budget, machine = measure(args.source, teacher, fmt, targets, opts, Path(work), steps)
        per_target, sections = {}, []
        for target in targets:
            trows, best = for_target(rows, target, "max_kld", args.max_kld)
            title = f"tune {teacher.name} for {target}: {len(trows)} candidates, --max-kld {args.max_kld:g}"
            notes = frontier_notes(replace(opts, target=target), "max_kld", args.max_kld, best, budget, machine)
            write_frontier(trows, RESULTS, f"{args.name}-{target}", title, notes, "max_kld", args.max_kld)
            per_target[target] = {"chosen": best["name"] if best else None,
                                  "frontier": [{k: v for k, v in r.items() if k not in ("dir", "manifest")} for r in trows]}
            sections.append(f"## {target}: chosen {best['name'] if best else 'none'}\n\n"
                            f"![frontier]({args.name}-{target}.png)\n\n"
                            + md_table(frontier.COLUMNS, frontier.table_rows(trows)) + "\n")
    md = ("Candidates built and measured once; quality vs the fp32 source on 20 held-out chit-chat dialogues; "
          f"match: share of {opts.prompts} held-out prompts whose greedy {opts.reply_tokens}-token reply is the "
          f"source's; speed: decode tok/s measured here ({machine['threads']} threads, {opts.runs} interleaved "
          f"rounds, medians; load average {machine['load_avg']} -> {machine['load_avg_after']}) and the planner's "
          "estimate for the target.\n\n"
          + (f"Students: {budget['steps']} steps each ({budget['minutes']:g} min at {budget['step_s']:.3g} s a step on "
             f"{budget['device']}, {budget['tokens_per_param']:.3g} tokens per parameter: the budget rule offers "
             f"kept fractions {budget['kept_fractions']}).\n\n" if budget else "")
          + "\n".join(sections))
    path = bench.write({"options": {k: v for k, v in vars(opts).items()}, "budget": budget, "machine_load": machine,
                        "targets": per_target, "loadavg_after_measure": loadavg()}, md)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
