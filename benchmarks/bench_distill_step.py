"""Distillation step time: fp32 vs bf16 autocast vs bf16 + the fused, chunked head + KL (converters.distill_loss)
vs the default (`--precision auto`: bf16 + chunked where the CPU has bf16, else fp32 + chunked), on
SmolLM2-135M-Instruct teaching a full-size copy of itself, micro-batch 2 x 256 tokens. Goal (issue 13): bf16 +
chunked at least 1.5x fp32 on an AVX512-BF16/AMX CPU; on one without bf16, the default no slower than fp32.

A step is one optimizer step of converters.distill.distill exactly as training runs it: the teacher's forward
(no grad), the student's forward + backward, the KL over the 49,152-wide vocabulary, AdamW. Each round runs
every mode for --warmup + --steps steps (order rotated per round) and times each step from the previous step's
on_step callback to its own. The --warmup steps of each call are left out and recorded apart: the first step
is unlike the hundreds after it (AdamW makes its state; the student still equals the teacher, so the KL and its
gradients are ~0). On the 2-core Xeon it ran faster than the later ones (fp32 2.8 vs 3.7 s), so counting it,
as this script did before 2026-12-02, flattered no mode. Ratios are medians of per-round ratios (the modes of
one round share the machine's load within a minute). Before each round the script waits up to --quiet-timeout s
for other processes to keep fewer than --max-busy cores busy, and records what it saw.

Also recorded per mode: the KL of the first step (the precisions must agree) and the resident memory the
logits need, by construction (whole batch: teacher and student [512, 49152] fp32 logits plus their softmaxes
and gradient; chunked: one chunk's worth).

    .venv/bin/python benchmarks/bench_distill_step.py [--rounds 3] [--steps 2] [--warmup 1] [--chunk 256]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, Bench, cpu_busy_cores, loadavg, md_table, median, rotate, summary, wait_quiet  # noqa: E402

GOAL = 1.5  # bf16 + chunked steps at least 1.5x faster than fp32 on an AVX512-BF16 CPU
NO_LOSS = 0.97  # on a CPU without bf16 the default (auto) must not be slower than fp32: within 3%, the noise here
MICRO, SEQ = 2, 256


def modes(chunk: int) -> dict[str, tuple[str, int]]:
    """Mode name: (precision, loss chunk). "auto" is what training does by default on this machine."""
    return {"fp32": ("fp32", 0), "bf16": ("bf16", 0), "bf16+chunked": ("bf16", chunk), "auto": ("auto", chunk)}


def run_steps(teacher, student, packed, precision: str, chunk: int, steps: int, warmup: int, seed: int) -> dict:
    from converters.distill import DistillConfig, distill

    stamps, kls = [], []
    cfg = DistillConfig(steps=warmup + steps, micro_batch=MICRO, seq_len=SEQ, lr=1e-5, warmup_steps=1, seed=seed,
                        precision=precision, loss_chunk=chunk)
    t0 = time.perf_counter()
    distill(teacher, student, cfg, dataset=packed,
            on_step=lambda step, loss, kl: (stamps.append(time.perf_counter()), kls.append(kl)))
    times = [b - a for a, b in zip([t0, *stamps], stamps)]
    return {"step_s": times[warmup:], "warmup_s": times[:warmup], "kl_first": kls[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per mode per round")
    ap.add_argument("--warmup", type=int, default=1, help="steps per mode per round run first and not timed")
    ap.add_argument("--chunk", type=int, default=256, help="positions per chunk of the fused head + KL")
    ap.add_argument("--modes", default=",".join(modes(256)),
                    help="comma list of the modes to run (fp32 first; bf16 without AVX512-BF16/AMX is emulated and far "
                         "slower)")
    ap.add_argument("--max-busy", type=float, default=0.3)
    ap.add_argument("--name", default="bench_distill_step", help="results file name (benchmarks/results/NAME.md)")
    ap.add_argument("--quiet-timeout", type=float, default=20.0)
    args = ap.parse_args()

    import torch

    from converters.distill import DistillConfig, Packed, training_tokens
    from edgechat.core.sources import load_model

    torch.set_num_threads(THREADS)
    bench = Bench(args.name)
    teacher = load_model(None)
    student = copy.deepcopy(teacher)
    data = training_tokens(teacher, DistillConfig(seq_len=SEQ, max_dialogues=40))
    packed = Packed(data.tokens[: MICRO * (args.warmup + args.steps) * 2])
    vocab = teacher.config.vocab_size
    names = args.modes.split(",")
    if names[0] != "fp32" or not set(names) <= set(modes(args.chunk)):
        ap.error(f"--modes {args.modes}: fp32 first, then any of {', '.join(list(modes(args.chunk))[1:])}")
    per_mode = {m: [] for m in names}
    kl_first = {m: [] for m in names}
    warm = {m: [] for m in names}
    rounds = []
    for r in range(args.rounds):
        quiet = wait_quiet(args.max_busy, args.quiet_timeout)
        load = loadavg()
        got = {}
        for m in rotate(names, r):
            precision, chunk = modes(args.chunk)[m]
            out = run_steps(teacher, student, packed, precision, chunk, args.steps, args.warmup, seed=r)
            got[m] = median(out["step_s"])
            per_mode[m] += out["step_s"]
            warm[m] += out["warmup_s"]
            kl_first[m].append(out["kl_first"])
        busy_after = cpu_busy_cores(0.5)
        rounds.append({"round": r, **quiet, "busy_cores_after": busy_after, "loadavg": load,
                       "step_s": got, "speedup": {m: got["fp32"] / got[m] for m in names}})
        print(f"round {r}: " + ", ".join(f"{m} {got[m]:.2f} s" for m in names) + f"  (load {load})", file=sys.stderr)
        report(bench, args, names, per_mode, warm, kl_first, rounds, vocab)  # after every round: a cut run keeps its figures


def report(bench, args, names, per_mode, warm, kl_first, rounds, vocab) -> None:
    import torch

    from converters.distill import DistillConfig, cpu_has_bf16, train_precision

    auto = f"{train_precision(DistillConfig(precision='auto'))}, chunk {args.chunk}"
    bf16_cpu = cpu_has_bf16()
    goal_mode, goal = ("bf16+chunked", GOAL) if bf16_cpu else ("auto", NO_LOSS)
    speedup = {m: median([x["speedup"][m] for x in rounds]) for m in names}
    logits_mib = {"whole batch": 6 * MICRO * SEQ * vocab * 4 / 2**20,
                  "chunked": 6 * min(args.chunk, MICRO * SEQ) * vocab * 4 / 2**20}
    results = {
        "setup": {"teacher": "SmolLM2-135M-Instruct (embedded Q4_1 GGUF, dequantized to fp32)",
                  "student": "a full-size fp32 copy of the teacher", "micro_batch": MICRO, "seq_len": SEQ,
                  "threads": THREADS, "chunk": args.chunk, "steps_per_round": args.steps, "warmup_steps": args.warmup,
                  "cpu_has_bf16": bf16_cpu, "auto_is": auto, "torch": torch.__version__},
        "step_s": {m: summary(per_mode[m]) for m in names},
        "warmup_step_s": {m: summary(warm[m]) for m in names},
        "speedup_vs_fp32": speedup,
        "kl_first_step": {m: summary(kl_first[m]) for m in names},
        "logits_mib_by_construction": logits_mib,
        "goal": {"mode": goal_mode, "speedup": goal, "met": (speedup.get(goal_mode) or 0) >= goal},
        "rounds": rounds,
        "rounds_done": len(rounds),
    }
    rows = [[m, median(per_mode[m]), min(per_mode[m]), max(per_mode[m]), speedup[m], median(kl_first[m])]
            for m in names]
    md = (f"SmolLM2-135M-Instruct teaching a full-size copy of itself: one distillation step (teacher forward, student "
          f"forward + backward, KL over {vocab} tokens, AdamW) on {MICRO} x {SEQ} tokens, {THREADS} threads, "
          f"{len(rounds)} of {args.rounds} interleaved rounds x {args.steps} timed steps per mode, each after "
          f"{args.warmup} untimed warm-up step(s) (median warm-up step: "
          + ", ".join(f"{m} {median(warm[m]):.2f} s" for m in names) + "). CPU bf16 (AVX512-BF16/AMX): "
          f"{bf16_cpu}; auto (the default) runs {auto}.\n\n"
          + md_table(["mode", "median step s", "min", "max", "speedup vs fp32 (median of rounds)", "KL, first step"], rows)
          + f"\n\nGoal: {goal_mode} >= {goal}x fp32 ("
            + ("bf16 + chunked 1.5x faster on an AVX512-BF16/AMX CPU" if bf16_cpu else "no loss on a CPU without bf16")
            + f"): **{'met' if results['goal']['met'] else 'not met'}** ("
            + (f"{speedup[goal_mode]:.2f}x" if goal_mode in speedup else f"{goal_mode} not run") + "). "
            f"Logits memory by construction (6 [positions, vocab] fp32 tensors): "
            f"whole batch {logits_mib['whole batch']:.0f} MiB, chunked {logits_mib['chunked']:.0f} MiB.\n\n"
          + md_table(["round", "quiet", "load avg", *[f"{m} s" for m in names], *[f"{m} x" for m in names[1:]]],
                     [[x["round"], x["quiet"], x["loadavg"][0], *[x["step_s"][m] for m in names],
                       *[x["speedup"][m] for m in names[1:]]] for x in rounds]))
    bench.write(results, md)


if __name__ == "__main__":
    main()
