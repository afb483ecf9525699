"""A distillation budget in wall time: the steps it buys on this device (step time measured, not guessed)
and the pruning ratios those tokens can recover."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, replace

import torch

from converters.distill import DistillConfig, dist_info, distill
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model

# Kept-parameter fractions a budget can recover, by the distillation tokens it buys per teacher parameter.
# The two ends are measured: NVIDIA's Minitron recovers a 50% student with about 12-40 tokens per parameter
# (94B tokens for 8B -> 4B), while our own 2-core CPU budget (about 0.4M tokens an hour for SmolLM2-135M,
# 0.003 tokens per parameter per hour; benchmarks/results/bench_compress-cpu240-h100.md) left every 50%
# student at 1.8-2.4x the teacher's perplexity, looping. Between them a ratio is offered only where the
# tokens are within about a decade of what its removal needs (removing less needs fewer tokens: a 10%
# student, mostly blocks whose removal costs least by measured loss plus a little width, starts close to the
# teacher and only needs healing). So a CPU budget gets light pruning; heavier comes with a GPU-sized one.
BUDGET_RULE = ((10.0, (0.9, 0.8, 0.7, 0.5)), (1.0, (0.9, 0.8, 0.7)), (0.05, (0.9, 0.8)), (0.0, (0.9,)))
MEASURE_STEPS = 3  # the first is a warm-up (allocations, kernel choice); the median of the rest is the step time


@dataclass
class BudgetPlan:
    minutes: float
    device: str
    step_s: float  # measured, on a student of the teacher's own size (a smaller student steps faster)
    steps: int
    tokens_per_step: int
    tokens: int
    tokens_per_param: float
    kept_fractions: tuple  # the ratios BUDGET_RULE offers for these tokens

    def as_dict(self) -> dict:
        return asdict(self)


def kept_fractions(tokens_per_param: float) -> tuple:
    return next(fr for floor, fr in BUDGET_RULE if tokens_per_param >= floor)


def measure_step_s(teacher: Model, student: Model, cfg: DistillConfig) -> float:
    """Seconds per optimizer step of this recipe on its device, on a throwaway copy of the student."""
    probe = Model(student.config, copy.deepcopy(student.module), student.tokenizer, student.chat_template,
                  dict(student.source), name=student.name)
    # a small slice of the data is enough to time steps (tokenizing thousands of dialogues is not)
    # (and the step costs the same whatever wrote the tokens: chit-chat stands in for teacher-written data)
    trial = replace(cfg, steps=MEASURE_STEPS, warmup_steps=1, checkpoint=None, log=[], teacher_data=0,
                    max_dialogues=min(cfg.max_dialogues, 200))
    stamps = []
    distill(teacher, probe, trial, on_step=lambda *_: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return sorted(gaps)[len(gaps) // 2]


def plan_budget(teacher: Model, cfg: DistillConfig, minutes: float, student: Model | None = None) -> BudgetPlan:
    """The steps `minutes` of distillation buy with this recipe here. Without a student, the step is timed on a
    copy of the teacher: the largest student there can be, so the budget is never overrun. Under torchrun
    every process takes rank 0's count (they must run the same number of steps)."""
    if minutes <= 0:
        raise EdgechatError(f"--budget-minutes must be above 0, got {minutes:g}")
    step_s = round(measure_step_s(teacher, student or teacher, cfg), 4)  # the figure recorded is the one used
    steps = max(1, int(minutes * 60 / step_s))
    _, world = dist_info()
    if world > 1:
        t = torch.tensor([steps], dtype=torch.int64)
        torch.distributed.broadcast(t, src=0)
        steps = int(t)
    per_step = cfg.micro_batch * cfg.grad_accum * cfg.seq_len * world
    per_param = steps * per_step / teacher.config.param_count()
    return BudgetPlan(minutes=minutes, device=cfg.device, step_s=step_s, steps=steps, tokens_per_step=per_step,
                      tokens=steps * per_step, tokens_per_param=float(f"{per_param:.4g}"),
                      kept_fractions=kept_fractions(per_param))


def recovery_note(teacher_params: int, kept: float, cfg: DistillConfig | None, world: int = 1) -> str | None:
    """A line for a student pruned to `kept` of the teacher's parameters with cfg's distillation steps when
    BUDGET_RULE says those tokens recover only lighter pruning (None when they suffice)."""
    steps = cfg.steps if cfg else 0
    tokens = steps * (cfg.micro_batch * cfg.grad_accum * cfg.seq_len * world if cfg else 0)
    per_param = tokens / teacher_params
    lightest = min(kept_fractions(per_param))
    if kept >= lightest - 0.02:  # plan_for_target lands a little under the fraction asked for
        return None
    given = (f"{steps} distillation steps ({tokens / 1e6:.3g}M tokens, {per_param:.2g} per parameter of the source)"
             if steps else "no distillation")
    return (f"note: a {kept:.0%} student with {given} is likely far from the source: that much training "
            f"recovers students down to about {lightest:.0%} of its parameters (keep more with --target-params "
            f"{lightest:g}, or distill longer or on a GPU; `edgechat tune` picks the ratio for a budget)")
