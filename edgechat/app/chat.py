"""The Chat API: multi-turn history over any engine, one chat-template rendering, streaming, stats."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterator

from edgechat.core.errors import EdgechatError
from edgechat.probes.latency import NullTimer, ReplyTimer, Stats
from edgechat.app.sampling import Sampler, SamplingParams
from runtimes.base import Engine, finite


@dataclass
class Reply:
    text: str
    token_ids: list[int]
    stats: Stats = field(default_factory=Stats)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Chat:
    def __init__(self, engine: Engine, system: str | None = None, **sampling):
        self.engine = engine
        d = engine.describe()
        self.engine_facts = {"engine": d["engine"], "threads": d.get("threads"), "n_batch": d.get("n_batch"),
                             "cpu_backend": (d.get("cpu_backend") or {}).get("label")}
        self.format = engine.chat_format  # the one conversation encoding (edgechat.core.conversation)
        self.system = system
        self.params = SamplingParams(**sampling)
        self.messages: list[dict] = []
        self.last_reply: Reply | None = None
        self._cached: list[int] = []  # ids whose K/V the engine holds, from position 0
        self.load_s = 0.0  # set by edgechat.load: opening the engine
        self.probes = True  # False: no per-token marks and no energy reading (to measure their cost)
        self.meter = None  # edgechat.probes.energy.EnergyMeter; None: the default one, made on the first reply

    # -- conversation ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.messages = []
        self._cached = []
        self.engine.reset()

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as the model's chat template writes it, with the system message first."""
        convo = ([{"role": "system", "content": self.system}] if self.system else []) + messages
        return self.format.render(convo, add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        return self.format.encode(text)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.encode(self.render(messages))

    def _fit(self, reserve: int) -> tuple[list[int], int]:
        """Render the history, dropping the oldest turns (never the system message) until it fits."""
        n_ctx, dropped = self.engine.n_ctx, 0
        while True:
            ids = self.prompt_ids(self.messages)
            if len(ids) + reserve <= n_ctx or (len(self.messages) == 1 and len(ids) < n_ctx):
                return ids, dropped
            if len(self.messages) == 1:
                raise EdgechatError(f"the message is {len(ids)} tokens with the chat template, but the context "
                                    f"holds {n_ctx}: shorten it or load with a larger n_ctx")
            drop = 2 if len(self.messages) > 2 and self.messages[1]["role"] == "assistant" else 1
            del self.messages[:drop]
            dropped += drop

    # -- generation --------------------------------------------------------------------------------
    def send(self, text: str, stream: bool = False, **sampling) -> Reply | Iterator[str]:
        """Add a user turn and generate the assistant's reply. stream=True yields text pieces and leaves
        the whole Reply in `chat.last_reply`."""
        self.messages.append({"role": "user", "content": text})
        params = replace(self.params, **sampling)
        try:
            ids, dropped = self._fit(reserve=min(params.max_tokens, self.engine.n_ctx // 2))
        except EdgechatError:
            self.messages.pop()
            raise
        gen = self._generate(ids, params, as_turn=True)
        if stream:
            return self._stream(gen, dropped)
        for _ in self._stream(gen, dropped):
            pass
        return self.last_reply

    def complete(self, prompt: str, stream: bool = False, add_bos: bool | None = None, **sampling):
        """Plain text continuation, no chat template and no history (for base models)."""
        params = replace(self.params, **sampling)
        e = self.engine
        ids = e.tokenize(prompt, add_bos=e.add_bos if add_bos is None else add_bos)
        if len(ids) >= e.n_ctx:
            raise EdgechatError(f"the prompt is {len(ids)} tokens, but the context holds {e.n_ctx}")
        gen = self._stream(self._generate(ids, params, as_turn=False), 0)
        if stream:
            return gen
        for _ in gen:
            pass
        return self.last_reply

    def _stream(self, gen, dropped):
        yield from gen
        self.last_reply.stats.dropped_messages = dropped

    def _generate(self, ids: list[int], params: SamplingParams, as_turn: bool, until=None) -> Iterator[str]:
        """until: called after each piece; True ends the reply there (stop sequences, a client gone)."""
        e, sampler, timer = self.engine, Sampler(params), ReplyTimer() if self.probes else NullTimer()
        if self.probes and self.meter is None:
            from edgechat.probes.energy import environment_meter

            self.meter = environment_meter()
        energy_mark = self.meter.begin() if self.probes else None
        stats = Stats(prompt_tokens=len(ids), **self.engine_facts)
        reuse = min(common_prefix(self._cached, ids), len(ids) - 1)  # always run at least one token
        stats.cached_tokens, stats.prefill_tokens = reuse, len(ids) - reuse
        t_pre = time.perf_counter()
        logits = finite(e.forward(ids[reuse:], reuse), 0)
        t_pre_end = time.perf_counter()
        self._cached = list(ids)
        out: list[int] = []
        emitted, prefix, read = "", 0, 0  # incremental detokenization window, as vLLM does it
        stop = "length"
        while len(out) < params.max_tokens:
            tok = sampler(logits)
            timer.token()
            if tok in e.eog_ids:
                stop = "eos"
                break
            out.append(tok)
            before = e.detokenize(out[prefix:read])
            now = e.detokenize(out[prefix:])
            if not now.endswith("\ufffd") and len(now) > len(before):  # hold back partial UTF-8
                piece = now[len(before):]
                emitted += piece
                prefix, read = read, len(out)
                yield piece
                if until is not None and until():
                    stop = "stop"
                    break
            if len(ids) + len(out) >= e.n_ctx:
                stop = "context"
                break
            if len(out) >= params.max_tokens:
                break
            logits = finite(e.forward([tok], len(ids) + len(out) - 1), len(out))
            self._cached.append(tok)
        text = e.detokenize(out)
        if len(text) > len(emitted) and text.startswith(emitted):
            yield text[len(emitted):]
        stats.completion_tokens = len(out)
        stats.stop_reason = stop
        timer.finish(stats, t_pre, t_pre_end)
        stats.load_s = self.load_s
        if energy_mark is not None:
            r = self.meter.end(energy_mark)
            stats.cpu_s, stats.energy_j, stats.energy_source = r.cpu_s, r.energy_j, r.source
            if r.energy_j is not None and stats.completion_tokens:
                stats.j_per_token = r.energy_j / stats.completion_tokens
        if as_turn:
            self.messages.append({"role": "assistant", "content": text})
        else:
            self._cached = []
        self.last_reply = Reply(text=text, token_ids=out, stats=stats)
