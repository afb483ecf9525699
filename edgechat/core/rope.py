"""Rotary position embeddings as every family uses them: the inverse frequencies with their scaling (Llama 3,
Phi-3's longrope, linear), the cos/sin tables of the half-split (Hugging Face) layout, which layers take which
table, and the rotation itself. Shared by the torch Transformer, the ExecuTorch modules and the loaders that
recover a family's RoPE parameters from a GGUF."""
from __future__ import annotations

import math

import torch

from edgechat.core.config import ModelConfig


def rope_freq_factors(cfg: ModelConfig, long: bool = False) -> torch.Tensor | None:
    """The per-frequency divisors of the global layers' RoPE (None: plain RoPE). The same numbers llama.cpp
    reads from a GGUF's rope_freqs (Llama 3) or rope_factors_long/short (Phi-3) tensors."""
    if cfg.rope_type == "longrope":
        return torch.tensor(cfg.rope_long_factor if long else cfg.rope_short_factor, dtype=torch.float32)
    if cfg.rope_type != "llama3":
        return None
    return llama3_divisors(cfg.rope_dim, cfg.rope_theta, cfg.rope_factor, cfg.rope_low_freq_factor,
                           cfg.rope_high_freq_factor, cfg.rope_original_max_seq_len)


def llama3_divisors(dim: int, theta: float, factor: float, low: float, high: float, old: float) -> torch.Tensor:
    """Llama 3.1's RoPE scaling: wavelengths shorter than old / high kept, longer than old / low divided by
    factor, smoothly between (transformers' _compute_llama3_parameters)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    smooth = (old / wavelen - low) / (high - low)
    medium = 1 / ((1 - smooth) / factor + smooth)
    return torch.where(wavelen < high_wavelen, 1.0, torch.where(wavelen > low_wavelen, factor, medium)).float()


def llama3_from_divisors(divisors, dim: int, theta: float) -> dict | None:
    """Llama 3 RoPE parameters (ModelConfig fields) that give these divisors (a GGUF's rope_freqs), or None
    when none do. The divisors fix old / low and old / high only, so low_freq_factor is taken as 1 (every
    Llama 3.x sets it so): the same RoPE whatever the scale. Without two divisors between 1 and the factor,
    the band edges are only bounded, and are put between the neighbouring wavelengths. The original context
    is a whole number (transformers' config wants one), so the result is checked against the divisors."""
    d = torch.tensor([float(x) for x in divisors], dtype=torch.float64)
    factor = float(d.max())
    wavelen = (2 * math.pi * theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))[:len(d)]
    if len(d) != dim // 2 or factor <= 1.0:
        return None
    tol = 1e-5 * factor
    mid = (d > 1 + tol) & (d < factor - tol)
    candidates = []
    if int(mid.sum()) >= 2:  # smooth = A / wavelen + B, with A = old / (high - low), B = -low / (high - low)
        s = (1 / d[mid] - 1 / factor) / (1 - 1 / factor)
        x = torch.stack([1 / wavelen[mid], torch.ones(int(mid.sum()), dtype=torch.float64)], 1)
        a, b = torch.linalg.lstsq(x, s[:, None]).solution[:, 0].tolist()
        if b < 0:
            high, old = 1 - 1 / b, -a / b
            candidates = [(round(old), round(high, 4)), (round(old), high)]
    elif not mid.any():
        ones, scaled = wavelen[d <= 1 + tol], wavelen[d >= factor - tol]
        below = float(ones.max()) if len(ones) else float(scaled.min()) / 2
        above = float(scaled.min())
        high_wl, low_wl = below ** (2 / 3) * above ** (1 / 3), below ** (1 / 3) * above ** (2 / 3)
        candidates = [(round(low_wl), round(low_wl) / high_wl)]
    for old, high in candidates:
        if high > 1 and old > 0 and torch.allclose(llama3_divisors(dim, theta, factor, 1.0, high, old).double(), d,
                                                   rtol=1e-5, atol=0):
            return {"rope_type": "llama3", "rope_factor": factor, "rope_low_freq_factor": 1.0,
                    "rope_high_freq_factor": float(high), "rope_original_max_seq_len": old}
    return None


def rope_tables(cfg: ModelConfig, positions: torch.Tensor, local: bool = False, context: int = 0):
    """cos/sin [T, rope_dim] for the half-split (Hugging Face) rotary layout, computed in float32 as
    transformers does. local: the sliding-window layers' base (Gemma 3), unscaled. context: the longest
    sequence this run holds; longrope uses its long factors beyond the original context (as llama.cpp picks
    them by n_ctx, and transformers by the sequence length of a whole-sequence forward)."""
    dim = cfg.rope_dim
    idx = torch.arange(0, dim, 2, dtype=torch.int64, device=positions.device)
    base = cfg.rope_local_theta if local and cfg.rope_local_theta else cfg.rope_theta
    inv_freq = 1.0 / (base ** (idx.float() / dim))
    scale = 1.0
    if not local:
        factors = rope_freq_factors(cfg, long=context > cfg.rope_original_max_seq_len)
        if factors is not None:
            inv_freq = inv_freq / factors.to(positions.device)
        if cfg.rope_type == "linear":
            inv_freq = inv_freq / cfg.rope_factor
        scale = cfg.rope_attention_factor
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * scale, emb.sin() * scale


def layer_rope_kinds(cfg: ModelConfig) -> list[str | None]:
    """Per layer: which RoPE table it uses ("global", "local") or None (no RoPE, SmolLM3)."""
    out = []
    for i in range(cfg.num_layers):
        if not cfg.layer_uses_rope(i):
            out.append(None)
        else:
            local = cfg.rope_local_theta is not None and cfg.layer_window(i) is not None
            out.append("local" if local else "global")
    return out


def apply_rope(x, cos, sin):
    """Rotate the first cos.shape[-1] dims of each head (all of them unless partial rotary), half-split."""
    rot = cos.shape[-1]
    if rot < x.shape[-1]:
        return torch.cat((apply_rope(x[..., :rot], cos, sin), x[..., rot:]), dim=-1)
    half = rot // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
