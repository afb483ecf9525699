"""RoPE scaling (linear, Llama 3, Phi-3's longrope) as config.json, ModelConfig and a GGUF spell it: the
mapping every family shares through `Family` (not a family itself)."""
from __future__ import annotations

import math

from edgechat.core.config import ModelConfig
from edgechat.core.errors import EdgechatError


def from_hf(rope: dict, cfg: dict, rope_types: tuple[str, ...], arch: str) -> dict:
    """ModelConfig's RoPE fields from config.json's RoPE parameters; a type not in rope_types is refused."""
    kind = rope.get("rope_type") or rope.get("type") or "default"
    kind = {"su": "longrope"}.get(kind, kind)
    if kind not in rope_types:
        raise EdgechatError(f"unsupported rope type {kind!r} for {arch}: edgechat supports {', '.join(rope_types)}")
    out = {"rope_type": kind,
           "partial_rotary_factor": float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)))}
    orig = rope.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    if kind == "linear":
        out["rope_factor"] = float(rope["factor"])
    elif kind == "llama3":
        out.update(rope_factor=float(rope["factor"]), rope_low_freq_factor=float(rope["low_freq_factor"]),
                   rope_high_freq_factor=float(rope["high_freq_factor"]), rope_original_max_seq_len=int(orig))
    elif kind == "longrope":
        factor = rope.get("factor") or cfg.get("max_position_embeddings", orig) / orig
        attn = rope.get("attention_factor")
        if attn is None:  # the LongRoPE paper's default, as transformers and llama.cpp's converter take it
            attn = math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1 else 1.0
        out.update(rope_short_factor=tuple(map(float, rope["short_factor"])),
                   rope_long_factor=tuple(map(float, rope["long_factor"])), rope_original_max_seq_len=int(orig),
                   rope_attention_factor=float(attn))
    return out


def to_hf(c: ModelConfig) -> dict:
    """config.json's rope_parameters for ModelConfig c."""
    out = {"rope_theta": c.rope_theta, "rope_type": c.rope_type}
    if c.partial_rotary_factor != 1.0:
        out["partial_rotary_factor"] = c.partial_rotary_factor
    if c.rope_type == "linear":
        out["factor"] = c.rope_factor
    elif c.rope_type == "llama3":
        out.update(factor=c.rope_factor, low_freq_factor=c.rope_low_freq_factor,
                   high_freq_factor=c.rope_high_freq_factor,
                   original_max_position_embeddings=c.rope_original_max_seq_len)
    elif c.rope_type == "longrope":
        out.update(short_factor=list(c.rope_short_factor), long_factor=list(c.rope_long_factor),
                   original_max_position_embeddings=c.rope_original_max_seq_len,
                   attention_factor=c.rope_attention_factor)
    return out


def from_gguf(meta: dict, names: set, read, fields: dict, key) -> dict:
    """The RoPE scaling fields, as llama.cpp reads them: linear from the metadata, Llama 3's from the
    rope_freqs divisors, longrope from rope_factors_long/short and the original context. key(path): the
    family's metadata key; read(name): a tensor's values (None when only the header is read)."""
    import gguf

    dim = int(fields["head_dim"] * fields["partial_rotary_factor"])
    kind = meta.get(key("Rope.SCALING_TYPE"))
    if kind == gguf.RopeScalingType.LINEAR.value:
        return {"rope_type": "linear", "rope_factor": float(meta[key("Rope.SCALING_FACTOR")])}
    if "rope_factors_long.weight" in names:
        out = {"rope_type": "longrope", "rope_original_max_seq_len": int(meta[key("Rope.SCALING_ORIG_CTX_LEN")]),
               "rope_attention_factor": float(meta.get(key("Rope.SCALING_ATTN_FACTOR"), 1.0))}
        if read is not None:
            out.update(rope_long_factor=tuple(read("rope_factors_long.weight").tolist()),
                       rope_short_factor=tuple(read("rope_factors_short.weight").tolist()))
        return out
    if "rope_freqs.weight" in names:
        if read is None:
            return {"rope_type": "llama3"}
        from edgechat.core.rope import llama3_from_divisors

        fit = llama3_from_divisors(read("rope_freqs.weight"), dim, fields["rope_theta"])
        if fit is None:
            raise EdgechatError(f"the GGUF's rope_freqs tensor is not Llama 3's RoPE scaling of these dimensions "
                                f"({dim}, base {fields['rope_theta']:g}): edgechat reads llama3 rope_freqs only")
        return fit
    return {}
