"""Tokenizers: Hugging Face `tokenizers` (BPE, tokenizer.json) and SentencePiece (tokenizer.model), each
convertible to and from the GGUF vocabulary that llama.cpp reads, so every engine tokenizes alike."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


# GGUF / SentencePiece token types (the same numbering in both).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer regexes llama.cpp knows by name; we build the equivalent `tokenizers` pre-tokenizer.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass
class GGUFVocab:
    """What GGUF stores of a tokenizer (the `tokenizer.ggml.*` keys)."""
    model: str  # "gpt2" (BPE) or "llama" (SentencePiece)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_space_prefix: bool | None = None
    rstrip: frozenset = frozenset()  # added tokens that swallow the whitespace after them (a GGUF has no flag)
    extra: dict = field(default_factory=dict)


# llama.cpp's rule for the tokens a GGUF cannot mark (llama-vocab.cpp, by general.name): in a Phi-3 every special
# token swallows the whitespace after it, as its tokenizer.json's rstrip says, except these three
RSTRIP_NAMES, RSTRIP_KEEP = ("phi-3", "phi3"), frozenset({"<unk>", "<s>", "<|endoftext|>"})


def rstrip_tokens(model_name: str | None, tokens: list[str], types: list[int] | None) -> frozenset:
    if not model_name or not any(n in model_name.lower() for n in RSTRIP_NAMES) or types is None:
        return frozenset()
    special = {t for t, ty in zip(tokens, types) if ty in (CONTROL, USER_DEFINED, UNKNOWN)} | ({"</s>"} & set(tokens))
    return frozenset(special - RSTRIP_KEEP)


class Tokenizer:
    """Common surface: encode/decode, bos/eos ids, and conversion to the GGUF vocabulary."""
    bos_id: int | None
    eos_ids: list[int]
    add_bos: bool

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = self._encode(text)
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def token_text(self, token_id: int) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def to_gguf(self, vocab_size: int) -> GGUFVocab:
        raise NotImplementedError

    def save(self, out_dir: Path) -> list[str]:
        raise NotImplementedError

    @property
    def bos_text(self) -> str:
        return self.token_text(self.bos_id) if self.bos_id is not None else ""

    @property
    def eos_text(self) -> str:
        return self.token_text(self.eos_ids[0]) if self.eos_ids else ""


class HFTokenizer(Tokenizer):
    def __init__(self, tok, bos_id=None, eos_ids=(), add_bos=False, pre=None):
        self.tok = tok
        self.bos_id, self.eos_ids, self.add_bos = bos_id, list(eos_ids), add_bos
        self.pre = pre or detect_pre(json.loads(tok.to_str()).get("pre_tokenizer"))

    def _encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def token_text(self, token_id):
        return self.tok.id_to_token(token_id)

    @property
    def vocab_size(self):
        return self.tok.get_vocab_size(with_added_tokens=True)

    def to_gguf(self, vocab_size):
        data = json.loads(self.tok.to_str())
        vocab = data["model"]["vocab"]
        added = {a["id"]: a for a in data.get("added_tokens", [])}
        tokens, types = [], []
        for i in range(vocab_size):
            text = self.tok.id_to_token(i)
            if text is None:  # vocab padded beyond the tokenizer, as llama.cpp's converter does
                tokens.append(f"[PAD{i}]")
                types.append(UNUSED)
                continue
            tokens.append(text)
            types.append((CONTROL if added[i].get("special") else USER_DEFINED) if i in added else NORMAL)
        merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
        assert len(vocab) <= vocab_size
        return GGUFVocab(model="gpt2", tokens=tokens, types=types, merges=merges, pre=self.pre,
                         bos_id=self.bos_id, eos_id=self.eos_ids[0] if self.eos_ids else None,
                         add_bos=self.add_bos)

    def save(self, out_dir):
        self.tok.save(str(out_dir / "tokenizer.json"))
        return ["tokenizer.json"]

    @classmethod
    def from_gguf(cls, v: GGUFVocab) -> "HFTokenizer":
        from tokenizers import AddedToken, Regex, Tokenizer as _Tok, decoders, models, pre_tokenizers

        vocab = {t: i for i, t in enumerate(v.tokens)}
        merges = [tuple(m.split(" ", 1)) for m in v.merges or []]
        tok = _Tok(models.BPE(vocab=vocab, merges=merges, ignore_merges=v.pre in ("llama-bpe", "llama3")))
        tok.pre_tokenizer = pre_tokenizer_for(v.pre, pre_tokenizers, Regex)
        tok.decoder = decoders.ByteLevel()
        tok.add_tokens([AddedToken(t, special=ty == CONTROL, normalized=False, rstrip=t in v.rstrip)
                        for t, ty in zip(v.tokens, v.types) if ty in (CONTROL, USER_DEFINED)])
        return cls(tok, bos_id=v.bos_id, eos_ids=eos_list(v), add_bos=v.add_bos, pre=v.pre)


def eos_list(v: GGUFVocab) -> list[int]:
    return [i for i in dict.fromkeys([v.eos_id, v.eot_id]) if i is not None]


def pre_tokenizer_for(pre, pre_tokenizers, Regex):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    split = {"qwen2": QWEN2_REGEX, "llama-bpe": LLAMA3_REGEX, "llama3": LLAMA3_REGEX}.get(pre)
    if split:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])
    level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), level])
    return level


def detect_pre(pre: dict | None) -> str:
    """Name the pre-tokenizer the way llama.cpp's `tokenizer.ggml.pre` does."""
    text = json.dumps(pre or {})
    if '"Digits"' in text and '"individual_digits": true' in text:
        return "smollm"
    if "\\\\p{N}{1,3}" in text or r"\p{N}{1,3}" in text:
        return "llama-bpe"
    if "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}|" in text or r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|" in text:
        return "qwen2"
    return "gpt-2"  # llama.cpp's name for the plain GPT-2 byte-level regex


class SPTokenizer(Tokenizer):
    def __init__(self, proto: bytes, add_bos=True):
        import sentencepiece as spm

        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.sp.encode("probe")  # a damaged proto can parse into a model that is "not initialized": fail here
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_ids = [self.sp.eos_id()] if self.sp.eos_id() >= 0 else []
        self.add_bos = add_bos

    def _encode(self, text):
        return self.sp.encode(text)

    def decode(self, ids):
        return self.sp.decode([i for i in ids if not self.sp.is_control(i)])

    def token_text(self, token_id):
        return self.sp.id_to_piece(token_id)

    @property
    def vocab_size(self):
        return self.sp.get_piece_size()

    def _model_proto(self):
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(self.proto)
        return m

    def to_gguf(self, vocab_size):
        m = self._model_proto()
        tokens = [p.piece for p in m.pieces]
        scores = [p.score for p in m.pieces]
        types = [int(p.type) for p in m.pieces]
        for i in range(len(tokens), vocab_size):
            tokens.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(UNUSED)
        sp = self.sp
        return GGUFVocab(model="llama", tokens=tokens, types=types, scores=scores, pre="default",
                         bos_id=self.bos_id, eos_id=self.eos_ids[0] if self.eos_ids else None,
                         unk_id=sp.unk_id() if sp.unk_id() >= 0 else None,
                         pad_id=sp.pad_id() if sp.pad_id() >= 0 else None, add_bos=self.add_bos,
                         add_space_prefix=m.normalizer_spec.add_dummy_prefix)

    def save(self, out_dir):
        (out_dir / "tokenizer.model").write_bytes(self.proto)
        return ["tokenizer.model"]

    @classmethod
    def from_gguf(cls, v: GGUFVocab) -> "SPTokenizer":
        """Rebuild a SentencePiece BPE model from GGUF pieces and scores (what llama.cpp keeps of it)."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.trainer_spec.model_type = pb.TrainerSpec.BPE
        m.trainer_spec.byte_fallback = BYTE in v.types
        m.trainer_spec.vocab_size = len(v.tokens)
        for name, idx in (("unk_id", v.unk_id), ("bos_id", v.bos_id), ("eos_id", v.eos_id), ("pad_id", v.pad_id)):
            setattr(m.trainer_spec, name, -1 if idx is None else idx)
        m.normalizer_spec.name = "identity"
        m.normalizer_spec.add_dummy_prefix = True if v.add_space_prefix is None else v.add_space_prefix
        m.normalizer_spec.remove_extra_whitespaces = False
        m.normalizer_spec.escape_whitespaces = True
        for tok, score, ty in zip(v.tokens, v.scores, v.types):
            m.pieces.add(piece=tok, score=score, type=ty)
        return cls(m.SerializeToString(), add_bos=v.add_bos)
