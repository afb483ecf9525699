"""The torch reference engine: runs the in-memory fp32 model directly."""
from __future__ import annotations

import numpy as np
import torch

from edgechat.model import Model
from runtimes.base import Engine


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model: Model, n_ctx: int | None = None, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.tok = model.tokenizer
        self.n_ctx = min(n_ctx or model.config.max_seq_len, model.config.max_seq_len)
        model.module.setup_cache(self.n_ctx)
        self.model_path = model.source.get("path")
        self.model_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
        self.chat_template = model.chat_template
        self.bos_text, self.eos_text, self.add_bos = self.tok.bos_text, self.tok.eos_text, self.tok.add_bos
        self.eog_ids = frozenset(self.tok.eos_ids) | eog_from_template(self.tok, model.chat_template)

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


def eog_from_template(tok, template: str | None) -> frozenset[int]:
    """Chat templates end a turn with a token the tokenizer may not list as EOS (ChatML's <|im_end|>)."""
    out = set()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if template and marker in template:
            ids = tok.encode(marker, add_bos=False)
            if len(ids) == 1:
                out.add(ids[0])
    return frozenset(out)
