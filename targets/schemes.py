"""The quant-scheme registry: the one table of quant names. Each scheme says its format, its nominal bits per
weight (its main tensor type's, scales included), its block size, how it is made (the handler the converter
runs) and how close it stays to the fp32 model. The CLI's choices and help, the planner's byte counts and
the converters all read it; nothing else defines a quant name."""
from __future__ import annotations

from dataclasses import dataclass

from targets.errors import TargetError


@dataclass(frozen=True)
class QuantScheme:
    name: str  # as the user writes it: --quant q4_k_m
    format: str  # "gguf" or "pte"
    bits: float  # nominal bits per weight of the main type (a file's effective bits differ: see its report)
    block: int  # weights per quantization block along a row (1: no blocks)
    main_type: str  # ggml type (GGUF) or XNNPACK weight layout (PTE) of the big matrices
    handler: str  # who makes it: "gguf-py" (written as is), "llama.cpp" (llama_model_quantize), "torchao"
    quality: float  # the planner's order: higher stays closer to fp32
    llama_ftype: int | None = None  # llama.cpp's enum llama_ftype (general.file_type)
    made: bool = True  # False: found in existing GGUF files and planned, but not written by edgechat
    imatrix: bool = False  # llama.cpp uses an importance matrix for it
    help: str = ""


SCHEMES: dict[str, QuantScheme] = {}


def register(scheme: QuantScheme) -> QuantScheme:
    if scheme.name in SCHEMES:
        raise ValueError(f"quant {scheme.name!r} is registered twice")
    SCHEMES[scheme.name] = scheme
    return scheme


for _s in (
    QuantScheme("f32", "gguf", 32.0, 1, "F32", "gguf-py", 6, 0, help="full precision"),
    QuantScheme("f16", "gguf", 16.0, 1, "F16", "gguf-py", 5, 1, help="half precision"),
    QuantScheme("q8_0", "gguf", 8.5, 32, "Q8_0", "llama.cpp", 4, 7, help="8-bit, blocks of 32"),
    QuantScheme("q4_0", "gguf", 4.5, 32, "Q4_0", "llama.cpp", 2, 2, imatrix=True, help="4-bit, blocks of 32"),
    QuantScheme("q4_k_m", "gguf", 4.5, 256, "Q4_K", "llama.cpp", 3, 15, imatrix=True,
                help="4-bit K-quant mix (rows not a multiple of 256 fall back to Q5_0)"),
    QuantScheme("bf16", "gguf", 16.0, 1, "BF16", "gguf-py", 5, 32, made=False),
    QuantScheme("q6_k", "gguf", 6.5625, 256, "Q6_K", "llama.cpp", 4, 18, made=False),
    QuantScheme("q5_k_m", "gguf", 5.5, 256, "Q5_K", "llama.cpp", 3.5, 17, made=False),
    QuantScheme("q5_0", "gguf", 5.5, 32, "Q5_0", "llama.cpp", 3, 8, made=False),
    QuantScheme("q5_1", "gguf", 6.0, 32, "Q5_1", "llama.cpp", 3, 9, made=False),
    QuantScheme("q4_1", "gguf", 5.0, 32, "Q4_1", "llama.cpp", 2.5, 3, made=False),
    QuantScheme("fp32", "pte", 32.0, 1, "FP32", "torchao", 6, help="full precision"),
    QuantScheme("8da8w", "pte", 8.0, 1, "QC8W", "torchao", 4,
                help="8-bit dynamic activations, 8-bit weights per channel"),
    QuantScheme("8da4w", "pte", 4.5, 32, "QB4W", "torchao", 2,
                help="8-bit dynamic activations, 4-bit weights in groups"),
):
    register(_s)

DEFAULTS = {"gguf": "q4_k_m", "pte": "8da4w"}  # what --format X makes with no --quant


def get(name: str) -> QuantScheme:
    if name not in SCHEMES:
        raise TargetError(f"unknown quant {name!r}: choose one of {', '.join(names())}")
    return SCHEMES[name]


def names(fmt: str | None = None, made: bool | None = None) -> tuple[str, ...]:
    """Quant names, in table order: of one format, and only those edgechat writes (made=True)."""
    return tuple(s.name for s in SCHEMES.values()
                 if (fmt is None or s.format == fmt) and (made is None or s.made == made))


def formats() -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.format for s in SCHEMES.values()))


def by_llama_ftype() -> dict[int, QuantScheme]:
    return {s.llama_ftype: s for s in SCHEMES.values() if s.llama_ftype is not None}


def help_text(fmt: str) -> str:
    """'q8_0, q4_0, q4_k_m (default q4_k_m)' for the CLI."""
    return f"{', '.join(names(fmt, made=True))} (default {DEFAULTS[fmt]})"
