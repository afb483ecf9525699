"""The in-memory model every step works on: config + torch module + tokenizer + chat template + source."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgechat import chat_template
from edgechat.config import ModelConfig
from edgechat.tokenizer import Tokenizer
from edgechat.transformer import Transformer


@dataclass
class Model:
    config: ModelConfig
    module: Transformer
    tokenizer: Tokenizer
    chat_template: str | None = None
    source: dict = field(default_factory=dict)  # {"path", "kind", "sha256"}
    name: str = "model"

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        tok = self.tokenizer
        return chat_template.render(self.chat_template, messages, add_generation_prompt,
                                    bos_token=tok.bos_text, eos_token=tok.eos_text)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """HF-named tensors; the tied lm_head is left out as HF checkpoints do."""
        sd = {k: v for k, v in self.module.state_dict().items()}
        if self.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return sd


def build_module(cfg: ModelConfig, state_dict: dict[str, torch.Tensor], where: str) -> Transformer:
    from edgechat.errors import EdgechatError

    with torch.device("meta"):
        module = Transformer(cfg)
    expected = set(module.state_dict())
    if cfg.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(state_dict))
    if missing:
        raise EdgechatError(f"{where} is missing {len(missing)} tensors (first: {missing[0]})")
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    for k in expected:
        if tuple(state_dict[k].shape) != tuple(shapes[k]):
            raise EdgechatError(f"{where}: tensor {k} has shape {tuple(state_dict[k].shape)}, "
                                f"config says {tuple(shapes[k])}")
    module.load_state_dict({k: state_dict[k].float() for k in expected}, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        module.lm_head.weight = module.model.embed_tokens.weight
    return module.eval().requires_grad_(False)


def sha256_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()
