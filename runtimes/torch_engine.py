"""The torch reference engine: runs the in-memory fp32 model directly."""
from __future__ import annotations

import torch

from edgechat.core.model import Model
from runtimes.base import Engine


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model: Model, n_ctx: int | None = None, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.model = model
        self.tok = model.tokenizer
        self.n_ctx = min(n_ctx or model.config.max_seq_len, model.config.max_seq_len)
        model.module.setup_cache(self.n_ctx)
        self.model_path = model.source.get("path")
        self.model_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
        self.chat_template = model.chat_template
        self.bos_text, self.eos_text, self.add_bos = self.tok.bos_text, self.tok.eos_text, self.tok.add_bos
        self.eog_ids = model.chat_format().eog_ids

    @classmethod
    def open(cls, path, n_ctx: int | None = None, threads: int | None = None, **_engine_options):
        """An HF directory (or edgechat output directory holding one), loaded as the fp32 reference; it keeps
        every position's logits, so options for other engines (logits_all, kv_type) do not apply."""
        from edgechat.core.sources import load_model

        return cls(load_model(path), n_ctx=n_ctx, threads=threads)

    def tokenize(self, text, add_bos):
        return self.tok.encode(text, add_bos=add_bos)

    def detokenize(self, ids):
        return self.tok.decode(ids)

    @torch.inference_mode()
    def forward(self, ids, start_pos):
        x = torch.tensor([ids], dtype=torch.long)
        return self.model.module(x, start_pos)[0, -1].float().numpy()

    @torch.inference_mode()
    def logits_all(self, ids):
        return self.model.module(torch.tensor([ids], dtype=torch.long))[0].float().numpy()

