"""The one small interface every engine implements; the Chat API talks only to this."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from edgechat.core.conversation import ChatFormat
from edgechat.core.errors import EdgechatError


def finite(logits, position: int):
    """A model whose logits hold NaN or Inf would sample garbage: say so instead. One max() per token (NaN and
    +Inf propagate into it), ~1/1000 of a decode step."""
    top = float(logits.max())
    if top != top or top in (float("inf"), float("-inf")):
        raise EdgechatError(f"the model produced non-finite logits (NaN or Inf) at reply token {position}: "
                            "its weights or its engine are broken; re-convert it from the source")
    return logits


class Engine(ABC):
    name: str = "engine"
    n_ctx: int
    model_path: str | None = None
    model_bytes: int = 0  # bytes of weights read per decoded token (for bandwidth figures)
    chat_template: str | None = None
    bos_text: str = ""
    eos_text: str = ""
    add_bos: bool = False
    eog_ids: frozenset[int] = frozenset()  # end-of-generation tokens (EOS, EOT, <|im_end|>, ...)

    @classmethod
    def open(cls, path, **options) -> "Engine":
        """The engine on the artifact at `path` (the registry's way in; engines that take more override it)."""
        return cls(path, **options)

    @abstractmethod
    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        """Text -> ids, parsing special tokens written in the text (as a rendered chat template has them)."""

    @abstractmethod
    def detokenize(self, ids: list[int]) -> str:
        """Ids -> text without special tokens; an incomplete UTF-8 tail comes out as U+FFFD."""

    @abstractmethod
    def forward(self, ids: list[int], start_pos: int) -> np.ndarray:
        """Run ids at positions [start_pos, start_pos+len) against the cache (dropping anything cached past
        start_pos) and return the last position's logits [vocab]."""

    @abstractmethod
    def logits_all(self, ids: list[int]) -> np.ndarray:
        """Logits [len(ids), vocab] for a fresh sequence (for evaluation)."""

    @property
    def chat_format(self) -> ChatFormat:
        """The one conversation encoding (edgechat.core.conversation) over this engine's own tokenizer."""
        return ChatFormat(self.chat_template, self.tokenize, self.bos_text, self.eos_text, self.add_bos, self.eog_ids)

    def reset(self) -> None:
        """Forget the cache. Engines overwrite by position, so nothing is needed by default."""

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"engine": self.name, "model": self.model_path, "n_ctx": self.n_ctx, "model_bytes": self.model_bytes,
                "threads": getattr(self, "threads", None)}
