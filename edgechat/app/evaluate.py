"""Quality of an artifact against the fp32 reference: perplexity, mean KL divergence and top-1 agreement,
scored the way llama.cpp's perplexity tool does (chunks of n_ctx tokens, BOS first, second half scored)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgechat.core.data import EvalData
from edgechat.core.errors import EdgechatError


@dataclass
class Quality:
    data: str
    mode: str
    n_ctx: int
    sequences: int
    tokens_scored: int
    ppl: float
    ref_ppl: float
    ppl_ratio: float
    mean_kld: float
    kld_p99: float
    top1_agreement: float

    def as_dict(self):
        return asdict(self)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def text_sequences(engine, text: str, n_ctx: int, max_chunks: int | None):
    """llama.cpp perplexity: tokenize all (with BOS), cut into n_ctx chunks, put BOS first in each chunk,
    score positions n_ctx/2 .. n_ctx-2 (each predicting the next token)."""
    ids = engine.tokenize(text, add_bos=engine.add_bos)
    n_chunks = len(ids) // n_ctx
    if max_chunks:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks == 0:
        raise EdgechatError(f"the evaluation text is {len(ids)} tokens, shorter than one chunk of {n_ctx}")
    bos = engine.tokenize("", add_bos=True)[:1] if engine.add_bos else []
    first = n_ctx // 2
    for c in range(n_chunks):
        chunk = list(ids[c * n_ctx:(c + 1) * n_ctx])
        if bos:
            chunk[0] = bos[0]
        yield chunk, np.arange(first, n_ctx - 1)


def dialogue_sequences(engine, dialogues: list[list[dict]], n_ctx: int):
    """Each dialogue through the chat template; score the tokens of every assistant turn (and its end marker)."""
    fmt = engine.chat_format
    for msgs in dialogues:
        full, spans = fmt.assistant_spans(msgs)
        positions = [p for start, end in spans for p in range(start - 1, min(end, n_ctx) - 1)]  # predicting them
        full = full[:n_ctx]
        positions = [p for p in positions if p + 1 < len(full)]
        if positions:
            yield full, np.array(positions)


def evaluate(engine, reference, data: EvalData, n_ctx: int = 512, max_chunks: int | None = 40,
             on_sequence=None) -> Quality:
    """engine, reference: engines opened so that logits_all() works. Token ids come from `engine`."""
    seqs = (text_sequences(engine, data.text, n_ctx, max_chunks) if data.kind == "text"
            else dialogue_sequences(engine, data.dialogues, n_ctx))
    nll, ref_nll, klds, agree, n_seq = [], [], [], [], 0
    for ids, pos in seqs:
        la, lr = engine.logits_all(ids), reference.logits_all(ids)
        for who, x in (("the artifact", la), ("the reference", lr)):
            if not np.isfinite(x).all():
                raise EdgechatError(f"{who} produced non-finite logits (NaN or Inf) on sequence {n_seq + 1} of "
                                    f"{data.name}: its weights or its engine are broken, so no figure would mean anything")
        if la.shape[-1] != lr.shape[-1]:
            raise EdgechatError(f"vocabulary mismatch: the artifact has {la.shape[-1]} tokens, the reference {lr.shape[-1]}")
        targets = np.asarray(ids)[pos + 1]
        for s in range(0, len(pos), 128):  # bounded float64 work at a time
            p, t = pos[s:s + 128], targets[s:s + 128]
            lpa, lpr = log_softmax(la[p]), log_softmax(lr[p])
            rows = np.arange(len(p))
            nll.append(-lpa[rows, t])
            ref_nll.append(-lpr[rows, t])
            klds.append((np.exp(lpr) * (lpr - lpa)).sum(-1))
            agree.append(lpa.argmax(-1) == lpr.argmax(-1))
        n_seq += 1
        if on_sequence:
            on_sequence(n_seq)
    if not nll:
        raise EdgechatError(f"nothing to score in {data.name}")
    nll, ref_nll, kld, agree = map(np.concatenate, (nll, ref_nll, klds, agree))
    ppl, ref_ppl = float(np.exp(nll.mean())), float(np.exp(ref_nll.mean()))
    return Quality(data=data.name, mode=data.kind, n_ctx=n_ctx, sequences=n_seq, tokens_scored=int(nll.size),
                   ppl=ppl, ref_ppl=ref_ppl, ppl_ratio=ppl / ref_ppl, mean_kld=float(kld.mean()),
                   kld_p99=float(np.percentile(kld, 99)), top1_agreement=float(agree.mean()))
