"""Value checks on a model's configuration, before a family maps it or a tensor is allocated: sizes are positive
integers of a sane magnitude, heads divide the way the one Transformer (and llama.cpp) needs, and the vocabulary
agrees with the tokenizer. A bad value is one EdgechatError naming the file and the key, not a ZeroDivisionError
or a TypeError from the family's mapping."""
from __future__ import annotations

import math

from edgechat.core.errors import EdgechatError

MAX_SIZE = 1 << 31  # any dimension past this is a corrupt file, not a model
MAX_CONTEXT = 1 << 24  # 16M tokens, past any real model; llama.cpp took 38 s to open a file claiming 2e9 (fuzzing)
# config.json keys every family reads: (key, required)
HF_SIZES = (("vocab_size", True), ("hidden_size", True), ("intermediate_size", True), ("num_hidden_layers", True),
            ("num_attention_heads", True), ("num_key_value_heads", False), ("head_dim", False),
            ("max_position_embeddings", False))
HF_FLOATS = ("rope_theta", "rms_norm_eps")


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < MAX_SIZE


def _positive_float(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def check_shape(where: str, hidden: int, heads: int, kv_heads: int, head_dim: int | None) -> None:
    if heads % kv_heads:
        raise EdgechatError(f"{where}: the attention heads ({heads}) must be a multiple of the KV heads ({kv_heads})")
    if head_dim is None and hidden % heads:
        raise EdgechatError(f"{where}: the hidden size ({hidden}) must be a multiple of the attention heads ({heads})")
    if (head_dim or hidden // heads) % 2:
        raise EdgechatError(f"{where}: the head dimension ({head_dim or hidden // heads}) must be even (RoPE rotates pairs)")


def check_hf_config(raw, where: str) -> None:
    """config.json values, before the family builds a ModelConfig from them."""
    if not isinstance(raw, dict):
        raise EdgechatError(f"{where}: config.json must hold a JSON object, not {type(raw).__name__}")
    archs = raw.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise EdgechatError(f"{where}: 'architectures' must be a list of names, got {archs!r:.80}")
    if not isinstance(raw.get("model_type", ""), str):
        raise EdgechatError(f"{where}: 'model_type' must be a string")
    for key in ("max_position_embeddings", *HF_FLOATS):  # families read these with .get(key, default): null breaks it
        if key in raw and raw[key] is None:
            raise EdgechatError(f"{where}: {key} is null: give a number or leave the key out")
    for key, required in HF_SIZES:
        v = raw.get(key)
        if v is None and not required:
            continue
        if v is None:
            raise EdgechatError(f"{where}: config.json is missing the key {key!r}")
        if not _positive_int(v):
            raise EdgechatError(f"{where}: {key} must be a positive integer below 2**31, got {v!r:.80}")
    if (raw.get("max_position_embeddings") or 0) > MAX_CONTEXT:
        raise EdgechatError(f"{where}: max_position_embeddings {raw['max_position_embeddings']} is beyond any model's "
                            f"context (at most {MAX_CONTEXT})")
    for key in HF_FLOATS:
        if raw.get(key) is not None and not _positive_float(raw[key]):
            raise EdgechatError(f"{where}: {key} must be a positive number, got {raw[key]!r:.80}")
    for key in ("rope_scaling", "rope_parameters"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise EdgechatError(f"{where}: {key} must be a JSON object or null, got {raw[key]!r:.80}")
    for key in ("rope_scaling", "rope_parameters"):
        for k, v in (raw.get(key) or {}).items():
            if k in ("rope_type", "type") and not isinstance(v, str):
                raise EdgechatError(f"{where}: {key}.{k} must be a string, got {v!r:.80}")
            if k == "rope_theta" and not _positive_float(v):
                raise EdgechatError(f"{where}: {key}.rope_theta must be a positive number, got {v!r:.80}")
    for key in ("tie_word_embeddings", "attention_bias"):
        if raw.get(key) is not None and not isinstance(raw[key], bool):
            raise EdgechatError(f"{where}: {key} must be true or false, got {raw[key]!r:.80}")
    heads = raw["num_attention_heads"]
    check_shape(where, raw["hidden_size"], heads, raw.get("num_key_value_heads") or heads, raw.get("head_dim"))


def check_gguf_meta(header) -> None:
    """The hyper-parameters and tokenizer keys of a GGUF header of a registered architecture."""
    from edgechat.core import archs

    meta, arch = header.meta, header.arch
    families = [archs.get(n) for n in archs.names()]
    family = next((f for f in families if f.gguf_name == arch), None)
    got = {}
    if family is not None:
        for key, attr, vtype in family.gguf_keys():
            if key in header.arrays:
                raise EdgechatError(f"GGUF metadata {key} must be a number, not an array")
            if key not in meta:
                continue
            v = meta[key]
            ok = _positive_float(v) if vtype.startswith("float") else _positive_int(v)
            if not ok:
                raise EdgechatError(f"GGUF metadata {key} must be a positive {vtype}, got {v!r:.80}")
            if attr == "max_seq_len" and v > MAX_CONTEXT:
                raise EdgechatError(f"GGUF metadata {key} {v} is beyond any model's context (at most {MAX_CONTEXT})")
            got.setdefault(attr, v)
        if "hidden_size" in got and "num_heads" in got:
            check_shape(f"GGUF {arch}", got["hidden_size"], got["num_heads"], got.get("num_kv_heads") or got["num_heads"],
                        got.get("head_dim"))
    n_tokens = header.arrays.get("tokenizer.ggml.tokens")
    if n_tokens is None:
        return
    for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        if key in header.arrays and header.arrays[key] != n_tokens:
            raise EdgechatError(f"GGUF {key} has {header.arrays[key]} entries for {n_tokens} tokens")
    for k in ("bos", "eos", "eot", "unknown", "padding"):
        v = meta.get(f"tokenizer.ggml.{k}_token_id")
        if v is not None and not 0 <= v < n_tokens:
            raise EdgechatError(f"GGUF tokenizer.ggml.{k}_token_id {v} is outside the vocabulary of {n_tokens} tokens")
    if got.get("vocab_size") is not None and got["vocab_size"] < n_tokens:
        raise EdgechatError(f"GGUF vocab_size {got['vocab_size']} is smaller than the tokenizer's {n_tokens} tokens")


def check_vocab(cfg, tokenizer, where: str) -> None:
    """The embedding has a row for every token the tokenizer can produce, and the special ids are in range."""
    n = tokenizer.vocab_size
    if n > cfg.vocab_size:
        raise EdgechatError(f"{where}: the tokenizer has {n} tokens but vocab_size is {cfg.vocab_size}: "
                            "the tokenizer does not belong to this model")
    for name, ids in (("bos", [tokenizer.bos_id]), ("eos", tokenizer.eos_ids)):
        for i in ids:
            if i is not None and not (isinstance(i, int) and 0 <= i < cfg.vocab_size):
                raise EdgechatError(f"{where}: the {name} token id {i!r} is outside the vocabulary of {cfg.vocab_size}")


def check_layer_count(cfg, tensor_names, where: str) -> None:
    """The config's layer count against the blocks the file holds (HF `model.layers.N.`, GGUF `blk.N.`), before
    a module of that many layers is built: a corrupt count of 2**30 would otherwise build for hours."""
    import re

    found = {int(m.group(1)) for n in tensor_names if (m := re.match(r"(?:model\.layers|blk)\.(\d+)\.", n))}
    n = max(found) + 1 if found else 0
    if n != cfg.num_layers:
        raise EdgechatError(f"{where}: the config says {cfg.num_layers} layers but the weights hold {n}")
