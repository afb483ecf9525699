"""GGUF quantization with llama.cpp's own quantizer (llama_model_quantize through llama-cpp-python): a file
type (Q8_0, Q4_0, Q4_K_M), or a per-tensor type plan (tt_overrides), and the fallbacks llama.cpp made."""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgechat.core.errors import EdgechatError
from targets import schemes

# llama-quant.cpp's tensor_type_fallback writes one line per tensor whose row length rules out the type
FALLBACK_LINE = re.compile(r"warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\)"
                           r".*-> falling back to\s+(\S+)")
# the ggml types a per-tensor plan may name (their enum ggml_type values come from gguf-py)
PLAN_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL")
# llama_ftype whose main type this is (general.file_type of a mixed file names its most common type)
FTYPE_OF_TYPE = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K": 14, "Q5_K": 16, "Q6_K": 18,
                 "IQ4_NL": 25, "F16": 1}


@dataclass
class Quantized:
    path: Path
    fallbacks: list[dict] = field(default_factory=list)  # {"tensor", "requested", "type", "cols", "reason"}


def quantize_gguf(src: Path, dst: Path, quant: str, threads: int | None = None, imatrix: dict | None = None) -> Path:
    return quantize(src, dst, quant, threads=threads, imatrix=imatrix).path


def quantize(src: Path, dst: Path, quant: str | None = None, threads: int | None = None, imatrix: dict | None = None,
             tensor_types: dict[str, str] | None = None) -> Quantized:
    """llama.cpp's quantizer on an F32 GGUF: the file type `quant`, or, with `tensor_types` (GGUF name -> ggml
    type), exactly those types per tensor (tensors not named keep llama.cpp's choice for the file type)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    if tensor_types is not None:
        counts: dict[str, int] = {}
        for t in tensor_types.values():
            counts[t] = counts.get(t, 0) + 1
        params.ftype = FTYPE_OF_TYPE.get(max(counts, key=counts.get) if counts else "Q8_0", 7)
    else:
        made = schemes.names("gguf", made=True)
        if quant not in made or schemes.get(quant).handler != "llama.cpp":
            choices = [q for q in made if schemes.get(q).handler == "llama.cpp"]
            raise EdgechatError(f"llama.cpp's quantizer does not make {quant!r}: choose one of {', '.join(choices)}")
        params.ftype = schemes.get(quant).llama_ftype  # enum llama_ftype
    params.nthread = threads or os.cpu_count() or 1
    keep_alive = []
    if imatrix:
        from converters.imatrix import ImatrixParam

        keep_alive.append(ImatrixParam(imatrix))
        params.imatrix = keep_alive[-1].pointer
    if tensor_types:
        overrides = TensorOverrides(tensor_types)
        keep_alive.append(overrides)
        params.tt_overrides = overrides.pointer
    # llama.cpp prints a line per tensor whose row length rules out the type (it falls back by itself):
    # keep that log out of the terminal, read the fallbacks from it, and quote its last line on failure.
    with tempfile.TemporaryFile() as log, redirect_fd(2, log.fileno()):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        log.seek(0)
        lines = log.read().decode(errors="replace").strip().splitlines()
    del keep_alive
    if rc != 0:
        raise EdgechatError(f"llama.cpp failed to quantize {src} to {quant or 'the per-tensor plan'}: "
                            f"{lines[-1] if lines else f'code {rc}'}")
    return Quantized(Path(dst), fallbacks_from_log(lines))


def fallbacks_from_log(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        m = FALLBACK_LINE.search(line)
        if m:
            name, cols, block, requested, used = m.groups()
            requested, used = requested.upper(), used.upper()
            out.append({"tensor": name, "requested": requested, "type": used, "cols": int(cols),
                        "reason": f"row length {cols} is not a multiple of {requested}'s block of {block}"
                                  + ("" if used != "F16" else ", nor of 32 (llama.cpp's last resort is F16)")})
    return out


class TensorOverrides:
    """A NULL-pattern-terminated C array of llama_model_tensor_override, one anchored regex per tensor (llama.cpp
    matches with regex_search, so "blk.1.attn_q" would also match "blk.11.attn_q" unanchored)."""

    def __init__(self, tensor_types: dict[str, str]):
        import gguf
        import llama_cpp

        unknown = sorted({t for t in tensor_types.values() if t not in PLAN_TYPES})
        if unknown:
            raise EdgechatError(f"unknown ggml type {unknown[0]!r} in the tensor plan: choose from {', '.join(PLAN_TYPES)}")
        entries = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        self._keep = [f"^{re.escape(name)}$".encode() for name in tensor_types]
        for i, (pattern, t) in enumerate(zip(self._keep, tensor_types.values())):
            entries[i].pattern = pattern
            entries[i].type = gguf.GGMLQuantizationType[t].value
        entries[len(tensor_types)].pattern = None
        self._entries = entries
        self.pointer = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_tensor_override))


@contextlib.contextmanager
def redirect_fd(fd: int, target: int):
    sys.stderr.flush()
    saved = os.dup(fd)
    os.dup2(target, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
