"""`edgechat tune`: the speed-quality frontier of a SOURCE's candidates, and the best one that meets a constraint."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgechat.core.errors import GateFailed
from targets import schemes


@click.command()
@click.argument("source", required=False)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Where the chosen artifact goes, with frontier.md, frontier.png and the edgechat.json manifest "
              "(which lists every candidate).")
@click.option("--target", default="host", show_default=True,
              help="Device profile (`edgechat targets list`) whose speed counts: on host the speed measured here, "
              "elsewhere the planner's estimate for that device.")
@click.option("--max-mib", type=float, help="Constraint: a file of at most N MiB; the closest to the source wins.")
@click.option("--min-decode-tok-s", type=float, help="Constraint: at least R decode tok/s on the target; the closest "
              "to the source wins.")
@click.option("--max-kld", type=float, help="Constraint: mean KLD to the source at most X; the fastest wins "
              "(the default, with X = 0.05, when no constraint is given).")
@click.option("--format", "fmt", default="gguf", show_default=True, type=click.Choice(["gguf", "pte"]),
              help="The candidates' format: gguf for llama.cpp, pte for ExecuTorch.")
@click.option("--quant", "quants", multiple=True, help=f"Quant schemes to try (default: every one of the format: "
              f"gguf {', '.join(schemes.names('gguf', made=True))}; pte {', '.join(schemes.names('pte', made=True))}). "
              "Repeatable.")
@click.option("--bpw", type=float, multiple=True, help="Mixed-precision plans to try, in effective bits per weight "
              "(default: two between the smallest file possible and 8 bits). Repeatable.")
@click.option("--no-bpw", is_flag=True, help="Try no --bpw plans.")
@click.option("--share-tied", is_flag=True, help="pte: the --bpw plans hold a tied embedding/head once, at 8 bits, "
              "in a .ptd beside the .pte (as `convert --share-tied`).")
@click.option("--awq", is_flag=True, help="pte: activation-aware scales for the quantized programs "
              "(as `convert --awq`).")
@click.option("--budget-minutes", type=float, default=5.0, show_default=True,
              help="Distillation wall time per pruned student on --device (0: no students). The budget also sets "
              "how hard students are pruned: light on a CPU budget, heavier only where it buys the tokens.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Where students are distilled.")
@click.option("--teacher-data", default=0, show_default=True, help="Distill the students on N conversations "
              "whose replies the source writes (cached; 0: on chit-chat dialogues).")
@click.option("--kept", type=float, multiple=True, help="Students keeping this fraction of the parameters "
              "(default: the ratios the budget can recover). Repeatable.")
@click.option("--student-quant", help="Quant of the students' artifacts (default: q4_k_m, with --format pte 8da4w).")
@click.option("--eval-data", type=click.Path(), help="Text for KLD and perplexity (default: 20 held-out chit-chat dialogues).")
@click.option("--prompts", default=8, show_default=True, help="Held-out prompts whose greedy reply is compared with the source's.")
@click.option("--runs", default=2, show_default=True, help="Interleaved profiling rounds for the speed measured here.")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("--no-imatrix", is_flag=True, help="Quantize without an importance matrix.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def tune(source, out_dir, target, max_mib, min_decode_tok_s, max_kld, fmt, quants, bpw, no_bpw, share_tied, awq,
         budget_minutes, device, teacher_data, kept, student_quant, eval_data, prompts, runs, threads, no_imatrix,
         as_json):
    """Try SOURCE's candidates and keep the best that meets one constraint.

    Candidates: SOURCE at each quant scheme and --bpw plan of one --format, and pruned + distilled students
    (blocks removed by measured loss, widths by activation importance) at the ratios the --budget-minutes can
    recover. Each is measured against SOURCE (mean KLD, perplexity ratio, share of held-out prompts answered
    exactly as SOURCE answers greedily) and for speed (here, and the planner's estimate for --target). The
    frontier (frontier.md, frontier.png) marks the dominated candidates; the chosen one is written to OUTPUT.
    When none meets the constraint, the closest is named with its miss and the exit code is 1."""
    from edgechat.app.frontier import show
    from edgechat.app.tune import TuneOptions, tune as run_tune
    from edgechat.reports.progress import Steps

    opts = TuneOptions(target=target, max_mib=max_mib, min_decode_tok_s=min_decode_tok_s, max_kld=max_kld,
                       format=fmt, share_tied=share_tied, awq=awq, budget_minutes=budget_minutes, device=device,
                       teacher_data=teacher_data, kept=list(kept) or None,
                       student_quant=student_quant and student_quant.lower(), eval_data=eval_data, prompts=prompts,
                       runs=runs, threads=threads, imatrix=not no_imatrix)
    if quants:
        opts.quants = [q.lower() for q in quants]
    if bpw or no_bpw:
        opts.bpw = [] if no_bpw else list(bpw)
    try:
        with Steps(enabled=not as_json) as steps:
            manifest = run_tune(source, out_dir, opts, steps)
    except GateFailed as failed:
        if not as_json:
            show(failed.manifest["tune"]["frontier"], "tune: no candidate meets the constraint")
        raise
    if as_json:
        click.echo(json.dumps(manifest, indent=2, default=str))
        return
    show(manifest["tune"]["frontier"], "tune frontier")
    best = manifest["artifacts"][0]
    click.echo(f"chose {manifest['tune']['chosen']}: {out_dir / best['file']}", err=True)
