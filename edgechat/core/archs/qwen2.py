"""Qwen2 / Qwen2.5: q/k/v biases, ChatML turns, RMSNorm eps 1e-6; llama.cpp ropes it half-split (no permute)."""
from __future__ import annotations

from edgechat.core.archs import register
from edgechat.core.archs.family import Family


@register
class Qwen2(Family):
    name = "qwen2"
    hf_architectures = ("Qwen2ForCausalLM",)
    hf_model_type = "qwen2"
    gguf_arch = "QWEN2"
    end_of_turn = ("<|im_end|>",)
    attention_bias = True
    rms_norm_eps = 1e-6
    heads_span_hidden = True
