"""How our (Hugging Face layout) tensors sit in a GGUF file: names from gguf-py's own tensor map, and
llama.cpp's Q/K row permutation for the llama architecture (it uses interleaved RoPE; HF uses half-split)."""
from __future__ import annotations

import numpy as np

GGUF_ARCHS = {"llama": "LLAMA", "qwen2": "QWEN2"}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> GGUF, exactly as llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF -> HF, the inverse of permute_qk."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def qk_heads(hf_name: str, cfg) -> int | None:
    """Number of heads to permute by for this tensor, or None if it is not permuted."""
    if cfg.arch != "llama":
        return None
    if ".q_proj." in hf_name:
        return cfg.num_heads
    if ".k_proj." in hf_name:
        return cfg.num_kv_heads
    return None


def hf_to_gguf_names(cfg, hf_names) -> dict[str, str]:
    import gguf

    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, GGUF_ARCHS[cfg.arch]), cfg.num_layers)
    out = {}
    for name in hf_names:
        mapped = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise KeyError(f"no GGUF name for tensor {name}")
        out[name] = mapped
    return out
