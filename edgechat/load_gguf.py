"""Load a GGUF file (llama or qwen2 architecture) into the in-memory model, dequantized to fp32 by gguf-py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgechat.config import ModelConfig
from edgechat.errors import EdgechatError
from edgechat.gguf_header import scan_gguf
from edgechat.gguf_layout import GGUF_ARCHS, hf_to_gguf_names, qk_heads, unpermute_qk
from edgechat.model import Model, build_module, sha256_of
from edgechat.tokenizer import GGUFVocab, HFTokenizer, SPTokenizer
from edgechat.transformer import Transformer


def open_gguf(path: Path):
    import gguf

    scan_gguf(path)  # magic, header and tensor extents, with clear errors
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # gguf-py raises assorted errors on bad bytes
        raise EdgechatError(f"{path} is truncated or corrupt: gguf-py cannot read it ({e})") from None


def field_value(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_vocab(reader) -> GGUFVocab:
    kv = lambda k, d=None: field_value(reader, f"tokenizer.ggml.{k}", d)  # noqa: E731
    if kv("model") is None or kv("tokens") is None:
        raise EdgechatError("the GGUF file has no tokenizer (tokenizer.ggml.model/tokens): edgechat needs one")
    return GGUFVocab(model=kv("model"), tokens=kv("tokens"), types=kv("token_type"), scores=kv("scores"),
                     merges=kv("merges"), pre=kv("pre"), bos_id=kv("bos_token_id"), eos_id=kv("eos_token_id"),
                     eot_id=kv("eot_token_id"), unk_id=kv("unknown_token_id"), pad_id=kv("padding_token_id"),
                     add_bos=bool(kv("add_bos_token", False)), add_space_prefix=kv("add_space_prefix"))


def tokenizer_from_vocab(v: GGUFVocab):
    if v.model == "gpt2":
        return HFTokenizer.from_gguf(v)
    if v.model == "llama":
        return SPTokenizer.from_gguf(v)
    raise EdgechatError(f"unsupported GGUF tokenizer model {v.model!r}: edgechat reads 'gpt2' (BPE) and 'llama' (SentencePiece)")


def config_from_gguf(reader, n_vocab: int) -> ModelConfig:
    arch = field_value(reader, "general.architecture")
    if arch not in GGUF_ARCHS:
        raise EdgechatError(f"unsupported GGUF architecture {arch!r}: edgechat supports {', '.join(GGUF_ARCHS)}")
    a = lambda k, d=None: field_value(reader, f"{arch}.{k}", d)  # noqa: E731
    names = {t.name for t in reader.tensors}
    n_embd, n_head = a("embedding_length"), a("attention.head_count")
    return ModelConfig(
        arch=arch, vocab_size=a("vocab_size") or n_vocab, hidden_size=n_embd,
        intermediate_size=a("feed_forward_length"), num_layers=a("block_count"), num_heads=n_head,
        num_kv_heads=a("attention.head_count_kv") or n_head, head_dim=a("attention.key_length") or n_embd // n_head,
        max_seq_len=a("context_length", 2048), rope_theta=float(a("rope.freq_base", 10000.0)),
        rms_norm_eps=float(a("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_word_embeddings="output.weight" not in names, attention_bias="blk.0.attn_q.bias" in names)


def dequantize(t) -> np.ndarray:
    import gguf

    shape = [int(x) for x in reversed(t.shape)]
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)


def load_gguf(path: Path) -> Model:
    reader = open_gguf(path)
    vocab = read_vocab(reader)
    cfg = config_from_gguf(reader, len(vocab.tokens))
    with torch.device("meta"):
        hf_names = list(Transformer(cfg).state_dict())
    if cfg.tie_word_embeddings:
        hf_names.remove("lm_head.weight")
    to_gguf = hf_to_gguf_names(cfg, hf_names)
    tensors = {t.name: t for t in reader.tensors}
    state = {}
    for hf_name, g_name in to_gguf.items():
        if g_name in tensors:
            w = dequantize(tensors[g_name])
            heads = qk_heads(hf_name, cfg)
            state[hf_name] = torch.from_numpy(unpermute_qk(w, heads) if heads else w.copy())
    module = build_module(cfg, state, str(path))
    template = field_value(reader, "tokenizer.chat_template")
    name = field_value(reader, "general.name") or path.stem
    source = {"path": str(path), "kind": "gguf", "sha256": sha256_of([path])}
    return Model(cfg, module, tokenizer_from_vocab(vocab), template, source, name=name)
