"""GGUF quantization with llama.cpp's own quantizer (llama_model_quantize through llama-cpp-python)."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from pathlib import Path

from edgechat.core.errors import EdgechatError
from targets import schemes

def quantize_gguf(src: Path, dst: Path, quant: str, threads: int | None = None, imatrix: dict | None = None) -> Path:
    import llama_cpp

    made = schemes.names("gguf", made=True)
    if quant not in made or schemes.get(quant).handler != "llama.cpp":
        choices = [q for q in made if schemes.get(q).handler == "llama.cpp"]
        raise EdgechatError(f"llama.cpp's quantizer does not make {quant!r}: choose one of {', '.join(choices)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = schemes.get(quant).llama_ftype  # enum llama_ftype
    params.nthread = threads or os.cpu_count() or 1
    keep_alive = None
    if imatrix:
        from converters.imatrix import ImatrixParam

        keep_alive = ImatrixParam(imatrix)
        params.imatrix = keep_alive.pointer
    # llama.cpp prints a line per tensor whose row length rules out the type (it falls back by itself):
    # keep that log out of the terminal, and quote its last line if quantization fails.
    with tempfile.TemporaryFile() as log, redirect_fd(2, log.fileno()):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        log.seek(0)
        lines = log.read().decode(errors="replace").strip().splitlines()
    del keep_alive
    if rc != 0:
        raise EdgechatError(f"llama.cpp failed to quantize {src} to {quant}: {lines[-1] if lines else f'code {rc}'}")
    return dst


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
