"""The one torch implementation of the decoder architecture that every converter and the torch reference
engine use; each family (edgechat.core.archs) switches its features on through the config: RoPE scaling
(llama3, longrope, linear), partial rotary, layers without RoPE, sliding-window layers with their own RoPE
base, q/k norms, GeGLU, Gemma's (1 + weight) norms, sandwich norms and embedding scale, the attention scale.
Parameter names follow Hugging Face so checkpoints map one to one."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgechat.core.config import ModelConfig


class RMSNorm(nn.Module):
    """Llama's RMSNorm (weight * norm(x)), or Gemma's (norm(x) * (1 + weight), weights stored as offsets)."""

    def __init__(self, dim: int, eps: float, unit_offset: bool = False):
        super().__init__()
        self.eps, self.unit_offset = eps, unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            return (x * (1.0 + self.weight.float())).to(dtype)
        return self.weight * x.to(dtype)


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


def attention_mask(q_pos: torch.Tensor, k_len: int, window: int | None) -> torch.Tensor:
    """[T, k_len] bool: causal, and within the sliding window (distance < window, as transformers and
    llama.cpp count it) where there is one."""
    k_pos = torch.arange(k_len, device=q_pos.device)[None, :]
    mask = k_pos <= q_pos[:, None]
    if window is not None:
        mask = mask & (q_pos[:, None] - k_pos < window)
    return mask


class KVCache(nn.Module):
    """Static per-layer cache for batch 1: positions [0, max_len)."""

    def __init__(self, n_kv_heads: int, max_len: int, head_dim: int):
        super().__init__()
        self.register_buffer("k_cache", torch.zeros(1, n_kv_heads, max_len, head_dim), persistent=False)
        self.register_buffer("v_cache", torch.zeros(1, n_kv_heads, max_len, head_dim), persistent=False)

    def update(self, start_pos: int, k, v):
        end = start_pos + k.shape[2]
        self.k_cache[:, :, start_pos:end] = k
        self.v_cache[:, :, start_pos:end] = v
        return self.k_cache[:, :, :end], self.v_cache[:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.window = window
        self.scale = cfg.query_pre_attn_scalar ** -0.5 if cfg.query_pre_attn_scalar else None
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg.norm_unit_offset)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg.norm_unit_offset)
        self.kv_cache: KVCache | None = None

    def project(self, x, cos, sin, heads_dim: int = 2):
        """q, k, v with q/k norms and RoPE applied (cos None: a layer without RoPE). heads_dim 1 gives
        [B, heads, T, head_dim] (ours), 2 gives [B, T, heads, head_dim] (ExecuTorch's fused ops)."""
        b, t, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(b, t, cfg.num_heads, cfg.head_dim)
        k = self.k_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = self.v_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if heads_dim == 1:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def forward(self, x, cos, sin, start_pos: int | None):
        b, t, _ = x.shape
        cfg = self.cfg
        q, k, v = self.project(x, cos, sin, heads_dim=1)
        pos0 = 0 if start_pos is None else start_pos
        if start_pos is not None:
            k, v = self.kv_cache.update(start_pos, k, v)
        if start_pos is None and self.window is None:  # whole sequence, no cache
            mask, causal = None, True
        else:
            mask, causal = attention_mask(torch.arange(pos0, pos0 + t, device=x.device), k.shape[2], self.window), False
        if cfg.n_rep > 1:
            k = k.repeat_interleave(cfg.n_rep, dim=1)
            v = v.repeat_interleave(cfg.n_rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


def activation(name: str):
    if name == "gelu_pytorch_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return F.silu


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block; with sandwich_norms (Gemma 3) the attention and MLP outputs are normed too, and
    post_attention_layernorm is the attention's output norm (pre_feedforward_layernorm the MLP's input)."""

    def __init__(self, cfg: ModelConfig, i: int = 0):
        super().__init__()
        eps, off = cfg.rms_norm_eps, cfg.norm_unit_offset
        self.rope_kind = layer_rope_kinds(cfg)[i]
        self.sandwich = cfg.sandwich_norms
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps, off)
        self.self_attn = Attention(cfg, cfg.layer_window(i))
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps, off)
        if self.sandwich:
            self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, eps, off)
            self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, eps, off)
        self.mlp = MLP(cfg)

    def forward(self, x, rope: dict, start_pos):
        """rope: {"global": (cos, sin), "local": (cos, sin)}; this layer takes its own (or none)."""
        cos, sin = rope[self.rope_kind] if self.rope_kind else (None, None)
        if self.sandwich:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, start_pos))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, start_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg_scale = cfg.hidden_size ** 0.5 if cfg.scale_embeddings else None
        # weights always come from a checkpoint: skip the random init, whose first call imports torch._dynamo
        # (~2 s per process)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.norm_unit_offset)

    def embed(self, tokens):
        x = self.embed_tokens(tokens)
        if self.cfg_scale is not None:  # Gemma: sqrt(hidden) rounded to the weights' dtype, as transformers does
            x = x * torch.tensor(self.cfg_scale, dtype=x.dtype)
        return x


class Transformer(nn.Module):
    """state_dict keys are exactly Hugging Face's ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.context = 0  # the cache's length once set up (longrope picks its factors by it)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def setup_cache(self, max_len: int):
        self.context = max_len
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(self.cfg.num_kv_heads, max_len, self.cfg.head_dim)

    def forward(self, tokens: torch.Tensor, start_pos: int | None = None, hidden: bool = False):
        """tokens [B, T] -> logits [B, T, vocab]. start_pos=None runs without a cache (batch allowed);
        an int writes the cache at [start_pos, start_pos+T) and attends to everything before it."""
        x, rope = self.embed_and_rope(tokens, start_pos)
        for layer in self.model.layers:
            x = layer(x, rope, start_pos)
        x = self.model.norm(x)
        return x if hidden else self.lm_head(x)

    def embed_and_rope(self, tokens: torch.Tensor, start_pos: int | None = None) -> tuple[torch.Tensor, dict]:
        """The first layer's input and the RoPE tables every layer takes (for callers that run the layers
        themselves, e.g. pruning's removal trials)."""
        t = tokens.shape[1]
        pos0 = 0 if start_pos is None else start_pos
        positions = torch.arange(pos0, pos0 + t, device=tokens.device)
        context = self.context if start_pos is not None else t
        rope = {"global": rope_tables(self.cfg, positions, context=context)}
        if self.cfg.rope_local_theta is not None:
            rope["local"] = rope_tables(self.cfg, positions, local=True)
        return self.model.embed(tokens), rope
