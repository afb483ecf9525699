"""Token sampling shared by every engine, so the same settings and seed pick the same tokens everywhere."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means off
    seed: int | None = None
    max_tokens: int = 256
    # OpenAI's penalties, on the tokens of the reply so far (not the prompt's): a token's logit goes down by
    # frequency_penalty for each time it was said and by presence_penalty once if it was, greedy decoding included.
    # Small chat models loop under greedy decoding (edgechat.app.loops); these are the standard guard.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0


class Sampler:
    """Picks one token from each step's logits; it sees every token it picks, which the penalties count."""

    def __init__(self, params: SamplingParams):
        self.p = params
        self.rng = np.random.default_rng(params.seed)
        self.said: Counter[int] = Counter()

    def __call__(self, logits: np.ndarray) -> int:
        p = self.p
        if self.said and (p.frequency_penalty or p.presence_penalty):
            ids = np.fromiter(self.said.keys(), dtype=np.int64, count=len(self.said))
            counts = np.fromiter(self.said.values(), dtype=np.float64, count=len(self.said))
            logits = logits.astype(np.float64)  # a copy: the engine's buffer stays as it was
            logits[ids] -= counts * p.frequency_penalty + p.presence_penalty
        tok = self._pick(logits)
        self.said[tok] += 1
        return tok

    def _pick(self, logits: np.ndarray) -> int:
        p = self.p
        if p.temperature <= 0:
            return int(np.argmax(logits))
        x = logits.astype(np.float64) / p.temperature
        if 0 < p.top_k < x.size:
            kth = np.partition(x, -p.top_k)[-p.top_k]
            x = np.where(x >= kth, x, -np.inf)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs)
            keep = np.cumsum(probs[order]) - probs[order] < p.top_p  # keep the smallest set reaching top_p
            mask = np.zeros_like(probs, dtype=bool)
            mask[order[keep]] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        return int(self.rng.choice(probs.size, p=probs))
