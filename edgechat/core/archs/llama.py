"""Llama 2/3.x (and SmolLM2, which is Llama-shaped): no biases, tied or untied head; Llama 3.1/3.2's `llama3`
RoPE scaling (GGUF: the rope_freqs tensor, base Family.gguf_extra_tensors) and linear scaling."""
from __future__ import annotations

from edgechat.core.archs import register
from edgechat.core.archs.family import Family
from edgechat.core.config import ModelConfig


@register
class Llama(Family):
    name = "llama"
    hf_architectures = ("LlamaForCausalLM",)
    hf_model_type = "llama"
    gguf_arch = "LLAMA"
    end_of_turn = ("<|eot_id|>", "<|im_end|>")  # Llama 3's, and the ChatML of SmolLM2 and other fine-tunes
    permute_qk = True
    rope_types = ("default", "linear", "llama3")

    def config_to_hf(self, c: ModelConfig) -> dict:
        return {**super().config_to_hf(c), "attention_bias": c.attention_bias, "mlp_bias": False}
