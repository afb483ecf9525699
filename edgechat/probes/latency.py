"""Per-reply measurements: latency (TTFT, prefill/decode tokens/s, inter-token p50/p95), peak RSS."""
from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Stats:
    prompt_tokens: int = 0  # tokens in the rendered conversation
    cached_tokens: int = 0  # of those, reused from the previous turn's KV cache
    prefill_tokens: int = 0  # of those, actually run
    completion_tokens: int = 0
    ttft_s: float = 0.0  # send() to the first sampled token
    prefill_s: float = 0.0
    prefill_tok_s: float = 0.0
    decode_s: float = 0.0
    decode_tok_s: float = 0.0  # tokens after the first / time after the first
    total_s: float = 0.0
    itl_p50_ms: float = 0.0
    itl_p95_ms: float = 0.0
    peak_rss_mb: float = 0.0
    stop_reason: str = ""  # "eos", "length" (max_tokens) or "context" (window full)
    dropped_messages: int = 0  # oldest turns dropped to fit the context
    load_s: float = 0.0  # opening the engine (the Chat's, repeated on each reply)
    cpu_s: float = 0.0  # process CPU time during the reply (all threads)
    energy_j: float | None = None
    energy_source: str = "not measured"  # "measured: <reader>" or "estimated: <how>"
    j_per_token: float | None = None  # energy_j (prefill included) / completion_tokens
    engine: str = ""  # what ran the reply, and how (the engine's describe())
    threads: int | None = None
    n_batch: int | None = None  # prompt tokens per engine call
    cpu_backend: str | None = None  # llama.cpp's CPU variant, e.g. "zen4 (AVX2 AVX512 ...)"
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for a person: the reply's figures, then what ran it."""
        ran = " ".join(x for x in (self.engine, self.cpu_backend) if x)
        ran += f", {self.threads} threads" if self.threads else ""
        return (f"{self.completion_tokens} tokens, TTFT {self.ttft_s * 1e3:.0f} ms, {self.decode_tok_s:.1f} tok/s, "
                f"stop: {self.stop_reason}" + (f"; {ran}" if ran else ""))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class ReplyTimer:
    """Marks the start, the first token and each later token; fills a Stats."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.t_first = None
        self.marks: list[float] = []

    def token(self):
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        self.marks.append(now)

    def finish(self, stats: Stats, t_prefill_start: float, t_prefill_end: float) -> Stats:
        end = time.perf_counter()
        stats.total_s = end - self.t0
        stats.prefill_s = t_prefill_end - t_prefill_start
        stats.prefill_tok_s = stats.prefill_tokens / stats.prefill_s if stats.prefill_s > 0 else 0.0
        stats.ttft_s = (self.t_first or end) - self.t0
        if len(self.marks) > 1:
            gaps = np.diff(self.marks)
            stats.decode_s = self.marks[-1] - self.marks[0]
            stats.decode_tok_s = len(gaps) / stats.decode_s
            stats.itl_p50_ms = float(np.percentile(gaps, 50) * 1e3)
            stats.itl_p95_ms = float(np.percentile(gaps, 95) * 1e3)
        stats.peak_rss_mb = peak_rss_mb()
        return stats


class NullTimer(ReplyTimer):
    """Probes off: no per-token marks (for measuring what the probes cost)."""

    def token(self):
        pass
