"""Mistral (MistralForCausalLM): Llama's block with an optional sliding window over every layer. llama.cpp
converts it as `llama`, whose graph has no sliding window: such a config is refused for GGUF by name
(Family.gguf_refusal); the torch engine and the .pte (a windowed mask into custom_sdpa) run it."""
from __future__ import annotations

from edgechat.core.archs import register
from edgechat.core.archs.llama import Llama
from edgechat.core.config import ModelConfig


@register
class Mistral(Llama):
    name = "mistral"
    hf_architectures = ("MistralForCausalLM",)
    hf_model_type = "mistral"
    end_of_turn = ("</s>",)  # [INST] ... [/INST] reply</s>
    rope_types = ("default",)

    def features_from_hf(self, cfg: dict) -> dict:
        return {"sliding_window": self.window_from_hf(cfg)}

    def config_to_hf(self, c: ModelConfig) -> dict:
        return {**super().config_to_hf(c), "sliding_window": c.sliding_window}
