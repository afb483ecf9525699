"""Gemma 3 text (Gemma3ForCausalLM, 270M/1B; the text stack of the larger ones): embeddings scaled by
sqrt(hidden), RMSNorms of (1 + weight) with extra post-attention and pre/post-feed-forward norms, q/k norms,
GeGLU (tanh GELU), interleaved sliding-window (local RoPE base) and global layers, attention scaled by
query_pre_attn_scalar ** -0.5, tied head, <start_of_turn>/<end_of_turn> turns.
GGUF as llama.cpp's converter writes it: norm weights + 1 (its graph multiplies by the weight), the window,
the local base and (ours) the per-layer window pattern; llama.cpp scales attention by head_dim ** -0.5 (by
hidden / heads for the 27B only), so another query_pre_attn_scalar is refused for GGUF by name."""
from __future__ import annotations

import numpy as np

from edgechat.core.archs import register
from edgechat.core.archs.family import Family
from edgechat.core.config import ModelConfig
from edgechat.core.errors import EdgechatError


@register
class Gemma3(Family):
    name = "gemma3"
    hf_architectures = ("Gemma3ForCausalLM",)
    hf_model_type = "gemma3_text"
    gguf_arch = "GEMMA3"
    end_of_turn = ("<end_of_turn>",)
    rope_types = ("default", "linear")
    rms_norm_eps = 1e-6

    def features_from_hf(self, cfg: dict) -> dict:
        for cap in ("final_logit_softcapping", "attn_logit_softcapping"):
            if cfg.get(cap):
                raise EdgechatError(f"Gemma 3's {cap} ({cfg[cap]}) is not supported: Gemma 3 checkpoints set none")
        n = cfg["num_hidden_layers"]
        types = cfg.get("layer_types") or [
            "sliding_attention" if (i + 1) % cfg.get("sliding_window_pattern", 6) else "full_attention" for i in range(n)]
        local = (cfg.get("rope_parameters") or {}).get("sliding_attention", {}).get(
            "rope_theta", cfg.get("rope_local_base_freq", 10000.0))
        return {"qk_norm": True, "hidden_act": cfg.get("hidden_activation", "gelu_pytorch_tanh"),
                "norm_unit_offset": True, "sandwich_norms": True, "scale_embeddings": True,
                "query_pre_attn_scalar": float(cfg.get("query_pre_attn_scalar", 256)),
                "sliding_window": cfg.get("sliding_window", 4096), "layer_types": tuple(types),
                "rope_local_theta": float(local)}

    def config_from_hf(self, cfg: dict) -> ModelConfig:
        return super().config_from_hf({"tie_word_embeddings": True, **cfg})

    def config_to_hf(self, c: ModelConfig) -> dict:
        out = super().config_to_hf(c)
        out.pop("hidden_act")
        qpas = c.query_pre_attn_scalar
        out.update(hidden_activation=c.hidden_act, query_pre_attn_scalar=int(qpas) if qpas == int(qpas) else qpas,
                   sliding_window=c.sliding_window, layer_types=list(c.layer_types), attention_bias=False,
                   final_logit_softcapping=None, attn_logit_softcapping=None,
                   rope_parameters={"full_attention": self.rope_to_hf(c),
                                    "sliding_attention": {"rope_type": "default", "rope_theta": c.rope_local_theta}})
        return out

    def gguf_refusal(self, c: ModelConfig) -> str | None:
        if c.query_pre_attn_scalar != c.head_dim:
            return (f"llama.cpp's gemma3 graph scales attention by head_dim ** -0.5, and this model's "
                    f"query_pre_attn_scalar is {c.query_pre_attn_scalar:g} (head_dim {c.head_dim})")
        return None

    def write_gguf_config(self, w, c: ModelConfig) -> None:
        super().write_gguf_config(w, c)
        w.add_sliding_window(c.sliding_window)
        w.add_sliding_window_pattern([t == "sliding_attention" for t in c.layer_types])
        w.add_rope_freq_base_swa(c.rope_local_theta)

    def gguf_tensor_data(self, hf_name: str, arr: np.ndarray) -> np.ndarray:
        return arr + 1.0 if hf_name.endswith("norm.weight") else arr  # (1 + weight) folded in

    def from_gguf_tensor_data(self, hf_name: str, arr: np.ndarray) -> np.ndarray:
        return arr - 1.0 if hf_name.endswith("norm.weight") else arr

    def features_from_gguf(self, meta: dict, fields: dict) -> dict:
        n = fields["num_layers"]
        # llama.cpp's defaults where its converter wrote no pattern or local base: every 6th layer global, 10000
        pattern = meta.get(self.key("Attention.SLIDING_WINDOW_PATTERN"))
        sliding = [bool(x) for x in pattern] if isinstance(pattern, list) and len(pattern) == n else \
            [(i + 1) % 6 != 0 for i in range(n)]
        return {"hidden_act": "gelu_pytorch_tanh", "norm_unit_offset": True, "sandwich_norms": True,
                "scale_embeddings": True, "query_pre_attn_scalar": float(fields["head_dim"]),  # llama.cpp's scale
                "sliding_window": int(meta.get(self.key("Attention.SLIDING_WINDOW"), 4096)),
                "layer_types": tuple("sliding_attention" if s else "full_attention" for s in sliding),
                "rope_local_theta": float(meta.get(self.key("Rope.FREQ_BASE_SWA"), 10000.0))}
