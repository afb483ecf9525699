"""The llama.cpp engine (llama-cpp-python) for GGUF artifacts."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from edgechat.core.errors import EdgechatError
from edgechat.core.gguf_file import read_header
from runtimes.base import Engine

KV_TYPES = {"f32": 0, "f16": 1}  # GGML_TYPE_F32, GGML_TYPE_F16
N_BATCH = 512  # prompt tokens per llama_decode: llama.cpp's default, where its prefill reaches full speed


class LlamaCppEngine(Engine):
    name = "llama.cpp"

    def __init__(self, path: str | Path, n_ctx: int | None = None, threads: int | None = None,
                 kv_type: str = "f16", logits_all: bool = False, n_gpu_layers: int = 0):
        from runtimes import cpu_variants, llama_lib
        from targets.host import physical_cores

        path = Path(path)
        if not path.exists():
            raise EdgechatError(f"no such file: {path}")
        header = read_header(path)  # a clear error for a truncated or foreign file, before llama.cpp sees it
        # the CPU variant this host runs (probed on this file's tensor types)
        llama_cpp = llama_lib.load(path, cpu_variants.tensor_types(header))
        n_train = header.meta.get(f"{header.arch}.context_length") or 0
        n_ctx = min(n_ctx, n_train) if n_ctx and n_train else (n_ctx or n_train)
        self.threads = threads = threads or physical_cores()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx or 0, n_threads=threads, n_threads_batch=threads,
                n_batch=N_BATCH, logits_all=logits_all, type_k=KV_TYPES[kv_type], type_v=KV_TYPES[kv_type],
                n_gpu_layers=n_gpu_layers, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:  # llama-cpp-python's "Failed to load model from file"
            raise EdgechatError(f"llama.cpp could not load {path}: {e}") from None
        self._lib = llama_cpp
        self.model_path = str(path)
        self.model_bytes = path.stat().st_size
        # llama.cpp pads the context (to 256), but llama-cpp-python sizes its token and logit buffers by the n_ctx
        # asked for: past that, eval() fails with a broadcast error once a long chat fills the context
        self.n_ctx = min(self.llm.n_ctx(), len(self.llm.input_ids))
        self.n_vocab = self.llm.n_vocab()
        self.vocab = self.llm._model.vocab
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template")
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_text = self._piece(self.llm.token_bos())
        self.eos_text = self._piece(self.llm.token_eos())
        self.eog_ids = frozenset(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t))
        self._buf = ctypes.create_string_buffer(1 << 16)
        self.cpu_backend = llama_lib.backend()

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def tokenize(self, text, add_bos):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, ids):
        if not ids:
            return ""
        arr = (self._lib.llama_token * len(ids))(*ids)
        n = self._lib.llama_detokenize(self.vocab, arr, len(ids), self._buf, len(self._buf), True, False)
        if n < 0:  # buffer too small: grow and retry
            self._buf = ctypes.create_string_buffer(-n + 1)
            n = self._lib.llama_detokenize(self.vocab, arr, len(ids), self._buf, len(self._buf), True, False)
        return self._buf.raw[:n].decode("utf-8", errors="replace")

    def forward(self, ids, start_pos):
        self.llm.n_tokens = start_pos
        self.llm.eval(ids)
        ptr = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def logits_all(self, ids):
        if not self.llm._logits_all:
            raise RuntimeError("open the engine with logits_all=True to read every position's logits")
        self.llm.n_tokens = 0
        self.llm.eval(ids)
        return self.llm.scores[: len(ids)].copy()

    def reset(self):
        self.llm.reset()

    def close(self):
        self.llm.close()

    def describe(self) -> dict:
        return {**super().describe(), "threads": self.threads, "n_batch": N_BATCH, "cpu_backend": self.cpu_backend}
