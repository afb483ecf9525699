"""Many replies at once on llama.cpp: continuous batching over parallel sequences in one context, as llama.cpp's
own `parallel` example does. For work that wants many whole replies and no streaming (the teacher's distillation
data): one llama_decode runs a token of every live sequence, so the weights are read once for all of them, where
one-at-a-time decoding reads them once a token. Each sequence has its own KV cells; a finished one is cleared and
the next prompt takes its slot, its prompt prefilled in the same decode as the others' next tokens.

Stopping follows edgechat.app.chat exactly (an end-of-generation token, max_tokens, or the engine's context full),
so a reply is the one Chat.send gives with the same sampler, up to the float rounding of batched kernels."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgechat.core.errors import EdgechatError
from runtimes.base import finite

PARALLEL = 16  # sequences decoded together: on 2-4 CPU cores the gain flattens out past about this


@dataclass
class _Slot:
    index: int  # which prompt
    n_prompt: int
    sample: Callable[[np.ndarray], int]
    row: int = -1  # its logits' row in the current batch
    out: list[int] = field(default_factory=list)


def generate_many(engine, prompts: list[list[int]], max_tokens: int, samplers: list[Callable[[np.ndarray], int]],
                  parallel: int = PARALLEL, progress: Callable[[int], None] | None = None) -> list[list[int] | None]:
    """The generated ids (without the end-of-generation token) for each prompt, in order; None for a prompt
    that does not fit the engine's context (Chat refuses those). samplers: one per prompt (logits -> id, e.g.
    edgechat.app.sampling.Sampler). progress(done) is called as replies finish."""
    from llama_cpp import _internals

    lib, n_ctx = engine._lib, engine.n_ctx
    n_seq = max(1, min(parallel, len(prompts), lib.llama_max_parallel_sequences()))
    longest = max((len(p) for p in prompts if len(p) < n_ctx), default=1)
    per_seq = min(n_ctx, longest + max_tokens)
    # the engine's own settings (threads, K/V types, attention), with cells for n_seq sequences
    params = type(engine.llm.context_params).from_buffer_copy(engine.llm.context_params)
    n_batch = max(512, per_seq + n_seq)
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = per_seq * n_seq, n_batch, 512, n_seq
    try:
        ctx = _internals.LlamaContext(model=engine.llm._model, params=params, verbose=False)
    except ValueError as e:
        raise EdgechatError(f"llama.cpp could not make a context of {n_seq} x {per_seq} tokens: {e}") from None
    batch = lib.llama_batch_init(n_batch, 0, 1)
    results: list[list[int] | None] = [None] * len(prompts)
    queue = deque(i for i, p in enumerate(prompts) if len(p) < n_ctx)
    slots: list[_Slot | None] = [None] * n_seq
    done = len(prompts) - len(queue)

    def put(n: int, tok: int, pos: int, seq: int, want: bool) -> None:
        batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = tok, pos, 1, want
        batch.seq_id[n][0] = seq

    try:
        while queue or any(slots):
            n = 0
            for s, slot in enumerate(slots):  # each live sequence's last token
                if slot is not None:
                    put(n, slot.out[-1], slot.n_prompt + len(slot.out) - 1, s, True)
                    slot.row, n = n, n + 1
            for s in range(n_seq):  # new prompts into free slots, while the batch has room
                if slots[s] is not None or not queue or n + len(prompts[queue[0]]) > n_batch:
                    continue
                i = queue.popleft()
                for k, tok in enumerate(prompts[i]):
                    put(n + k, tok, k, s, k == len(prompts[i]) - 1)
                n += len(prompts[i])
                slots[s] = _Slot(i, len(prompts[i]), samplers[i], n - 1)
            batch.n_tokens = n
            rc = lib.llama_decode(ctx.ctx, batch)
            if rc != 0:
                raise EdgechatError(f"llama.cpp's batched decode failed (llama_decode returned {rc})")
            for s, slot in enumerate(slots):
                if slot is None:
                    continue
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx.ctx, slot.row), shape=(engine.n_vocab,))
                tok = slot.sample(finite(logits, len(slot.out)))
                if tok not in engine.eog_ids:
                    slot.out.append(tok)
                    if len(slot.out) < max_tokens and slot.n_prompt + len(slot.out) < n_ctx:
                        continue
                results[slot.index] = slot.out
                lib.llama_memory_seq_rm(ctx.memory, s, -1, -1)
                slots[s] = None
                done += 1
                if progress:
                    progress(done)
    finally:
        lib.llama_batch_free(batch)
        ctx.close()
    return results
