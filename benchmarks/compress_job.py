"""The distillation stage of bench_compress as a job that can run on another machine (a lent GPU), with the
step count fixed here: the steps that this machine's 2 cores do in the CPU budget.

    plan  (here):  importance on chit-chat, the quiet CPU seconds per step of each student -> JOB/job.json
    run   (GPU):   prune with the same importance, distil job.json's steps on --device -> JOB/out/NAME.*
    bench_compress.py --from-job JOB (here): evaluates those students, Q4_K_M, speeds, answers.

The student weights come back as fp16 safetensors (the tied output head is the embedding, not stored twice).

    .venv/bin/python benchmarks/compress_job.py plan JOB [--minutes 60] [--students w70,w50,d50]
    python3 benchmarks/compress_job.py run JOB --teacher TEACHER.gguf --device cuda
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, median, wait_quiet  # noqa: E402

DEFAULT_LR = 5e-4  # peak learning rate of the compression recipe
QUIET_WAIT_S = 3600.0  # at most this long for other work (a test run) to finish before a student's step is timed
STUDENTS = {"w70": ("width", 0.70), "w50": ("width", 0.50), "d50": ("depth", 0.50), "d70": ("depth", 0.70)}


def distill_config(steps: int = 0, device: str = "cpu", lr: float = DEFAULT_LR, seed: int = 0, alpha_ce: float = 0.0,
                   alpha_ul: float = 0.0, resample_every: int = 0, divergence: str = "forward"):
    from converters.distill import DistillConfig

    return DistillConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 20), micro_batch=4, seq_len=256,
                         seed=seed, device=device, alpha_ce=alpha_ce, alpha_ul=alpha_ul, resample_every=resample_every,
                         divergence=divergence)


def timed_steps(teacher, student, cfg, probe_steps: int = 6) -> float:
    """Seconds per distillation step, from a throwaway copy of the student: the median of the steps after the
    first two (warm-up: with 3 steps and only the first left out, the d80 chit-chat probe said 8.73 s a step and
    its 412 steps then took 6.14 s each)."""
    from converters.distill import distill

    probe = copy.deepcopy(student)
    c = copy.deepcopy(cfg)
    c.steps, c.checkpoint, c.log = probe_steps, None, []
    stamps = []
    distill(teacher, probe, c, on_step=lambda *_: stamps.append(time.perf_counter()))
    return median([b - a for a, b in zip(stamps[1:], stamps[2:])])


def distill_for(teacher, pruned, minutes: float, label: str, dataset=None, seed: int = 0, alpha_ce: float = 0.0,
                lr: float = DEFAULT_LR, alpha_ul: float = 0.0, steps: int | None = None, resample_every: int = 0,
                resample_for=None, divergence: str = "forward"):
    """A copy of `pruned` distilled for the steps that `minutes` of quiet wall time on this machine allow (the
    step timed on the student first, so load later only stretches the wall time); `seed` orders the data;
    alpha_ce weighs cross-entropy on the data's tokens next to the KL, alpha_ul unlikelihood on the tokens the
    dataset marks to avoid; steps: exactly this many instead (no probe); resample_for(student) -> converters.distill's
    `resample` for the copy being trained, called every resample_every steps; divergence: forward or reverse KL.
    Returns (student, record)."""
    from converters.distill import distill

    student = copy.deepcopy(pruned)
    quiet, step_s = None, None
    if not steps:
        quiet = wait_quiet(timeout=QUIET_WAIT_S)  # the probe fixes the step count: time it on a quiet machine
        step_s = timed_steps(teacher, student, distill_config(alpha_ce=alpha_ce))
        steps = max(10, int(minutes * 60 / step_s))
        print(f"[{label}] {step_s:.2f} s/step -> {steps} steps in {minutes:g} min", file=sys.stderr)
    cfg = distill_config(steps, lr=lr, seed=seed, alpha_ce=alpha_ce, alpha_ul=alpha_ul, resample_every=resample_every,
                         divergence=divergence)
    t = time.perf_counter()
    distill(teacher, student, cfg, dataset=dataset, resample=resample_for(student) if resample_for else None)
    return student, {"step_s_probe": step_s and round(step_s, 3), "probe_quiet": quiet, "ran_on": "cpu",
                     "wall_s": round(time.perf_counter() - t, 1),
                     "first": cfg.log[0], "last": cfg.log[-1], "curve": cfg.log[:: max(1, cfg.steps // 25)],
                     **recipe_record(cfg)}


def recipe_record(cfg) -> dict:
    return {"steps": cfg.steps, "tokens_seen": cfg.steps * cfg.micro_batch * cfg.seq_len, "lr": cfg.lr,
            "seq_len": cfg.seq_len, "micro_batch": cfg.micro_batch, "seed": cfg.seed, "alpha_ce": cfg.alpha_ce,
            "alpha_ul": cfg.alpha_ul, "resample_every": cfg.resample_every, "divergence": cfg.divergence}


def importance(teacher, calib_seqs: int):
    from converters.prune import measure_importance
    from edgechat.app.pipeline import calibration_sequences

    return measure_importance(teacher, calibration_sequences(teacher, None, limit=calib_seqs))


def prune_student(teacher, name: str, imp):
    from converters.prune import plan_for_target, prune

    strategy, frac = STUDENTS[name]
    plan = plan_for_target(teacher.config, frac, strategy)
    return prune(teacher, plan, imp), plan


def plan(job: Path, minutes: float, names: list[str], calib_seqs: int) -> None:
    import torch

    from edgechat.core.sources import load_model

    torch.set_num_threads(THREADS)
    teacher = load_model(None)
    t = time.perf_counter()
    imp = importance(teacher, calib_seqs)
    spec = {"minutes": minutes, "threads": THREADS, "calib_seqs": calib_seqs, "importance_s": time.perf_counter() - t,
            "students": {}}
    for n in names:
        student, _ = prune_student(teacher, n, imp)
        q = wait_quiet(0.3, 120)
        step_s = timed_steps(teacher, student, distill_config())
        steps = max(10, int(minutes * 60 / step_s))
        spec["students"][n] = {"steps": steps, "cpu_step_s": round(step_s, 3), "quiet": q}
        print(f"[{n}] {step_s:.2f} s/step on {THREADS} CPU threads -> {steps} steps in {minutes:g} min", file=sys.stderr)
    job.mkdir(parents=True, exist_ok=True)
    torch.save(vars(imp), job / "importance.pt")
    (job / "job.json").write_text(json.dumps(spec, indent=2))


def run(job: Path, teacher_path: Path, device: str, only: list[str] | None, lr: float = DEFAULT_LR,
        eval_data: Path | None = None) -> None:
    """Distil the job's students; with eval_data, also score them there (PPL and KLD vs the teacher, fp32),
    which is how a learning rate is chosen on held-out text without bringing the weights back."""
    import torch
    from safetensors.torch import save_file

    from converters.distill import distill
    from converters.prune import Importance
    from edgechat.core.data import read_eval_data
    from edgechat.app.evaluate import evaluate
    from edgechat.core.sources import load_model
    from runtimes.torch_engine import TorchEngine

    torch.backends.cuda.matmul.allow_tf32 = False  # the CPU's fp32 arithmetic, not TF32's 10-bit mantissa
    spec = json.loads((job / "job.json").read_text())
    imp = Importance(**torch.load(job / "importance.pt"))
    teacher = load_model(teacher_path)
    out = job / ("out" if lr == DEFAULT_LR else f"out-lr{lr:g}")
    out.mkdir(exist_ok=True)
    data = read_eval_data(eval_data, max_dialogues=30) if eval_data else None
    for n, s in spec["students"].items():
        if only and n not in only:
            continue
        student, _ = prune_student(teacher, n, imp)
        cfg = distill_config(s["steps"], device, lr)
        t = time.perf_counter()
        distill(teacher, student, cfg)
        wall = time.perf_counter() - t
        sd = student.module.state_dict()
        if student.config.tie_word_embeddings:
            sd.pop("lm_head.weight")
        save_file({k: v.half().contiguous() for k, v in sd.items()}, str(out / f"{n}.safetensors"))
        dev = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
        rec = {"steps": cfg.steps, "device": dev, "wall_s": round(wall, 1), "first": cfg.log[0], "last": cfg.log[-1],
               "curve": cfg.log[:: max(1, cfg.steps // 25)],
               "config": {k: v for k, v in vars(cfg).items() if k != "log"}}
        if data is not None:
            q = evaluate(TorchEngine(student, n_ctx=512), TorchEngine(teacher, n_ctx=512), data, n_ctx=512).as_dict()
            rec["eval"] = {"data": str(eval_data), **q}
            print(f"[{n}] {eval_data.name}: PPL {q['ppl']:.2f} ({q['ppl_ratio']:.3f}x the teacher), KLD {q['mean_kld']:.3f}")
        (out / f"{n}.json").write_text(json.dumps(rec, indent=2))
        print(f"[{n}] {cfg.steps} steps on {dev} in {wall:.0f} s: KL {cfg.log[0][2]:.3f} -> {cfg.log[-1][2]:.3f}")


def load_student(job: Path, teacher, name: str, imp) -> tuple[object, object, dict]:
    """(pruned model, distilled model, the run's record) for a student that `run` distilled."""
    import torch
    from safetensors.torch import load_file

    before, plan_ = prune_student(teacher, name, imp)
    after = copy.deepcopy(before)
    weights = {k: v.float() for k, v in load_file(str(job / "out" / f"{name}.safetensors")).items()}
    missing, unexpected = after.module.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise SystemExit(f"{name}: the job's weights do not fit the pruned model ({missing}, {unexpected})")
    if "lm_head.weight" in missing:
        assert after.module.lm_head.weight.data_ptr() == after.module.model.embed_tokens.weight.data_ptr()
    torch.set_num_threads(THREADS)
    return before, after, {**json.loads((job / "out" / f"{name}.json").read_text()), "chosen": plan_.chosen}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["plan", "run"])
    ap.add_argument("job", type=Path)
    ap.add_argument("--minutes", type=float, default=60.0, help="plan: the CPU budget per student")
    ap.add_argument("--students", help="comma list (plan: default w70,w50,d50; run: default all the job's students)")
    ap.add_argument("--calib-seqs", type=int, default=64, help="plan: chit-chat sequences (512 tokens) for importance")
    ap.add_argument("--teacher", type=Path, help="run: the teacher GGUF (default: the embedded SmolLM2)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--lr", type=float, default=DEFAULT_LR,
                    help=f"run: peak learning rate (results in out-lrLR/ unless {DEFAULT_LR:g})")
    ap.add_argument("--eval", type=Path, help="run: score each student on this text/dialogue file where it ran")
    a = ap.parse_args()
    if a.stage == "plan":
        plan(a.job, a.minutes, (a.students or "w70,w50,d50").split(","), a.calib_seqs)
    else:
        run(a.job, a.teacher, a.device, a.students.split(",") if a.students else None, a.lr, a.eval)


if __name__ == "__main__":
    main()
