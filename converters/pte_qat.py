"""Quantization-aware training for the .pte (`--qat-steps N`): torchao's fake quantization of the very configs the
program is quantized with (8-bit dynamic per-token activations, 4-bit or 8-bit symmetric weights), trained by
converters.distill's trainer against the fp32 model, then handed back as plain fp32 linears that the export
quantizes as usual: the trained weights meet the same rounding they were trained under (affine scales; HQQ's
scale search would move the grid the training adapted to)."""
from __future__ import annotations

import copy
import time
from dataclasses import replace

from torch import nn

from edgechat.core.model import Model

LR = 5e-5  # small: the weights only move to sit better on the quantization grid
WARMUP = 5
SEQ_LEN = 256
MICRO_BATCH = 4


def _choice_for(name: str, m: nn.Linear, head: str, linear: str) -> str:
    """The module's fake-quantization choice: 8da8w per channel where the group does not divide its inputs."""
    from converters.pte_mixed import parse

    choice = head if name == "lm_head" else linear
    group = parse(choice)[1]
    return "8da8w" if group and m.in_features % group else choice


# the export module's fused linears (converters.pte_modules) and the model's linears they are made of
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def model_choices(plan: dict[str, str]) -> dict[str, str]:
    """A budget's per-module plan (export-module names) as choices for the model's own linears: a fused
    linear's choice for each of its parts; the embedding left out (QAT trains the linears)."""
    out = {}
    for name, choice in plan.items():
        parent, _, leaf = name.rpartition(".")
        for part in FUSED.get(leaf, (leaf,)):
            out[f"{parent}.{part}" if parent else part] = choice
    return out


def fake_quantize(module: nn.Module, choices: dict[str, str]) -> None:
    """Each named linear of `module` made torchao's fake-quantized linear of its choice, in place."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    from converters.pte_mixed import linear_config

    for choice in dict.fromkeys(choices.values()):
        names = {n for n, c in choices.items() if c == choice}
        quantize_(module, QATConfig(linear_config(choice, hqq=False), step="prepare"),
                  filter_fn=lambda m, fqn, names=names: fqn in names)


def qat_train(teacher: Model, steps: int, linear: str, head: str, progress=None, device: str = "cpu",
              seq_len: int = SEQ_LEN, plan: dict[str, str] | None = None) -> tuple[Model, dict]:
    """A copy of `teacher` trained for `steps` with every linear fake-quantized at its choice (the plan's
    `linear` for the blocks, `head` for the output projection; or, given a budget's `plan`, each linear at its
    planned type, so that the modules the plan keeps at 8 bits are not trained for 4-bit rounding they never
    meet), and the manifest's record of the run."""
    from torchao.quantization.qat import FakeQuantizedLinear

    from converters.distill import DistillConfig, distill

    t0 = time.perf_counter()
    module = copy.deepcopy(teacher.module)
    tied = teacher.config.tie_word_embeddings
    planned = model_choices(plan) if plan else {}
    fake_quantize(module, {n: planned.get(n) or _choice_for(n, m, head, linear)
                           for n, m in module.named_modules() if isinstance(m, nn.Linear)})
    if tied:  # the fake-quantized head still reads the embedding's table: train one tensor, as the file ties them
        module.lm_head.weight = module.model.embed_tokens.weight
    student = replace(teacher, module=module)
    cfg = DistillConfig(steps=steps, lr=LR, warmup_steps=min(WARMUP, max(steps // 4, 1)), seq_len=seq_len,
                        micro_batch=MICRO_BATCH, device=device)
    distill(teacher, student, cfg, progress=progress)
    for name, m in list(module.named_modules()):
        if isinstance(m, FakeQuantizedLinear):
            parent, _, leaf = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, leaf, m.to_linear())
    if tied:
        module.lm_head.weight = module.model.embed_tokens.weight
    module.eval().requires_grad_(False)
    log = cfg.log
    return student, {"steps": steps, "trained_for": "the plan" if plan else linear, "lr": LR, "seq_len": seq_len,
                     "micro_batch": MICRO_BATCH, "device": device,
                     "kl_first": round(log[0][2], 5) if log else None, "kl_last": round(log[-1][2], 5) if log else None,
                     "wall_s": round(time.perf_counter() - t0, 1)}
