"""llama-cpp-python with the CPU backend this host runs best: the one way into llama_cpp for running a model.

A GGML_BACKEND_DL build links no CPU backend into libggml: until one is loaded, llama.cpp refuses every model
("no backends are loaded"), and llama-cpp-python never loads one itself (its issue 2069). This module loads
the variant runtimes/cpu_variants.py chose, once per process, through ggml's own loader bound with ctypes.
A build with the CPU backend linked in (the old portable wheel) is used as it is ("built-in")."""
from __future__ import annotations

import ctypes
import functools
import logging
import threading
from contextlib import contextmanager
from pathlib import Path

from edgechat.core.errors import EdgechatError
from runtimes import cpu_variants

_lock = threading.Lock()
_choice: cpu_variants.Choice | None = None


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


@functools.cache
def _ggml():
    import llama_cpp  # noqa: F401  (loads libllama and, through it, libggml.so.0)

    # By soname, so this is the copy libllama already uses: the wheel also holds libggml.so, a second file
    # whose backend registry llama.cpp would never see.
    g = ctypes.CDLL("libggml.so.0")
    g.ggml_backend_load.restype = ctypes.c_void_p
    g.ggml_backend_load.argtypes = [ctypes.c_char_p]
    g.ggml_backend_reg_count.restype = ctypes.c_size_t
    g.ggml_backend_reg_get.restype = ctypes.c_void_p
    g.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    g.ggml_backend_reg_name.restype = ctypes.c_char_p
    g.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    g.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    g.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return g


@contextmanager
def _quiet():
    """ggml logs every backend it loads through llama-cpp-python's logger, which prints all until a Llama
    with verbose=False quiets it."""
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def features() -> list[str]:
    """What the loaded CPU backend was built to use (ggml's own list: AVX2, AVX512_VNNI, ..., OPENMP)."""
    g = _ggml()
    out = []
    for i in range(g.ggml_backend_reg_count()):
        reg = g.ggml_backend_reg_get(i)
        if g.ggml_backend_reg_name(reg) != b"CPU":
            continue
        addr = g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
        if not addr:
            continue
        feats = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature))(addr)()
        k = 0
        while feats[k].name:
            if feats[k].value in (b"1", b"ON"):
                out.append(feats[k].name.decode())
            k += 1
    return out


def load_variant(path: str):
    """Load one variant library into this process (the probe's way in); llama_cpp, ready to run."""
    import llama_cpp

    with _quiet():
        if not _ggml().ggml_backend_load(str(path).encode()):
            raise EdgechatError(f"ggml could not load the CPU backend {path}")
    return llama_cpp


def load(model: str | Path | None = None, types: set[str] | None = None):
    """llama_cpp with a CPU backend loaded: the variant chosen for this host (probed on `model`'s tensor types,
    read from its header unless given, the first time). The choice holds for the process: ggml cannot swap a
    loaded backend out, so a later model with types it has not run here is first run with it in a child."""
    global _choice
    import llama_cpp

    with _lock:
        if types is None and model is not None:
            from edgechat.core.gguf_file import read_header

            types = cpu_variants.tensor_types(read_header(Path(model)))
        if _choice is None:
            g = _ggml()
            if g.ggml_backend_reg_count() > 0:  # a build with the CPU backend linked in
                _choice = cpu_variants.Choice("built-in", None, "linked", features=features())
            else:
                choice = cpu_variants.choose(cpu_variants.lib_dir(), Path(model) if model else None, types or set())
                load_variant(choice.path)
                choice.features = features()
                _choice = choice
        elif model is not None and _choice.path and _choice.how != "forced":  # a later model, maybe new types
            cpu_variants.confirm(cpu_variants.lib_dir(), _choice, Path(model), types)
    return llama_cpp


def backend() -> dict | None:
    """The loaded CPU backend (variant, how it was chosen, its instructions), or None before any model ran."""
    return _choice.to_dict() | {"label": _choice.label()} if _choice else None
