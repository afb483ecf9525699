"""What the planner needs to know about a model: its shape, as plain numbers. edgechat passes its
ModelConfig in as a dict (dataclasses.asdict) or a Hugging Face config.json; nothing here imports edgechat."""
from __future__ import annotations

from dataclasses import dataclass

from targets.errors import TargetError

# GGUF tensor names (gguf-py's llama map), per layer: (name, rows, cols) with cols the input dimension (ne0)
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# llama.cpp architectures whose converter keeps the checkpoint's fused projections: attn_qkv (q, k, v rows
# stacked) and ffn_up holding gate and up (gate first), with no attn_q/k/v or ffn_gate
FUSED_QKV_ARCHS = ("phi3",)
# generated RoPE tensors llama.cpp reads (per-frequency divisors, rope_dim / 2 each): not parameters
ROPE_TENSORS = {"llama3": ("rope_freqs",), "longrope": ("rope_factors_long", "rope_factors_short")}
# ggml graph nodes per decoder layer (norms, matmuls, rope, cache copies, softmax, residual adds)
NODES_PER_LAYER = 22


@dataclass(frozen=True)
class Tensor:
    name: str  # GGUF name, e.g. "blk.3.attn_q.weight"
    rows: int  # output dimension (ne1); 1 for vectors
    cols: int  # input dimension (ne0): quant blocks run along it
    layer: int | None  # None: token_embd, output_norm, output

    @property
    def n(self) -> int:
        return self.rows * self.cols

    @property
    def kind(self) -> str:
        """"attn_q", "ffn_down", "token_embd", "output", "norm", "bias", "rope" (rope_freqs and the like)."""
        if self.name.endswith(".bias"):
            return "bias"
        if self.name.startswith("rope_"):
            return "rope"
        base = self.name.split(".")[-2]
        return "norm" if base.endswith("_norm") else base


@dataclass(frozen=True)
class ModelSpec:
    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_seq_len: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False  # per-head q/k RMSNorms (Qwen3, Gemma 3): attn_q_norm, attn_k_norm of head_dim
    sandwich_norms: bool = False  # Gemma 3's norms of the attention and FFN outputs: post_attention_norm, post_ffw_norm
    fused_qkv: bool = False  # llama.cpp keeps attn_qkv and a gate+up ffn_up (FUSED_QKV_ARCHS)
    rope_tensors: tuple[tuple[str, int], ...] = ()  # (GGUF name, length) of the generated RoPE tensors

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_dict(cls, d: dict, name: str = "model") -> "ModelSpec":
        """From an edgechat ModelConfig as a dict, or a Hugging Face config.json."""
        g = lambda *keys, default=None: next((d[k] for k in keys if d.get(k) is not None), default)  # noqa: E731
        try:
            hidden = int(g("hidden_size", "n_embd"))
            heads = int(g("num_heads", "num_attention_heads"))
            head_dim = int(g("head_dim", default=hidden // heads))
            arch = g("arch", "model_type", default="")
            rope_half = int(head_dim * float(g("partial_rotary_factor", default=1.0))) // 2
            rope = tuple((f"{t}.weight", rope_half) for t in ROPE_TENSORS.get(g("rope_type", default=""), ()))
            return cls(name=str(g("name", "_name_or_path", default=name)), vocab_size=int(g("vocab_size")),
                       hidden_size=hidden, intermediate_size=int(g("intermediate_size")),
                       num_layers=int(g("num_layers", "num_hidden_layers")), num_heads=heads,
                       num_kv_heads=int(g("num_kv_heads", "num_key_value_heads", default=heads)),
                       head_dim=head_dim,
                       max_seq_len=int(g("max_seq_len", "max_position_embeddings", default=2048)),
                       tie_word_embeddings=bool(g("tie_word_embeddings", default=False)),
                       attention_bias=bool(g("attention_bias", default=False)),
                       qk_norm=bool(g("qk_norm", default=False)), sandwich_norms=bool(g("sandwich_norms", default=False)),
                       fused_qkv=bool(g("fused_qkv", default=arch in FUSED_QKV_ARCHS)), rope_tensors=rope)
        except (TypeError, ValueError) as e:
            raise TargetError(f"the model config lacks a shape the planner needs: {e}") from None

    def layer_tensors(self, i: int) -> list[Tensor]:
        """Layer i's tensors, named and shaped as llama.cpp's converter writes them."""
        d, f, q, kv, hd = self.hidden_size, self.intermediate_size, self.q_dim, self.kv_dim, self.head_dim
        if self.fused_qkv:
            shapes = {"attn_qkv": (q + 2 * kv, d), "attn_output": (d, q), "ffn_up": (2 * f, d), "ffn_down": (d, f)}
        else:
            shapes = {"attn_q": (q, d), "attn_k": (kv, d), "attn_v": (kv, d), "attn_output": (d, q),
                      "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}
        norms = {"attn_norm": d, "ffn_norm": d}
        if self.qk_norm:
            norms.update(attn_q_norm=hd, attn_k_norm=hd)
        if self.sandwich_norms:
            norms.update(post_attention_norm=d, post_ffw_norm=d)
        out = [Tensor(f"blk.{i}.{k}.weight", 1, n, i) for k, n in norms.items()]
        out += [Tensor(f"blk.{i}.{k}.weight", r, c, i) for k, (r, c) in shapes.items()]
        if self.attention_bias:
            out += [Tensor(f"blk.{i}.attn_{k}.bias", 1, n, i) for k, n in (("q", q), ("k", kv), ("v", kv))]
        return out

    def tensors(self) -> list[Tensor]:
        """Every tensor of this model's GGUF, as llama.cpp's converter writes it (the RoPE tensors included)."""
        out = [Tensor("token_embd.weight", self.vocab_size, self.hidden_size, None)]
        for i in range(self.num_layers):
            out += self.layer_tensors(i)
        out.append(Tensor("output_norm.weight", 1, self.hidden_size, None))
        if not self.tie_word_embeddings:
            out.append(Tensor("output.weight", self.vocab_size, self.hidden_size, None))
        out += [Tensor(name, 1, n, None) for name, n in self.rope_tensors]
        return out

    def params(self) -> int:
        """Parameters: every tensor but the generated RoPE ones (the torch module's parameter count)."""
        return sum(t.n for t in self.tensors() if t.kind != "rope")

    def kv_bytes_per_token(self, kv_type_bytes: float) -> float:
        """K and V of one position in one layer."""
        return 2 * self.kv_dim * kv_type_bytes

    def layer_flops_per_token(self, position: int) -> float:
        """Matmul FLOPs of one layer for one token at `position` (weights, then attention over the cache)."""
        weights = sum(t.n for t in self.layer_tensors(0) if t.kind not in ("norm", "bias"))
        return 2 * weights + 4 * position * self.q_dim

    def head_flops_per_token(self) -> float:
        return 2 * self.vocab_size * self.hidden_size
