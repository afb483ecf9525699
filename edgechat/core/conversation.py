"""The one way a conversation becomes token ids: the model's chat template rendered as transformers renders
it, BOS added when the model wants it and the template did not write it, and the end-of-turn ids. Engines,
the Chat API, distillation, calibration and evaluation all go through ChatFormat, so one conversation gives
the same ids on every engine."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgechat.core import archs, chat_template


@dataclass(frozen=True)
class ChatFormat:
    template: str | None
    tokenize: Callable[[str, bool], list[int]]  # (text, add_bos) -> ids, special tokens written in text parsed
    bos_text: str = ""
    eos_text: str = ""
    add_bos: bool = False
    eog_ids: frozenset[int] = frozenset()  # end-of-generation ids: EOS and the template's end-of-turn tokens

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return chat_template.render(self.template, messages, add_generation_prompt,
                                    bos_token=self.bos_text, eos_token=self.eos_text)

    def encode(self, text: str) -> list[int]:
        """Tokenize rendered text; BOS is added when the model wants it and the template did not write it."""
        add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self.tokenize(text, add_bos)

    def ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.render(messages, add_generation_prompt))

    def assistant_spans(self, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
        """The conversation's ids and each assistant turn's [start, end) in them: from the end of the generation
        prompt before it to the end of its turn, end-of-turn marker included. Evaluation scores these tokens
        and distillation trains on them, so both use this one rule."""
        ids = self.ids(messages, add_generation_prompt=False)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                start = len(self.ids(messages[:i], add_generation_prompt=True))
                end = min(len(self.ids(messages[:i + 1], add_generation_prompt=False)), len(ids))
                if start < end:
                    spans.append((start, end))
        return ids, spans


def end_of_turn_ids(tokenize: Callable[[str, bool], list[int]], template: str | None) -> frozenset[int]:
    """Chat templates end a turn with a token the tokenizer may not list as EOS (ChatML's <|im_end|>): the
    registered families' markers that this template writes and that are one token."""
    out = set()
    for marker in archs.end_of_turn_markers():
        if template and marker in template:
            ids = tokenize(marker, False)
            if len(ids) == 1:
                out.add(ids[0])
    return frozenset(out)


def for_tokenizer(tok, template: str | None) -> ChatFormat:
    """The ChatFormat of an edgechat Tokenizer (core.tokenizer) and a chat template."""
    tokenize = lambda text, add_bos: tok.encode(text, add_bos=add_bos)  # noqa: E731
    return ChatFormat(template, tokenize, tok.bos_text, tok.eos_text, tok.add_bos,
                      frozenset(tok.eos_ids) | end_of_turn_ids(tokenize, template))


def token_sequences(fmt: ChatFormat, data, n_ctx: int = 512, limit: int | None = None) -> list[list[int]]:
    """Calibration sequences: each dialogue rendered whole (cut to n_ctx), or raw text in n_ctx windows.
    data: core.data.EvalData."""
    if data.kind == "dialogues":
        seqs = [fmt.ids(d, add_generation_prompt=False)[:n_ctx] for d in data.dialogues]
    else:
        ids = fmt.tokenize(data.text, False)
        seqs = [ids[i:i + n_ctx] for i in range(0, len(ids), n_ctx)]
    return [s for s in seqs if len(s) > 1][:limit]


def calibration_sequences(model, path: str | None, n_ctx: int = 512, limit: int = 64) -> list[list[int]]:
    """The model's calibration text (default: the first `limit` chit-chat dialogues) as token sequences."""
    from edgechat.core.data import EvalData, chitchat_dialogues, read_eval_data

    data = read_eval_data(path) if path else EvalData("dialogues", "chitchat", dialogues=chitchat_dialogues(0, limit))
    return token_sequences(model.chat_format(), data, n_ctx, limit)
