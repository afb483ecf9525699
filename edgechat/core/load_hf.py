"""Load a Hugging Face checkpoint directory (config.json, safetensors or a sharded index, tokenizer, chat template)."""
from __future__ import annotations

import json
from pathlib import Path

from edgechat.core import archs
from edgechat.core.chat_template import template_from_tokenizer_config
from edgechat.core.errors import EdgechatError
from edgechat.core.files import sha256_of
from edgechat.core.model import Model, build_module
from edgechat.core.tokenizer import load_tokenizer_dir, read_json


def read_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise EdgechatError(f"{path} has no config.json: give a Hugging Face checkpoint directory or a .gguf file")
    try:
        return json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgechatError(f"{cfg_path} is not valid JSON (truncated?): {e}") from None


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as e:
            raise EdgechatError(f"{index} is not a valid safetensors index: {e}") from None
        files = [path / s for s in shards]
        for f in files:
            if not f.exists():
                raise EdgechatError(f"{index} names the shard {f.name}, which is missing")
        return files
    if (path / "model.safetensors").exists():
        return [path / "model.safetensors"]
    raise EdgechatError(f"{path} has no model.safetensors (or model.safetensors.index.json): "
                        "edgechat reads safetensors checkpoints only")


def read_safetensors(files: list[Path]) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise EdgechatError(f"{f} is truncated or corrupt ({e}): re-download or re-export it") from None
    return tensors


def load_hf(path: Path) -> Model:
    raw = read_config(path)
    family = archs.for_hf(raw)  # refuses unsupported architectures before reading weights
    cfg = family.config_from_hf(raw)
    tokenizer = load_tokenizer_dir(path, raw)
    if tokenizer is None:
        raise EdgechatError(f"{path} has no tokenizer: expected tokenizer.json or tokenizer.model beside config.json")
    files = weight_files(path)
    state = {family.from_checkpoint_name(k): v for k, v in read_safetensors(files).items()}
    module = build_module(cfg, state, str(path))
    template = template_from_tokenizer_config(read_json(path / "tokenizer_config.json"))
    if (path / "chat_template.jinja").exists():
        template = (path / "chat_template.jinja").read_text()
    source = {"path": str(path), "kind": "hf", "sha256": sha256_of([path / "config.json", *files])}
    return Model(cfg, module, tokenizer, template, source, name=model_name(path))


def model_name(path: Path) -> str:
    """The directory's name, or its parent's when the directory is a generic 'hf' or 'model'."""
    path = path.resolve()
    return path.parent.name if path.name.lower() in ("hf", "model", "checkpoint", "weights") else path.name
