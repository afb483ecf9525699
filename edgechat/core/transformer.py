"""The one torch implementation of the decoder architecture that every converter and the torch reference
engine use; each family (edgechat.core.archs) switches its features on through the config: RoPE scaling
(llama3, longrope, linear), partial rotary, layers without RoPE, sliding-window layers with their own RoPE
base, q/k norms, GeGLU, Gemma's (1 + weight) norms, sandwich norms and embedding scale, the attention scale.
Parameter names follow Hugging Face so checkpoints map one to one."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgechat.core.config import ModelConfig
from edgechat.core.rope import apply_rope, layer_rope_kinds, rope_tables


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
