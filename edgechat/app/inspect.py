"""What an artifact holds: architecture, parameter count, tensor types, tokenizer, template, manifest."""
from __future__ import annotations

import collections
import json
from pathlib import Path

from edgechat.core.errors import EdgechatError
from edgechat.core.manifest import read_manifest


def describe_gguf(path: Path) -> dict:
    """From the header alone (no tensor data, no vocabulary strings): a second for any model size."""
    from edgechat.core import archs
    from edgechat.core.gguf_file import read_header

    h = read_header(path)
    n_vocab = h.arrays.get("tokenizer.ggml.tokens", 0)
    cfg = archs.for_gguf(h.arch).config_from_gguf(h.meta, h.tensors, n_vocab)
    types = collections.Counter(t for _, t in h.tensors.values())
    model = h.meta.get("tokenizer.ggml.model")
    return {
        "file": str(path), "format": "gguf", "bytes": path.stat().st_size,
        "name": h.meta.get("general.name"), "architecture": cfg.arch, "params": h.params,
        "layers": cfg.num_layers, "hidden": cfg.hidden_size, "heads": f"{cfg.num_heads}/{cfg.num_kv_heads}",
        "context": cfg.max_seq_len, "tensor_types": dict(types),
        "tokenizer": f"{model} ({h.meta.get('tokenizer.ggml.pre')}), {n_vocab} tokens" if model else None,
        "chat_template": bool(h.meta.get("tokenizer.chat_template")),
    }


def describe(artifact: str | None) -> dict:
    from edgechat.core.sources import resolve_artifact

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
