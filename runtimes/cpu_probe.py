"""The child process of runtimes/cpu_variants.py: ranks the CPU variants, or runs a model with one of them.
A variant this host cannot run kills this process, not the caller. Prints one JSON line.

    python -m runtimes.cpu_probe scores LIB...       ggml's score of each variant library on this CPU
    python -m runtimes.cpu_probe run LIB MODEL      load MODEL with that variant, run a batch and two tokens"""
from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

PROBE_TOKENS = 96  # one batch: large enough for the matrix-matrix kernels (repacked, AMX) a prompt uses


def scores(libs: list[str]) -> dict[str, int]:
    import llama_cpp  # noqa: F401  (loads libggml-base, which every variant links against)

    out = {}
    for lib in libs:
        name = Path(lib).name[len("libggml-cpu-"):-3]
        try:
            fn = ctypes.CDLL(lib).ggml_backend_score
            fn.restype = ctypes.c_int
            out[name] = int(fn())
        except (OSError, AttributeError):
            out[name] = 0
    return out


def run(lib: str, model: str) -> dict:
    from runtimes import llama_lib

    llama_cpp = llama_lib.load_variant(lib)
    try:
        llm = llama_cpp.Llama(model_path=model, n_ctx=256, n_batch=PROBE_TOKENS, n_ubatch=PROBE_TOKENS,
                              n_threads=2, verbose=False)
    except (ValueError, RuntimeError, OSError) as e:  # llama.cpp refused the file: no word on the variant
        return {"ok": False, "error": str(e)}
    n_vocab = llm.n_vocab()
    ids = [(i * 7919) % n_vocab for i in range(1, PROBE_TOKENS + 1)]
    llm.eval(ids)
    llm.eval([ids[0]])
    llm.eval([ids[1]])
    llm.close()
    return {"ok": True, "features": llama_lib.features()}


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    print(json.dumps(scores(args) if mode == "scores" else run(*args)))
