"""The degenerate-loop check: a reply that says the same run of words over and over ("I'm here to help you. I'm
here to help you. ..."), as small chat models do under greedy decoding. Used to score students' answers and to
keep such replies out of distillation data (SmolLM2-135M-Instruct loops in about a fifth of its own 128-token
chit-chat replies; cross-entropy on them teaches the student to loop)."""
from __future__ import annotations

import re
from collections import Counter

LOOP_WORDS, LOOP_TIMES = 6, 3


def loops(text: str, words: int = LOOP_WORDS, times: int = LOOP_TIMES) -> bool:
    """True when some run of `words` words (case and punctuation ignored) occurs `times` times or more."""
    w = re.findall(r"\w+", text.lower())
    runs = Counter(tuple(w[i:i + words]) for i in range(len(w) - words + 1))
    return max(runs.values(), default=0) >= times


REPEAT_TOKENS = 4  # unlikelihood's n-gram (Welleck et al. 2019 use 4)


def repeats(ids: list[int], counted: list[bool], n: int = REPEAT_TOKENS) -> list[bool]:
    """True on each counted token that ends an n-token run of counted tokens seen earlier in `ids`: the tokens
    that carry a loop on, which unlikelihood training pushes down."""
    seen, out = set(), [False] * len(ids)
    for j in range(n - 1, len(ids)):
        if all(counted[j - n + 1:j + 1]):
            run = tuple(ids[j - n + 1:j + 1])
            out[j] = run in seen
            seen.add(run)
    return out
