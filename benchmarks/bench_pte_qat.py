"""Issue #12's lever (e) alone: quantization-aware training (`--qat-steps N`, converters.pte_qat) of the default
8da4w (min/max scales, group 32, 4-bit embedding and head) on SmolLM2-135M-Instruct, against the same 8da4w
without it, and its cost: steps, wall time, where it ran.

Both are scored as bench_quality_per_byte_pte scores its levers: the quantized export module run eagerly by
torchao (the same quantized weights and dynamic int8 activations the program holds), mean KLD / top-1 / PPL vs the
fp32 reference on --chunks x 512 WikiText-2 tokens and the assistant turns of --dialogues DailyDialog test
dialogues. QAT distills the fake-quantized model from the fp32 one on chit-chat (converters.distill's trainer,
sequences of 256 tokens, 4 a step); the steps run in the trainer's default precision (bf16 where the CPU has it).

    .venv/bin/python benchmarks/bench_pte_qat.py [--steps 100,300] [--chunks 6] [--dialogues 6] [--name NAME]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import N_CTX, CachedReference, eval_datasets  # noqa: E402
from bench_quality_per_byte_pte import DEFAULT, SEQ, EagerProgram  # noqa: E402
from common import THREADS, Bench, loadavg, md_table  # noqa: E402


def quantized(model, opts, calib):
    """The 8da4w export module for `opts` (QAT first when opts.qat_steps), and what the levers recorded."""
    from converters.pte_export import quantize_module
    from converters.pte_levers import prepare_module

    module, levers = prepare_module(model, opts, calib)
    return quantize_module(module, opts), levers


def step_counts(text: str) -> list[int]:
    """--steps: a comma list of positive step counts."""
    counts = [int(x) for x in text.split(",")]  # a ValueError becomes argparse's one-line error
    if min(counts) < 1:
        raise ValueError(text)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=step_counts, default="100,300",
                    help="comma list of QAT step counts (1 or more), each trained from fp32")
    ap.add_argument("--chunks", type=int, default=6, help="WikiText-2 chunks of 512 tokens")
    ap.add_argument("--dialogues", type=int, default=6, help="DailyDialog test dialogues")
    ap.add_argument("--name", default="bench_pte_qat")
    args = ap.parse_args()

    import torch

    from converters.distill import DistillConfig, train_precision
    from converters.pte_levers import calibration_for
    from converters.pte_options import resolve_options
    from edgechat.app.evaluate import evaluate
    from edgechat.core.sources import load_model
    from runtimes.torch_engine import TorchEngine

    torch.set_num_threads(THREADS)
    bench = Bench(args.name)
    model = load_model(None)
    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), Path(tempfile.mkdtemp(prefix="qat-ref-")))
    data = eval_datasets(args.dialogues)
    base = resolve_options(model, "8da4w", {"max_seq_len": SEQ, "hqq": False})
    calib = calibration_for(model)
    variants = [(DEFAULT, base)] + [(f"(e) 8da4w + QAT {n} steps", replace(base, qat_steps=n)) for n in args.steps]
    rows, out, precision = [], {}, train_precision(DistillConfig())
    for name, opts in variants:
        t = time.perf_counter()
        module, levers = quantized(model, opts, calib)
        prep_s = time.perf_counter() - t
        q = {d: evaluate(EagerProgram(module, ref), ref, dd, n_ctx=N_CTX, max_chunks=args.chunks).as_dict()
             for d, dd in data.items()}
        qat = levers.get("qat") or {}
        out[name] = {**q, "prepare_s": round(prep_s, 1), "qat": qat, "loadavg": loadavg()}
        w, d = q["wikitext2"], q["dailydialog"]
        print(f"{name}: wiki kld {w['mean_kld']:.4f}, dd kld {d['mean_kld']:.4f}, QAT {qat.get('wall_s', 0)} s",
              file=sys.stderr, flush=True)
        rows.append([name, qat.get("steps", 0), qat.get("wall_s", 0), w["mean_kld"], w["top1_agreement"], w["ppl"],
                     d["mean_kld"], d["top1_agreement"], d["ppl"]])
        write(bench, args, rows, out, precision)  # after every variant: a cut run keeps its rows


def write(bench, args, rows, out, precision: str) -> None:
    base = rows[0][3]
    md = (f"SmolLM2-135M-Instruct, 8da4w (min/max scales, g32, 4-bit embedding and head) scored eagerly by torchao "
          f"against the fp32 reference: {args.chunks} x 512 WikiText-2 tokens, assistant turns of {args.dialogues} "
          f"DailyDialog test dialogues. QAT: converters.pte_qat, distilled from fp32 on chit-chat, 4 x 256 tokens a "
          f"step, {THREADS} threads on the CPU (the machine line above), precision {precision}; "
          f"each step count trained from fp32 afresh.\n\n"
          + md_table(["variant", "QAT steps", "QAT wall s", "WikiText-2 KLD", "top-1", "PPL", "DailyDialog KLD",
                      "top-1", "PPL"], rows)
          + "\n\n" + md_table(["variant", "WikiText-2 KLD vs 8da4w"], [[r[0], r[3] / base] for r in rows[1:]]))
    bench.write({"setup": {"chunks": args.chunks, "dialogues": args.dialogues, "threads": THREADS,
                           "precision": precision, "seq": SEQ}, "variants": out}, md)


if __name__ == "__main__":
    main()
