"""Load a GGUF file of a registered architecture into the in-memory model, dequantized to fp32 by gguf-py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgechat.core import archs
from edgechat.core.archs.family import unpermute_qk
from edgechat.core.errors import EdgechatError
from edgechat.core.files import sha256_of
from edgechat.core.gguf_file import read_header
from edgechat.core.model import Model, build_module, expected_tensors
from edgechat.core.hf_files import guarded
from edgechat.core.tokenizer import GGUFVocab, HFTokenizer, SPTokenizer, rstrip_tokens
from edgechat.core.validate import check_layer_count, check_vocab


def open_gguf(path: Path):
    import gguf

    read_header(path)  # magic, header and tensor extents, with clear errors
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
                     add_bos=bool(kv("add_bos_token", False)), add_space_prefix=kv("add_space_prefix"),
                     rstrip=rstrip_tokens(field_value(reader, "general.name"), kv("tokens"), kv("token_type")))


def tokenizer_from_vocab(v: GGUFVocab, path: Path | str = "the GGUF file"):
    if v.model == "llama" and (v.scores is None or v.types is None):
        raise EdgechatError(f"{path}: a SentencePiece ('llama') vocabulary needs tokenizer.ggml.scores and token_type")
    if v.model == "gpt2":
        return guarded(path, "holds a BPE vocabulary the tokenizers library refuses", HFTokenizer.from_gguf, v)
    if v.model == "llama":
        return guarded(path, "holds a SentencePiece vocabulary that cannot be rebuilt", SPTokenizer.from_gguf, v)
    raise EdgechatError(f"unsupported GGUF tokenizer model {v.model!r}: edgechat reads 'gpt2' (BPE) and 'llama' (SentencePiece)")


def config_from_gguf(reader, n_vocab: int):
    family = archs.for_gguf(field_value(reader, "general.architecture"))
    meta = {k: field_value(reader, k) for k in reader.fields if not k.startswith("tokenizer.")}
    tensors = {t.name: t for t in reader.tensors}
    read = lambda name: dequantize(tensors[name]).reshape(-1)  # noqa: E731 (the RoPE factor tensors)
    try:
        return family.config_from_gguf(meta, list(tensors), n_vocab, read)
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as e:  # read_header checks the common keys
        raise EdgechatError(f"the GGUF metadata has a value of the wrong type or range "
                            f"({type(e).__name__}: {str(e)[:120]})") from None


def dequantize(t) -> np.ndarray:
    import gguf

    shape = [int(x) for x in reversed(t.shape)]
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)


def load_gguf(path: Path) -> Model:
    reader = open_gguf(path)
    vocab = read_vocab(reader)
    cfg = config_from_gguf(reader, len(vocab.tokens))
    family = archs.get(cfg.arch)
    check_layer_count(cfg, [t.name for t in reader.tensors], str(path))
    # the names in the family's GGUF layout (Phi-3's fused projections), split back into ours below
    layout = family.to_gguf_layout({n: torch.empty(0) for n in expected_tensors(cfg)}, cfg)
    to_gguf = family.gguf_tensor_names(cfg, layout)
    tensors = {t.name: t for t in reader.tensors}
    state = {}
    for name, g_name in to_gguf.items():
        if g_name in tensors:
            w = guarded(path, f"has tensor {g_name} that gguf-py cannot dequantize", dequantize, tensors[g_name])
            heads = family.qk_permute_heads(name, cfg)
            w = guarded(path, f"has tensor {g_name} of a shape its config cannot have", unpermute_qk, w, heads) if heads else w
            state[name] = torch.from_numpy(family.from_gguf_tensor_data(name, w).copy())
    if len(state) == len(to_gguf):
        state = guarded(path, "has fused tensors of shapes its config cannot have", family.from_gguf_layout, state, cfg)
    tokenizer = tokenizer_from_vocab(vocab, path)
    check_vocab(cfg, tokenizer, str(path))
    module = build_module(cfg, state, str(path))
    template = field_value(reader, "tokenizer.chat_template")
    name = field_value(reader, "general.name") or path.stem
    source = {"path": str(path), "kind": "gguf", "sha256": sha256_of([path])}
    return Model(cfg, module, tokenizer, template, source, name=name)
