"""The in-memory model every step works on: config + torch module + tokenizer + chat template + source."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgechat.core import conversation
from edgechat.core.config import ModelConfig
from edgechat.core.errors import EdgechatError
from edgechat.core.tokenizer import Tokenizer
from edgechat.core.transformer import Transformer


@dataclass
class Model:
    config: ModelConfig
    module: Transformer
    tokenizer: Tokenizer
    chat_template: str | None = None
    source: dict = field(default_factory=dict)  # {"path", "kind", "sha256"}
    name: str = "model"

    def chat_format(self) -> conversation.ChatFormat:
        """How a conversation becomes this model's token ids (template, BOS rule, end-of-turn ids)."""
        return conversation.for_tokenizer(self.tokenizer, self.chat_template)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """HF-named tensors; the tied lm_head is left out as HF checkpoints do."""
        sd = {k: v for k, v in self.module.state_dict().items()}
        if self.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return sd


def expected_tensors(cfg: ModelConfig) -> list[str]:
    """The tensor names a checkpoint of this config holds (a tied head is not stored)."""
    with torch.device("meta"):
        names = list(Transformer(cfg).state_dict())
    return [n for n in names if not (cfg.tie_word_embeddings and n == "lm_head.weight")]


def build_module(cfg: ModelConfig, state_dict: dict[str, torch.Tensor], where: str) -> Transformer:
    with torch.device("meta"):
        module = Transformer(cfg)
    expected = set(expected_tensors(cfg))
    missing = sorted(expected - set(state_dict))
    if missing:
        raise EdgechatError(f"{where} is missing {len(missing)} tensors (first: {missing[0]})")
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    for k in expected:
        if tuple(state_dict[k].shape) != tuple(shapes[k]):
            raise EdgechatError(f"{where}: tensor {k} has shape {tuple(state_dict[k].shape)}, "
                                f"config says {tuple(shapes[k])}")
    weights = {k: state_dict[k].float() for k in expected}
    for k in sorted(expected):  # a NaN or Inf weight poisons every logit downstream: refuse it by name
        w = weights[k]
        if not torch.isfinite(w).all():
            nan, inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
            raise EdgechatError(f"{where}: tensor {k} holds non-finite values ({nan} NaN, {inf} Inf): "
                                "the checkpoint is corrupt or was trained into divergence")
    module.load_state_dict(weights, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        module.lm_head.weight = module.model.embed_tokens.weight
    return module.eval().requires_grad_(False)
