"""SmolLM3: Llama's block where every 4th layer has no RoPE (config.json's `no_rope_layers`, 1 = RoPE).
llama.cpp's smollm3 graph hard-codes that step of 4, so another pattern (a depth-pruned model's, say) is
refused for GGUF by name; torch and .pte take any pattern."""
from __future__ import annotations

from edgechat.core.archs import register
from edgechat.core.archs.family import Family
from edgechat.core.config import ModelConfig

LLAMA_CPP_NO_ROPE_STEP = 4  # llama_model_smollm3::load_arch_hparams: n_no_rope_layer_step = 4


def default_pattern(n_layers: int, interval: int = LLAMA_CPP_NO_ROPE_STEP) -> tuple[int, ...]:
    return tuple(int((i + 1) % interval != 0) for i in range(n_layers))


@register
class SmolLM3(Family):
    name = "smollm3"
    hf_architectures = ("SmolLM3ForCausalLM",)
    hf_model_type = "smollm3"
    gguf_arch = "SMOLLM3"
    end_of_turn = ("<|im_end|>",)
    permute_qk = True  # llama.cpp converts it as a LlamaModel (interleaved RoPE)
    rms_norm_eps = 1e-6

    def features_from_hf(self, cfg: dict) -> dict:
        n = cfg["num_hidden_layers"]
        pattern = cfg.get("no_rope_layers") or default_pattern(n, cfg.get("no_rope_layer_interval", 4))
        return {"no_rope_layers": tuple(int(x) for x in pattern), "attention_bias": bool(cfg.get("attention_bias", False))}

    def config_to_hf(self, c: ModelConfig) -> dict:
        return {**super().config_to_hf(c), "no_rope_layers": list(c.no_rope_layers),
                "no_rope_layer_interval": LLAMA_CPP_NO_ROPE_STEP, "attention_bias": c.attention_bias,
                "use_sliding_window": False}

    def features_from_gguf(self, meta: dict, fields: dict) -> dict:
        return {"no_rope_layers": default_pattern(fields["num_layers"])}  # the only pattern a GGUF holds

    def gguf_refusal(self, c: ModelConfig) -> str | None:
        if tuple(c.no_rope_layers) != default_pattern(c.num_layers):
            return (f"llama.cpp's smollm3 graph skips RoPE in every {LLAMA_CPP_NO_ROPE_STEP}th layer, and this "
                    f"model's no_rope_layers is {list(c.no_rope_layers)}")
        return super().gguf_refusal(c)
