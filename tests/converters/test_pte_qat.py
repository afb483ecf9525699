"""converters.pte_qat: a budget's per-module plan becomes the fake quantization QAT trains under, on stories260K."""
from __future__ import annotations

import copy

import pytest
import torch


def _weight_choice(cfg) -> str:
    """'8da4w-g32' / '8da8w' read back from a torchao fake-quantize config."""
    from torchao.quantization.granularity import PerAxis, PerGroup

    if cfg.dtype == torch.int4 and isinstance(cfg.granularity, PerGroup):
        return f"8da4w-g{cfg.granularity.group_size}"
    assert cfg.dtype == torch.int8 and isinstance(cfg.granularity, PerAxis), cfg
    return "8da8w"


def test_model_choices_split_the_fused_linears():
    from converters.pte_qat import model_choices

    plan = {"model.layers.0.self_attn.qkv_proj": "8da8w", "model.layers.0.mlp.gate_up_proj": "8da4w-g64",
            "model.layers.0.mlp.down_proj": "8da4w-g32", "lm_head": "8da8w", "model.embed_tokens": "8w"}
    assert model_choices(plan) == {
        "model.layers.0.self_attn.q_proj": "8da8w", "model.layers.0.self_attn.k_proj": "8da8w",
        "model.layers.0.self_attn.v_proj": "8da8w", "model.layers.0.mlp.gate_proj": "8da4w-g64",
        "model.layers.0.mlp.up_proj": "8da4w-g64", "model.layers.0.mlp.down_proj": "8da4w-g32",
        "lm_head": "8da8w", "model.embed_tokens": "8w"}


@pytest.mark.parametrize("fuse", [True, False])
def test_each_linear_is_fake_quantized_at_its_planned_type(stories_model, fuse):
    """The plan names the export module's linears; QAT prepares the model's own, each at the plan's type."""
    from torchao.quantization.qat import FakeQuantizedLinear

    from converters.pte_mixed import candidates, planned_modules
    from converters.pte_modules import export_module
    from converters.pte_qat import fake_quantize, model_choices

    linears = [m for m in planned_modules(export_module(stories_model.module, 64, fused_ops=False, fuse_mlp=fuse))
               if m.kind == "linear"]
    plan = {m.name: candidates(m)[i % len(candidates(m))] for i, m in enumerate(linears)}
    assert len(set(plan.values())) > 2
    module = copy.deepcopy(stories_model.module)
    fake_quantize(module, model_choices(plan))
    got = {n: _weight_choice(m.weight_fake_quantizer.config) for n, m in module.named_modules()
           if isinstance(m, FakeQuantizedLinear)}
    assert got == model_choices(plan) and len(got) == sum(isinstance(m, torch.nn.Linear)
                                                           for m in stories_model.module.modules())
    assert ("model.layers.0.mlp.gate_up_proj" in plan) == fuse
