"""The one torch implementation of the decoder architecture (Llama, Qwen2) that every converter and the
torch reference engine use. Parameter names follow Hugging Face so checkpoints map one to one."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgechat.core.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(cfg: ModelConfig, positions: torch.Tensor):
    """cos/sin for the half-split (Hugging Face) rotary layout, computed in float32 as transformers does."""
    idx = torch.arange(0, cfg.head_dim, 2, dtype=torch.int64, device=positions.device)
    inv_freq = 1.0 / (cfg.rope_theta ** (idx.float() / cfg.head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


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
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        self.kv_cache: KVCache | None = None

    def project(self, x, cos, sin):
        """q, k, v as [B, heads, T, head_dim], RoPE applied (shared with the export-time attentions)."""
        b, t, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin, start_pos: int | None):
        b, t, _ = x.shape
        cfg = self.cfg
        q, k, v = self.project(x, cos, sin)
        if start_pos is None:  # whole sequence, no cache
            mask, causal = None, True
        else:
            k, v = self.kv_cache.update(start_pos, k, v)
            q_pos = torch.arange(start_pos, start_pos + t, device=x.device)[:, None]
            mask, causal = torch.arange(k.shape[2], device=x.device)[None, :] <= q_pos, False
        if cfg.n_rep > 1:
            k = k.repeat_interleave(cfg.n_rep, dim=1)
            v = v.repeat_interleave(cfg.n_rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, start_pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, start_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # weights always come from a checkpoint: skip the random init, whose first call imports torch._dynamo
        # (~2 s per process)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    """state_dict keys are exactly Hugging Face's ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def setup_cache(self, max_len: int):
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(self.cfg.num_kv_heads, max_len, self.cfg.head_dim)

    def forward(self, tokens: torch.Tensor, start_pos: int | None = None, hidden: bool = False):
        """tokens [B, T] -> logits [B, T, vocab]. start_pos=None runs without a cache (batch allowed);
        an int writes the cache at [start_pos, start_pos+T) and attends to everything before it."""
        t = tokens.shape[1]
        pos0 = 0 if start_pos is None else start_pos
        cos, sin = rope_tables(self.cfg, torch.arange(pos0, pos0 + t, device=tokens.device))
        x = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            x = layer(x, cos, sin, start_pos)
        x = self.model.norm(x)
        return x if hidden else self.lm_head(x)
