"""The model configuration dataclass: the shape and the block features of the one Transformer. Its mapping to
and from Hugging Face config.json and GGUF metadata belongs to each family (edgechat.core.archs)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgechat.core.errors import EdgechatError


@dataclass
class ModelConfig:
    arch: str  # a registered family (edgechat.core.archs), e.g. "llama", "qwen2"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v biases (Qwen2)

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise EdgechatError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    @property
    def n_rep(self) -> int:
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def spec(self, name: str = "model"):
        """This shape as the planner's ModelSpec (targets/, which also counts tensors and parameters)."""
        from targets.model_spec import ModelSpec

        return ModelSpec.from_dict(dataclasses.asdict(self), name=name)

    def param_count(self) -> int:
        return self.spec().params()
