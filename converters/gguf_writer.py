"""Write the in-memory model as an F32 or F16 GGUF with gguf-py: hyper-parameters, full tokenizer, chat
template, general.* metadata; each family (edgechat.core.archs) gives its tensors in llama.cpp's layout
(Q/K permutation, fused projections, norm offsets, generated RoPE tensors) and refuses what llama.cpp
cannot run."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgechat.core import archs
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model


def add_vocab(w, vocab) -> None:
    w.add_tokenizer_model(vocab.model)
    if vocab.pre:
        w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    if vocab.merges:
        w.add_token_merges(vocab.merges)
    for setter, value in ((w.add_bos_token_id, vocab.bos_id), (w.add_eos_token_id, vocab.eos_id),
                          (w.add_eot_token_id, vocab.eot_id), (w.add_unk_token_id, vocab.unk_id),
                          (w.add_pad_token_id, vocab.pad_id)):
        if value is not None:
            setter(int(value))
    w.add_add_bos_token(bool(vocab.add_bos))
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(bool(vocab.add_space_prefix))


def write_gguf(model: Model, path: Path, ftype: str = "f32", on_tensor=None) -> Path:
    """ftype "f32" or "f16" (1-D tensors stay F32, as llama.cpp's converter keeps them)."""
    import gguf

    cfg = model.config
    family = archs.get(cfg.arch)
    refusal = family.gguf_refusal(cfg)
    if refusal:
        raise EdgechatError(f"cannot write GGUF: {refusal}; use --format pte or hf")
    w = gguf.GGUFWriter(str(path), arch=family.gguf_name)
    w.add_type("model")
    w.add_name(model.name)
    w.add_description(f"written by edgechat from {model.source.get('kind', '?')} source")
    family.write_gguf_config(w, cfg)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if ftype == "f16" else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_vocab(w, model.tokenizer.to_gguf(cfg.vocab_size))
    if model.chat_template:
        w.add_chat_template(model.chat_template)

    for name, arr in family.gguf_tensors(cfg, model.state_dict()):
        if ftype == "f16" and arr.ndim > 1:
            arr = arr.astype(np.float16)
        w.add_tensor(name, np.ascontiguousarray(arr))
        if on_tensor:
            on_tensor(name)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
