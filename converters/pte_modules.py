"""Source transforms that make edgechat's one Transformer exportable to ExecuTorch with the fused LLM ops.

Why our module and not ExecuTorch's own Llama (examples.models.llama): the torch reference engine, the GGUF
writer and this exporter then share one architecture and one state dict, with no renaming, no Q/K
permutation (we keep the Hugging Face half-split RoPE on both sides), and every family's block features
(q/k norms, partial rotary, layers without RoPE, sliding windows, GeGLU, Gemma's norms) for free.
What ExecuTorch's Llama adds over ours is only its swappable SDPA/KV-cache modules; those are small and are
replaced here the way ExecuTorch's own source transforms do it (source_transformation/sdpa.py SDPACustom +
custom_kv_cache.py CustomKVCache): the same ops, `llama::update_cache` into a [B, S, H, D] static cache and
`llama::custom_sdpa` (GQA-aware, causal from start_pos, so no repeat_interleave and no mask). Everything
downstream (torchao quantize_ configs, the quantized embedding, the XNNPACK partitioners, the metadata
methods) is ExecuTorch's own code, called from converters.pte_export.

The layers keep our DecoderLayer and RMSNorm unchanged; only Attention (and optionally MLP) modules are
swapped, on a deep copy, so the caller's model is left as it was.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgechat.core.config import ModelConfig
from edgechat.core.rope import apply_rope, rope_tables
from edgechat.core.transformer import Attention, KVCache, MLP, RMSNorm, Transformer, attention_mask


def _fused_linear(linears: list[nn.Linear]) -> nn.Linear:
    """One nn.Linear whose output rows are the given linears' rows, in order (one matmul instead of many)."""
    out = sum(l.out_features for l in linears)
    has_bias = linears[0].bias is not None
    fused = nn.Linear(linears[0].in_features, out, bias=has_bias)
    with torch.no_grad():
        fused.weight = nn.Parameter(torch.cat([l.weight.detach() for l in linears], 0).clone(), requires_grad=False)
        if has_bias:
            fused.bias = nn.Parameter(torch.cat([l.bias.detach() for l in linears], 0).clone(), requires_grad=False)
    return fused


class FusedAttention(nn.Module):
    """Attention over ExecuTorch's fused ops: K/V written in place with llama::update_cache, attention by
    llama::custom_sdpa reading the cache up to start_pos + T. Tensors stay in [B, T, H, D] throughout.
    A sliding-window layer passes custom_sdpa an additive [T, max_seq_len] mask (causal and windowed)
    instead of its causal flag; the attention scale (Gemma's query_pre_attn_scalar) is custom_sdpa's own."""

    def __init__(self, attn: Attention, max_seq_len: int, fuse_qkv: bool):
        super().__init__()
        cfg = attn.cfg
        self.n_heads, self.n_kv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.fuse_qkv = fuse_qkv
        self.window, self.scale, self.max_seq_len = attn.window, attn.scale, max_seq_len
        if fuse_qkv:
            self.qkv_proj = _fused_linear([attn.q_proj, attn.k_proj, attn.v_proj])
        else:
            self.q_proj, self.k_proj, self.v_proj = attn.q_proj, attn.k_proj, attn.v_proj
        self.qk_norm = cfg.qk_norm
        if self.qk_norm:
            self.q_norm, self.k_norm = ExportRMSNorm(attn.q_norm), ExportRMSNorm(attn.k_norm)
        self.o_proj = attn.o_proj
        shape = (1, max_seq_len, self.n_kv, self.hd)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def forward(self, x, cos, sin, start_pos):
        b, t, _ = x.shape
        # cos, sin: [T, 1, D] (ExportModel unsqueezes them once), against [B, T, H, D]; None: no RoPE here
        if self.fuse_qkv:  # one matmul, and (without q/k norms) RoPE once over the q and k heads together
            qkv = self.qkv_proj(x).view(b, t, self.n_heads + 2 * self.n_kv, self.hd)
            qk, v = qkv.split([self.n_heads + self.n_kv, self.n_kv], 2)
            if self.qk_norm or cos is None:
                q, k = qk.split([self.n_heads, self.n_kv], 2)
            else:
                q, k = apply_rope(qk, cos, sin).split([self.n_heads, self.n_kv], 2)
                cos = None
        else:
            q = self.q_proj(x).view(b, t, self.n_heads, self.hd)
            k = self.k_proj(x).view(b, t, self.n_kv, self.hd)
            v = self.v_proj(x).view(b, t, self.n_kv, self.hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        torch.ops.llama.update_cache(k, self.k_cache, start_pos)
        torch.ops.llama.update_cache(v, self.v_cache, start_pos)
        if self.window is None:
            out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start_pos, None, 0.0, True, self.scale)
        else:
            keep = attention_mask(torch.arange(t) + start_pos, self.max_seq_len, self.window)
            mask = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
            out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start_pos, mask, 0.0, False, self.scale)
        return self.o_proj(out.reshape(b, t, -1))


class PlainAttention(Attention):
    """The unfused baseline: our own Attention (index_put into a [B, H, S, D] cache, repeat_interleave for
    GQA, masked SDPA), with the cache kept full-size so shapes stay static for export."""

    def __init__(self, attn: Attention, max_seq_len: int):
        nn.Module.__init__(self)
        self.cfg, self.window, self.scale = attn.cfg, attn.window, attn.scale
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        if self.cfg.qk_norm:
            self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.kv_cache = KVCache(self.cfg.num_kv_heads, max_seq_len, self.cfg.head_dim)
        self.max_seq_len = max_seq_len

    def forward(self, x, cos, sin, start_pos):
        b, t, _ = x.shape
        cfg = self.cfg
        q, k, v = self.project(x, cos, sin, heads_dim=1)
        idx = torch.arange(t) + start_pos
        self.kv_cache.k_cache.index_copy_(2, idx, k)
        self.kv_cache.v_cache.index_copy_(2, idx, v)
        k, v = self.kv_cache.k_cache, self.kv_cache.v_cache
        mask = attention_mask(idx, self.max_seq_len, self.window)
        if cfg.n_rep > 1:
            k = k.repeat_interleave(cfg.n_rep, dim=1)
            v = v.repeat_interleave(cfg.n_rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class ExportRMSNorm(nn.Module):
    """transformer.RMSNorm without its dtype round trip (a no-op in fp32 that still costs two graph nodes per
    norm in every export pass); the same operations in the same order, so the same float32 results."""

    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.eps, self.weight, self.unit_offset = norm.eps, norm.weight, norm.unit_offset

    def forward(self, x):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * (1.0 + self.weight) if self.unit_offset else self.weight * x


class FusedMLP(nn.Module):
    """gate_proj and up_proj as one matmul."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.inter = mlp.gate_proj.out_features
        self.gate_up_proj = _fused_linear([mlp.gate_proj, mlp.up_proj])
        self.down_proj = mlp.down_proj
        self.act = mlp.act

    def forward(self, x):
        gate, up = self.gate_up_proj(x).split([self.inter, self.inter], -1)
        return self.down_proj(self.act(gate) * up)


class ExportModel(nn.Module):
    """forward(tokens [1, T] int64, input_pos [1] int64) -> logits, the signature ExecuTorch's LLM runner
    calls. RoPE tables are precomputed for every position (the same float32 computation as the reference)
    and sliced at input_pos. last_only: logits of the last position [1, V] (what a chat needs); else
    [1, T, V] (for evaluation)."""

    def __init__(self, module: Transformer, max_seq_len: int, last_only: bool = True):
        super().__init__()
        self.cfg: ModelConfig = module.cfg
        self.max_seq_len = max_seq_len
        self.last_only = last_only
        self.model, self.lm_head = module.model, module.lm_head
        self.fused_layout = isinstance(module.model.layers[0].self_attn, FusedAttention)
        # the context is max_seq_len: longrope's factors are chosen by it, as llama.cpp chooses them by n_ctx
        cos, sin = rope_tables(self.cfg, torch.arange(max_seq_len), context=max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=True)
        self.register_buffer("rope_sin", sin, persistent=True)
        self.local = self.cfg.rope_local_theta is not None
        if self.local:
            cos, sin = rope_tables(self.cfg, torch.arange(max_seq_len), local=True)
            self.register_buffer("rope_local_cos", cos, persistent=True)
            self.register_buffer("rope_local_sin", sin, persistent=True)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + t <= self.max_seq_len)
        tables = {"global": (self.rope_cos, self.rope_sin)}
        if self.local:
            tables["local"] = (self.rope_local_cos, self.rope_local_sin)
        rope = {}
        for kind, (cos, sin) in tables.items():
            cos, sin = cos.narrow(0, start, t), sin.narrow(0, start, t)
            if self.fused_layout:  # FusedAttention keeps [B, T, H, D]: broadcast over heads
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            rope[kind] = (cos, sin)
        x = self.model.embed(tokens)
        for layer in self.model.layers:
            x = layer(x, rope, start)
        x = self.model.norm(x)
        if self.last_only:
            x = x[:, -1, :]
        return self.lm_head(x)


def export_module(module: Transformer, max_seq_len: int, fused_ops: bool = True, fuse_qkv: bool = True,
                  fuse_mlp: bool = True) -> Transformer:
    """A deep copy of `module` with every layer's attention (and MLP) swapped for the export versions."""
    if fused_ops:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers torch.ops.llama.*)
    module = copy.deepcopy(module).eval().requires_grad_(False)
    for layer in module.model.layers:
        attn = layer.self_attn
        layer.self_attn = FusedAttention(attn, max_seq_len, fuse_qkv) if fused_ops else PlainAttention(attn, max_seq_len)
        if fuse_mlp:
            layer.mlp = FusedMLP(layer.mlp)
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            if hasattr(layer, name):
                setattr(layer, name, ExportRMSNorm(getattr(layer, name)))
    module.model.norm = ExportRMSNorm(module.model.norm)
    if module.cfg.tie_word_embeddings:  # keep the tie explicit in the copy (deepcopy keeps it, but be sure)
        module.lm_head.weight = module.model.embed_tokens.weight
    return module
