"""The model configuration dataclass, and its mapping to and from Hugging Face config.json."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgechat.errors import EdgechatError

# HF architecture name -> our arch name. Anything else is refused by name.
HF_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
HF_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@dataclass
class ModelConfig:
    arch: str  # "llama" or "qwen2"
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
    attention_bias: bool = False  # Qwen2 has q/k/v biases

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise EdgechatError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    @property
    def n_rep(self) -> int:
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def param_count(self) -> int:
        d, f, v, hd = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        q, kv = self.num_heads * hd, self.num_kv_heads * hd
        attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if self.attention_bias else 0)
        layer = attn + 3 * d * f + 2 * d
        return v * d * (1 if self.tie_word_embeddings else 2) + self.num_layers * layer + d

    @classmethod
    def from_hf(cls, cfg: dict) -> "ModelConfig":
        archs = cfg.get("architectures") or [HF_MODEL_TYPES.get(cfg.get("model_type"), "")]
        arch_name = archs[0] if archs else ""
        if arch_name not in HF_ARCHITECTURES:
            raise EdgechatError(
                f"unsupported architecture {arch_name or '(none given)'!r}: edgechat supports "
                f"{', '.join(HF_ARCHITECTURES)}")
        rope = cfg.get("rope_parameters") or {}  # transformers 5 moved rope_theta here
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling:
            raise EdgechatError(f"unsupported rope scaling {scaling!r}: only plain RoPE is supported")
        arch = HF_ARCHITECTURES[arch_name]
        try:
            n_heads = cfg["num_attention_heads"]
            hidden = cfg["hidden_size"]
            return cls(
                arch=arch,
                vocab_size=cfg["vocab_size"],
                hidden_size=hidden,
                intermediate_size=cfg["intermediate_size"],
                num_layers=cfg["num_hidden_layers"],
                num_heads=n_heads,
                num_kv_heads=cfg.get("num_key_value_heads") or n_heads,
                head_dim=cfg.get("head_dim") or hidden // n_heads,
                max_seq_len=cfg.get("max_position_embeddings", 2048),
                rope_theta=float(cfg.get("rope_theta", rope.get("rope_theta", 10000.0))),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6 if arch == "qwen2" else 1e-5)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                attention_bias=arch == "qwen2" or bool(cfg.get("attention_bias", False)),
            )
        except KeyError as e:
            raise EdgechatError(f"config.json is missing the key {e.args[0]!r}") from None

    def to_hf(self, bos_id: int | None = None, eos_id: int | None = None) -> dict:
        cfg = {
            "architectures": [HF_MODEL_TYPES[self.arch]],
            "model_type": self.arch,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_seq_len,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        }
        if self.arch == "llama":
            cfg["attention_bias"] = self.attention_bias
            cfg["mlp_bias"] = False
        if bos_id is not None:
            cfg["bos_token_id"] = bos_id
        if eos_id is not None:
            cfg["eos_token_id"] = eos_id
        return cfg
