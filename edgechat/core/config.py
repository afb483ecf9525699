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
    # -- block features, each switched on by a family's config mapping (defaults: plain Llama) --------------
    # RoPE: "default", "linear" (factor), "llama3" (factor, low/high frequency factors, original context),
    # "longrope" (Phi-3's short/long per-frequency factors, original context, attention factor)
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int = 0
    rope_short_factor: tuple[float, ...] = ()
    rope_long_factor: tuple[float, ...] = ()
    rope_attention_factor: float = 1.0  # cos/sin multiplier (longrope)
    partial_rotary_factor: float = 1.0  # the rotated fraction of head_dim (Phi-4-mini: 0.75)
    rope_local_theta: float | None = None  # RoPE base of the sliding-window layers (Gemma 3)
    no_rope_layers: tuple[int, ...] = ()  # per layer, 1: RoPE, 0: none (SmolLM3's encoding); () = all RoPE
    sliding_window: int | None = None  # attend to the last N positions, in the layers layer_types marks
    layer_types: tuple[str, ...] = ()  # per layer "sliding_attention" | "full_attention"; () = all full
    qk_norm: bool = False  # per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3)
    hidden_act: str = "silu"  # "silu" (SwiGLU) | "gelu_pytorch_tanh" (GeGLU, Gemma)
    norm_unit_offset: bool = False  # RMSNorm scales by (1 + weight) (Gemma)
    sandwich_norms: bool = False  # extra post-attention and pre/post-feed-forward norms (Gemma 3)
    scale_embeddings: bool = False  # embeddings times sqrt(hidden_size) (Gemma)
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5 instead of head_dim ** -0.5

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise EdgechatError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    @property
    def rope_dim(self) -> int:
        """How many of each head's dimensions RoPE rotates."""
        return int(self.head_dim * self.partial_rotary_factor)

    def layer_uses_rope(self, i: int) -> bool:
        return not self.no_rope_layers or bool(self.no_rope_layers[i])

    def layer_window(self, i: int) -> int | None:
        """The sliding window of layer i, or None where it attends to everything before it."""
        if self.sliding_window is None:
            return None
        return self.sliding_window if not self.layer_types or self.layer_types[i] == "sliding_attention" else None

    def keep_layers(self, kept: list[int]) -> "ModelConfig":
        """This config with only the given layers (in order): the per-layer patterns follow them."""
        pick = lambda seq: tuple(seq[i] for i in kept) if seq else ()  # noqa: E731
        return self.replace(num_layers=len(kept), layer_types=pick(self.layer_types),
                            no_rope_layers=pick(self.no_rope_layers))

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
