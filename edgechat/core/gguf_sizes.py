"""Honest sizes of a GGUF file, from its header alone: the effective bits per weight (every tensor's data bits
over every weight, as llama.cpp's loader prints "BPW"), and the weights and bytes each tensor type holds. A
"Q4_K_M" file of a model whose rows are not a multiple of 256 is mostly Q5_0; this is where that shows."""
from __future__ import annotations

import math
from pathlib import Path

NOTE_MARGIN = 0.5  # bits: a file further than this from its quant's nominal bits gets a note in `convert`


def tensor_bytes(dims: list[int], ggml_type: str) -> int:
    """Bytes of one tensor's data (ne0 first, as the header lists it), from ggml's block sizes."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    return math.prod(dims) // block * size


def size_report(path: Path) -> dict:
    """{"bpw", "weights", "tensor_bytes", "file_bytes", "types": {type: {"tensors", "weights", "bytes",
    "share"}}}; share is the type's fraction of all weights. Types are listed largest share first."""
    from edgechat.core.gguf_file import read_header

    header = read_header(path)
    types: dict[str, dict] = {}
    for dims, ggml_type in header.tensors.values():
        t = types.setdefault(ggml_type, {"tensors": 0, "weights": 0, "bytes": 0})
        t["tensors"] += 1
        t["weights"] += math.prod(dims)
        t["bytes"] += tensor_bytes(dims, ggml_type)
    weights = sum(t["weights"] for t in types.values())
    nbytes = sum(t["bytes"] for t in types.values())
    for t in types.values():
        t["share"] = round(t["weights"] / weights, 4) if weights else 0.0
    return {"bpw": round(nbytes * 8 / weights, 3) if weights else 0.0, "weights": weights, "tensor_bytes": nbytes,
            "file_bytes": Path(path).stat().st_size,
            "types": dict(sorted(types.items(), key=lambda kv: -kv[1]["weights"]))}


def tensor_types(path: Path) -> dict[str, str]:
    """GGUF tensor name -> ggml type name, from the header."""
    from edgechat.core.gguf_file import read_header

    return {name: t for name, (_dims, t) in read_header(path).tensors.items()}


def shares_text(report: dict, top: int = 4) -> str:
    """'Q5_0 58%, Q8_0 22%, Q4_K 11%, Q6_K 9%' (the biggest shares of weights)."""
    return ", ".join(f"{t} {v['share'] * 100:.0f}%" for t, v in list(report["types"].items())[:top] if v["share"] >= 0.005)


def size_note(name: str, quant: str, nominal_bits: float, report: dict, fallbacks: list | None = None) -> str | None:
    """One line when the file's effective bits per weight is more than NOTE_MARGIN from the quant's nominal
    bits (None otherwise): what the file really is, and why."""
    if abs(report["bpw"] - nominal_bits) <= NOTE_MARGIN:
        return None
    why = ""
    if fallbacks:
        widths = sorted({f["cols"] for f in fallbacks})
        why = (f"; {len(fallbacks)} tensors fell back to other types (row width {', '.join(map(str, widths))} "
               f"does not fit the requested type's block)")
    return (f"note: {name} ({quant}) is {report['bpw']:.2f} bits per weight, not the nominal {nominal_bits:g}: "
            f"{shares_text(report)} of the weights{why}")
