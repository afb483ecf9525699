"""Where bf16 autocast starts to pay on this CPU: one distillation step (converters.distill, the chunked head +
KL, AdamW) of random 5-layer models of widths 64 to 512 (stories260K's vocabulary and tokenizer, 4 x 128
tokens, 2 threads), fp32 against bf16, interleaved rounds; the median step of each after two warm-up steps.
It sets converters.distill.BF16_MIN_HIDDEN, below which `--precision auto` keeps fp32 on a CPU.

    .venv/bin/python benchmarks/bench_bf16_width.py [--widths 64,128,256,512] [--rounds 2]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, Bench, loadavg, md_table, median  # noqa: E402

STEPS, MICRO, SEQ = 8, 4, 128


def shape(cfg, h: int):
    heads = max(8, h // 64)
    return cfg.replace(hidden_size=h, intermediate_size=h * 8 // 3 // 32 * 32, num_heads=heads,
                       num_kv_heads=max(4, h // 128), head_dim=h // heads)


def step_s(teacher, student, data, precision: str) -> float:
    from converters.distill import DistillConfig, distill

    stamps = []
    cfg = DistillConfig(steps=STEPS, micro_batch=MICRO, seq_len=SEQ, lr=1e-3, seed=0, precision=precision)
    distill(teacher, copy.deepcopy(student), cfg, dataset=data, on_step=lambda *_: stamps.append(time.perf_counter()))
    return median([b - a for a, b in zip(stamps[2:], stamps[3:])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="64,128,256,512")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", default="bench_bf16_width")
    args = ap.parse_args()

    import torch

    from converters.distill import BF16_MIN_HIDDEN, DistillConfig, cpu_has_bf16, training_tokens
    from edgechat.core.model import Model
    from edgechat.core.sources import load_model
    from edgechat.core.transformer import Transformer

    torch.set_num_threads(THREADS)
    bench = Bench(args.name)
    stories = load_model(Path(__file__).resolve().parents[2] / "shared/data/stories260K/hf")
    data = training_tokens(stories, DistillConfig(seq_len=SEQ, max_dialogues=200))
    rows, out = [], {}
    for h in [int(x) for x in args.widths.split(",")]:
        cfg = shape(stories.config, h)
        torch.manual_seed(0)
        teacher, student = (Model(cfg, Transformer(cfg), stories.tokenizer, stories.chat_template) for _ in range(2))
        times = {"fp32": [], "bf16": []}
        for _ in range(args.rounds):
            for p in times:
                times[p].append(step_s(teacher, student, data, p))
        fp32, bf16 = median(times["fp32"]), median(times["bf16"])
        out[h] = {"params": cfg.param_count(), "fp32_s": fp32, "bf16_s": bf16, "bf16_speedup": fp32 / bf16,
                  "rounds": times, "loadavg": loadavg()}
        rows.append([h, f"{cfg.param_count() / 1e6:.2f}M", round(fp32, 4), round(bf16, 4), round(fp32 / bf16, 2)])
        print(f"width {h}: fp32 {fp32:.3f} s, bf16 {bf16:.3f} s ({fp32 / bf16:.2f}x)", file=sys.stderr)
    md = (f"One distillation step of a random 5-layer model, {MICRO} x {SEQ} tokens, {THREADS} threads, median of "
          f"{args.rounds} interleaved rounds x {STEPS - 3} steps. CPU bf16 (AVX512-BF16/AMX): {cpu_has_bf16()}. "
          f"`--precision auto` uses bf16 on a CPU from width {BF16_MIN_HIDDEN}.\n\n"
          + md_table(["width", "params", "fp32 step s", "bf16 step s", "bf16 speed-up"], rows))
    bench.write({"widths": out, "bf16_min_hidden": BF16_MIN_HIDDEN, "cpu_has_bf16": cpu_has_bf16()}, md)


if __name__ == "__main__":
    main()
