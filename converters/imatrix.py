"""Importance matrix for llama.cpp's quantizer: per weight, the mean square of each input channel over
calibration tokens (what llama-imatrix collects), handed to llama_model_quantize as C arrays."""
from __future__ import annotations

import contextlib
import ctypes

import numpy as np
import torch

from edgechat.core import archs
from edgechat.core.model import Model


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to n (None: left as they are) for the block, restored after: on a busy
    machine a 2-thread small matmul waits on the busy core (measured 200x slower than 1 thread here)."""
    saved = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def compute_imatrix(model: Model, sequences: list[list[int]], on_sequence=None, threads: int | None = None
                    ) -> dict[str, np.ndarray]:
    with torch_threads(threads), torch.inference_mode():
        return _imatrix(model, sequences, on_sequence)


def _imatrix(model: Model, sequences: list[list[int]], on_sequence) -> dict[str, np.ndarray]:
    module = model.module
    linears = {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    names = archs.get(model.config.arch).gguf_tensor_names(model.config, [f"{n}.weight" for n in linears
                                            if not (n == "lm_head" and model.config.tie_word_embeddings)])
    if model.config.tie_word_embeddings:  # llama.cpp multiplies by token_embd for the tied output
        names["lm_head.weight"] = "token_embd.weight"
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    counts = dict.fromkeys(linears, 0)

    def hook(name):
        def fn(_mod, inputs, _out):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            sums[name] += (x * x).sum(0)
            counts[name] += x.shape[0]
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    try:
        for i, ids in enumerate(sequences):
            module(torch.tensor([ids]))
            if on_sequence:
                on_sequence(i + 1)
    finally:
        for h in handles:
            h.remove()
    return {names[f"{n}.weight"]: (sums[n] / max(counts[n], 1)).float().numpy() for n in linears}


class ImatrixParam:
    """Keeps the ctypes arrays alive while llama.cpp reads them; `.pointer` goes into the quantize params."""

    def __init__(self, imatrix: dict[str, np.ndarray]):
        import llama_cpp

        self._keep = []
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()  # NULL-name terminated
        for i, (name, values) in enumerate(imatrix.items()):
            arr = np.ascontiguousarray(values, dtype=np.float32)
            self._keep.append((name.encode(), arr))
            entries[i].name = self._keep[-1][0]
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        self._entries = entries
        self.pointer = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
