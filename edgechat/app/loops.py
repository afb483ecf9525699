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
