"""Phi-3 / Phi-3.5 / Phi-4-mini (Phi3ForCausalLM): fused qkv_proj and gate_up_proj in the checkpoint (split on
load into the one Transformer's projections, fused again for HF and GGUF), partial rotary (Phi-4-mini: 0.75
of each head), `longrope`/`su` scaling with short and long per-frequency factors and an attention factor.
llama.cpp's phi3 graph ropes half-split (no permutation), reads the factors from rope_factors_long/short and
picks the long ones when the context exceeds the original one; it disables Phi-3's sliding window, so a
window shorter than the context (Phi-3-mini-4k's 2047) is refused for GGUF by name."""
from __future__ import annotations

import numpy as np

from edgechat.core.archs import register
from edgechat.core.archs.family import Family
from edgechat.core.config import ModelConfig


@register
class Phi3(Family):
    name = "phi3"
    hf_architectures = ("Phi3ForCausalLM",)
    hf_model_type = "phi3"
    gguf_arch = "PHI3"
    end_of_turn = ("<|end|>",)
    rope_types = ("default", "longrope")
    # transformers sizes Phi-3's rotary factors by hidden / heads, and llama.cpp's converter its rope dims
    heads_span_hidden = True

    def features_from_hf(self, cfg: dict) -> dict:
        return {"sliding_window": self.window_from_hf(cfg)}

    def config_to_hf(self, c: ModelConfig) -> dict:
        out = {**super().config_to_hf(c), "sliding_window": c.sliding_window, "attention_bias": False,
               "partial_rotary_factor": c.partial_rotary_factor}
        if c.rope_type == "longrope":
            out["original_max_position_embeddings"] = c.rope_original_max_seq_len
        return out

    def from_checkpoint(self, tensors: dict, c: ModelConfig) -> dict:
        q, kv, ff = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
        out = {}
        for name, t in super().from_checkpoint(tensors, c).items():
            if name.endswith("self_attn.qkv_proj.weight"):
                for part, w in zip(("q_proj", "k_proj", "v_proj"), t.split([q, kv, kv], 0)):
                    out[name.replace("qkv_proj", part)] = w.contiguous()
            elif name.endswith("mlp.gate_up_proj.weight"):  # gate first, as Phi3MLP chunks it
                for part, w in zip(("gate_proj", "up_proj"), t.split([ff, ff], 0)):
                    out[name.replace("gate_up_proj", part)] = w.contiguous()
            else:
                out[name] = t
        return out

    def to_checkpoint(self, state: dict, c: ModelConfig) -> dict:
        import torch  # here, not at the top: every family module loads on first use (inspect stays torch-free)

        out = {}
        for name, t in state.items():
            if name.endswith("self_attn.q_proj.weight"):
                parts = [state[name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
                out[name.replace("q_proj", "qkv_proj")] = torch.cat(parts, 0)
            elif name.endswith("mlp.gate_proj.weight"):
                out[name.replace("gate_proj", "gate_up_proj")] = torch.cat([t, state[name.replace("gate_proj", "up_proj")]], 0)
            elif not any(name.endswith(s) for s in ("k_proj.weight", "v_proj.weight", "up_proj.weight")):
                out[name] = t
        return super().to_checkpoint(out, c)

    def write_gguf_config(self, w, c: ModelConfig) -> None:
        import gguf

        super().write_gguf_config(w, c)
        # 0 marks "no window" (llama.cpp's converter writes it so; its phi3 graph ignores windows anyway)
        w.add_sliding_window(c.sliding_window or 0)
        if c.rope_type == "longrope":
            w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
            w.add_rope_scaling_orig_ctx_len(c.rope_original_max_seq_len)
            w.add_rope_scaling_attn_factors(c.rope_attention_factor)

    def features_from_gguf(self, meta: dict, fields: dict) -> dict:
        return {"sliding_window": meta.get(self.key("Attention.SLIDING_WINDOW")) or None}  # 0: none

    # llama.cpp keeps the fused attn_qkv and ffn_up (gate and up), as the checkpoint has them
    def to_gguf_layout(self, state: dict, c: ModelConfig) -> dict:
        return self.to_checkpoint(state, c)

    def from_gguf_layout(self, state: dict, c: ModelConfig) -> dict:
        return self.from_checkpoint(state, c)

    def gguf_extra_tensors(self, c: ModelConfig):
        if c.rope_type == "longrope":
            yield "rope_factors_long.weight", np.array(c.rope_long_factor, dtype=np.float32)
            yield "rope_factors_short.weight", np.array(c.rope_short_factor, dtype=np.float32)
