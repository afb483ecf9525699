"""What an artifact holds: architecture, parameter count, tensor types, tokenizer, template, manifest."""
from __future__ import annotations

import collections
import json
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.manifest import read_manifest


def describe_gguf(path: Path) -> dict:
    from edgechat.load_gguf import config_from_gguf, field_value, open_gguf, read_vocab

    reader = open_gguf(path)
    vocab = read_vocab(reader)
    cfg = config_from_gguf(reader, len(vocab.tokens))
    types = collections.Counter(t.tensor_type.name for t in reader.tensors)
    return {
        "file": str(path), "format": "gguf", "bytes": path.stat().st_size,
        "name": field_value(reader, "general.name"), "architecture": cfg.arch,
        "params": int(sum(int(t.n_elements) for t in reader.tensors)),
        "layers": cfg.num_layers, "hidden": cfg.hidden_size, "heads": f"{cfg.num_heads}/{cfg.num_kv_heads}",
        "context": cfg.max_seq_len, "tensor_types": dict(types),
        "tokenizer": f"{vocab.model} ({vocab.pre}), {len(vocab.tokens)} tokens",
        "chat_template": bool(field_value(reader, "tokenizer.chat_template")),
    }


def describe(artifact: str | None) -> dict:
    from edgechat.api import resolve_artifact

    path = resolve_artifact(artifact)
    if path.suffix == ".gguf":
        info = describe_gguf(path)
        manifest = read_manifest(path.parent)
        if manifest:
            info["manifest"] = {k: manifest[k] for k in ("source", "created") if k in manifest}
        return info
    if path.is_dir() and (path / "config.json").exists():
        return {"dir": str(path), "format": "hf", "config": json.loads((path / "config.json").read_text()),
                "files": sorted(p.name for p in path.iterdir())}
    raise EdgechatError(f"cannot inspect {path}: give a .gguf file or an output/HF directory")
