"""Bytes per tensor at a quant: ggml block sizes, llama.cpp's rules for which type each tensor gets (the
mixes of Q4_K_M, the output-head rule, the fallbacks when a row does not divide into 256-wide blocks),
and the ExecuTorch schemes (8da4w, 8da8w). Also how fast each type's kernels run relative to int8."""
from __future__ import annotations

from targets import schemes
from targets.errors import TargetError
from targets.model_spec import ModelSpec, Tensor

# ggml type -> (block size in weights, bytes per block): ggml's type_traits
GGML_BLOCKS = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2),
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
    "IQ4_NL": (32, 18),
}
# ExecuTorch (XNNPACK) weight layouts: bits per weight including scales
PTE_TYPES = {
    "QB4W": 4 + 16 / 32,  # 4-bit, groups of 32, one bf16 scale per group (8da4w linears)
    "QC8W": 8.0,  # 8-bit per output channel (8da8w linears; the int8 embedding), scale per row is negligible
    "FP32": 32.0,
    "QB4W_G64": 4 + 16 / 64,  # 8da4w at groups of 64 / 128 (converters.pte_mixed's plans choose them)
    "QB4W_G128": 4 + 16 / 128,
}
# Kernel speed on quantized weights relative to the target's int8 dot-product rate (unpacking costs)
INT8_RATE = {"Q8_0": 1.0, "Q4_0": 0.8, "Q4_1": 0.75, "Q5_0": 0.6, "Q5_1": 0.6, "Q4_K": 0.7, "Q5_K": 0.6,
             "Q6_K": 0.55, "Q2_K": 0.5, "Q3_K": 0.5, "IQ4_NL": 0.7, "QC8W": 1.0, "QB4W": 0.8,
             "QB4W_G64": 0.8, "QB4W_G128": 0.8}
FLOAT_TYPES = ("F32", "F16", "BF16", "FP32")
# CPU decode (GEMV) kernels: their cost grows with the bytes of weights they unpack, so a CPU's limit is
# `cpu.dot_gbs` GB/s of quantized weights (calibrated on Q4_0, whose rows llama.cpp repacks for AVX2/NEON).
# Q5_0/Q5_1 gather a fifth bit per weight and are not repacked: measured at 0.67 of Q4_0's byte rate (pure
# Q5_0 vs pure Q4_0 SmolLM2-135M on the AVX2 host, 1 thread, CPU time: 17.6 vs 11.7 ms a token, the Q8_0
# head taken out). Float rows need no unpacking and stream at memory speed: twice the rate or more.
DOT_RATE = {"F16": 2.0, "BF16": 2.0, "F32": 4.0, "FP32": 4.0, "Q5_0": 0.67, "Q5_1": 0.67}

# quant name -> its main tensor type, per format, and the planner's quality order: from the scheme registry
GGUF_QUANTS = {n: schemes.get(n).main_type for n in schemes.names("gguf")}
PTE_QUANTS = {n: schemes.get(n).main_type for n in schemes.names("pte")}
FORMAT_QUANTS = {fmt: schemes.names(fmt) for fmt in schemes.formats()}
QUALITY = {s.name: s.quality for s in schemes.SCHEMES.values()}
# llama.cpp: a type whose block does not divide the row falls back (llama-quant.cpp)
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL"}


def format_of(quant: str) -> str:
    return schemes.get(quant).format


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the layers that get a bigger type in the _M mixes."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fit_row(ggml_type: str, cols: int) -> str:
    if cols % GGML_BLOCKS[ggml_type][0] == 0:
        return ggml_type
    t = FALLBACK.get(ggml_type, "F16")
    return t if cols % GGML_BLOCKS[t][0] == 0 else "F16"


def gguf_type(quant: str, t: Tensor, spec: ModelSpec) -> str:
    """The ggml type llama.cpp's quantizer gives tensor `t` for the file type `quant` (llama_tensor_get_type)."""
    if quant not in GGUF_QUANTS:
        raise TargetError(f"unknown GGUF quant {quant!r}: choose one of {', '.join(GGUF_QUANTS)}")
    if t.rows == 1 or t.kind in ("norm", "bias"):
        return "F32"
    base = GGUF_QUANTS[quant]
    if base in ("F32", "F16", "BF16"):
        return base
    is_head = t.kind == "output" or (t.kind == "token_embd" and spec.tie_word_embeddings)
    if is_head:
        return "Q8_0" if t.cols % 256 else ("Q6_K" if base != "Q8_0" else "Q8_0")
    typ = base
    # (llama.cpp counts Phi-3's fused attn_qkv as an attn_v)
    if quant in ("q4_k_m", "q5_k_m") and t.kind in ("attn_v", "attn_qkv", "ffn_down") and use_more_bits(t.layer, spec.num_layers):
        typ = "Q6_K"
    return fit_row(typ, t.cols)


def pte_type(quant: str, t: Tensor, spec: ModelSpec) -> str:
    """ExecuTorch (converters/pte_export's defaults): linears at the scheme; the embedding weight-only, 4-bit
    in groups of 32 with 8da4w and 8-bit per row with 8da8w; norms and biases fp32. The output head is a
    linear of its own in the exported graph even when tied (quantized separately)."""
    if quant not in PTE_QUANTS:
        raise TargetError(f"unknown ExecuTorch quant {quant!r}: choose one of {', '.join(PTE_QUANTS)}")
    if t.rows == 1 or t.kind in ("norm", "bias") or quant == "fp32":
        return "FP32"
    if t.kind == "token_embd":
        return "QB4W" if quant == "8da4w" else "QC8W"
    return PTE_QUANTS[quant]


# a .pte plan's module (converters.pte_mixed: the export module's path, fused or not) -> its GGUF tensors
PTE_MODULE_TENSORS = {"qkv_proj": ("attn_q", "attn_k", "attn_v"), "q_proj": ("attn_q",), "k_proj": ("attn_k",),
                      "v_proj": ("attn_v",), "o_proj": ("attn_output",), "gate_up_proj": ("ffn_gate", "ffn_up"),
                      "gate_proj": ("ffn_gate",), "up_proj": ("ffn_up",), "down_proj": ("ffn_down",)}


def parse_pte_choice(choice: str) -> tuple[int, int, bool]:
    """A .pte plan's per-module choice: '8da4w-g32' -> (4 bits, group 32, dynamic int8 activations);
    '8w' -> (8, 0 (per channel), False)."""
    dynamic = choice.startswith("8da")
    bits = int(choice[3 if dynamic else 0])
    group = int(choice.split("-g")[1]) if "-g" in choice else 0
    return bits, group, dynamic


def pte_choice_type(choice: str) -> str:
    """A plan's per-module choice (8da4w-g32, 8da8w, 4w-g64, 8w) as the layout XNNPACK / ExecuTorch keep."""
    bits, group, _ = parse_pte_choice(choice)
    if bits == 8:
        return "QC8W"
    return "QB4W" if group == 32 else f"QB4W_G{group}"


def pte_plan_types(plan: dict[str, str], spec: ModelSpec) -> dict[str, str]:
    """GGUF tensor name -> type for a .pte written from a per-module plan (a --bpw/--size-mib program)."""
    out = tensor_types("8da8w", spec)
    for module, choice in plan.items():
        typ = pte_choice_type(choice)
        if module.endswith("embed_tokens"):
            out["token_embd.weight"] = typ
        elif module.endswith("lm_head"):
            out["output.weight"] = typ
        else:
            layer, base = int(module.split("layers.")[1].split(".")[0]), module.rsplit(".", 1)[-1]
            for name in PTE_MODULE_TENSORS[base]:
                out[f"blk.{layer}.{name}.weight"] = typ
    return out


def type_bytes(typ: str, n: int) -> float:
    if typ in GGML_BLOCKS:
        block, size = GGML_BLOCKS[typ]
        return n / block * size
    if typ in PTE_TYPES:
        return n * PTE_TYPES[typ] / 8
    raise TargetError(f"unknown tensor type {typ!r}")


def tensor_types(quant: str, spec: ModelSpec) -> dict[str, str]:
    """GGUF/PTE tensor name -> type for the whole model. For a PTE, a tied head is listed as output.weight."""
    tensors = spec.tensors()
    if format_of(quant) == "gguf":
        return {t.name: gguf_type(quant, t, spec) for t in tensors}
    out = {t.name: pte_type(quant, t, spec) for t in tensors}
    if spec.tie_word_embeddings:
        out["output.weight"] = pte_type(quant, Tensor("output.weight", spec.vocab_size, spec.hidden_size, None), spec)
    return out


def kv_type_bytes(fmt: str, kv_type: str | None = None) -> int:
    """llama.cpp keeps the KV cache in F16 by default; ExecuTorch's LLM cache is fp32."""
    kv_type = kv_type or ("f16" if fmt == "gguf" else "f32")
    if kv_type not in ("f16", "f32"):
        raise TargetError(f"unknown KV cache type {kv_type!r}: f16 or f32")
    return 2 if kv_type == "f16" else 4
