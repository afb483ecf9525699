"""Qwen3: per-head q/k RMSNorm before RoPE, no q/k/v biases, head_dim independent of hidden / heads (0.6B:
16 heads of 128 over a hidden size of 1024), ChatML turns with a thinking block; llama.cpp's qwen3 graph
ropes half-split, so no Q/K permutation."""
from __future__ import annotations

from edgechat.core.archs import register
from edgechat.core.archs.family import Family
from edgechat.core.config import ModelConfig
from edgechat.core.errors import EdgechatError


@register
class Qwen3(Family):
    name = "qwen3"
    hf_architectures = ("Qwen3ForCausalLM",)
    hf_model_type = "qwen3"
    gguf_arch = "QWEN3"
    end_of_turn = ("<|im_end|>",)
    rms_norm_eps = 1e-6

    def features_from_hf(self, cfg: dict) -> dict:
        if cfg.get("use_sliding_window"):
            raise EdgechatError("Qwen3's use_sliding_window is not supported: edgechat runs Qwen3 with full "
                                "attention in every layer (as the released checkpoints are configured)")
        return {"qk_norm": True, "attention_bias": bool(cfg.get("attention_bias", False))}

    def config_to_hf(self, c: ModelConfig) -> dict:
        return {**super().config_to_hf(c), "attention_bias": c.attention_bias, "use_sliding_window": False}
