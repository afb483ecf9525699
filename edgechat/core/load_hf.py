"""Load a Hugging Face checkpoint directory (config.json, safetensors or a sharded index, tokenizer, chat template)."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from edgechat.core import archs
from edgechat.core.chat_template import template_from_tokenizer_config
from edgechat.core.errors import EdgechatError
from edgechat.core.files import sha256_of
from edgechat.core.model import Model, build_module
from edgechat.core.hf_files import load_tokenizer_dir, read_json
from edgechat.core.validate import check_hf_config, check_layer_count, check_vocab

# safetensors dtypes and their sizes in bytes (the format's own table)
ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
ST_HEADER_LIMIT = 100 << 20  # the safetensors library's own limit on the JSON header


def read_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise EdgechatError(f"{path} has no config.json: give a Hugging Face checkpoint directory or a .gguf file")
    try:
        raw = json.loads(cfg_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise EdgechatError(f"{cfg_path} is not valid JSON (truncated?): {e}") from None
    check_hf_config(raw, str(cfg_path))
    return raw


def read_hf_config(path: Path):
    """(family, ModelConfig) of a checkpoint directory, every value checked first."""
    raw = read_config(path)
    family = archs.for_hf(raw)  # refuses unsupported architectures before reading weights
    try:
        return raw, family, family.config_from_hf(raw)
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as e:
        # check_hf_config covers the keys every family reads; a family's own keys (RoPE variants, features) land here
        raise EdgechatError(f"{path / 'config.json'}: a value has the wrong type or range "
                            f"({type(e).__name__}: {str(e)[:120]})") from None


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_bytes())["weight_map"].values()))
            if not shards or not all(isinstance(s, str) and s and "/" not in s and s not in (".", "..") for s in shards):
                raise ValueError("shard names must be file names beside the index")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise EdgechatError(f"{index} is not a valid safetensors index: {e}") from None
        files = [path / s for s in shards]
        for f in files:
            if not f.is_file():
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
        check_safetensors(f)
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise EdgechatError(f"{f} is truncated or corrupt ({e}): re-download or re-export it") from None
    return tensors


def check_safetensors(f: Path) -> None:
    """The header of a safetensors file, checked the way the format defines it, before any tensor is read:
    a JSON object of {name: {dtype, shape, data_offsets}} whose byte ranges tile the data section exactly."""
    def bad(why):
        return EdgechatError(f"{f} is truncated or corrupt ({why}): re-download or re-export it")

    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise bad("shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > ST_HEADER_LIMIT or 8 + n > size:
            raise bad(f"a header of {n} bytes does not fit in {size} bytes")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise bad(f"its header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data_size, ranges = size - 8 - n, []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise bad("__metadata__ must map names to strings")
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r:.80} needs exactly dtype, shape and data_offsets")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in ST_DTYPES:
            raise bad(f"tensor {name} has unknown dtype {dtype!r:.40}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise bad(f"tensor {name} has shape {shape!r:.80}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                and 0 <= offs[0] <= offs[1] <= data_size):
            raise bad(f"tensor {name} has data_offsets {offs!r:.80} outside the {data_size} data bytes")
        if offs[1] - offs[0] != math.prod(shape) * ST_DTYPES[dtype]:
            raise bad(f"tensor {name}: {dtype} {shape} needs {math.prod(shape) * ST_DTYPES[dtype]} bytes, "
                      f"data_offsets give {offs[1] - offs[0]}")
        ranges.append((offs[0], offs[1], name))
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            raise bad(f"tensor {name} starts at byte {begin}, expected {end} (overlap or gap)")
        end = stop
    if end != data_size:
        raise bad(f"the tensors cover {end} of {data_size} data bytes")


def load_hf(path: Path) -> Model:
    raw, family, cfg = read_hf_config(path)
    tokenizer = load_tokenizer_dir(path, raw)
    if tokenizer is None:
        raise EdgechatError(f"{path} has no tokenizer: expected tokenizer.json or tokenizer.model beside config.json")
    check_vocab(cfg, tokenizer, str(path / "config.json"))
    files = weight_files(path)
    weights = read_safetensors(files)
    check_layer_count(cfg, weights, str(path / "config.json"))  # before a module of that many layers is built
    state = family.from_checkpoint(weights, cfg)
    module = build_module(cfg, state, str(path))
    template = template_from_tokenizer_config(read_json(path / "tokenizer_config.json"))
    if (path / "chat_template.jinja").exists():
        try:
            template = (path / "chat_template.jinja").read_text()
        except UnicodeDecodeError:
            raise EdgechatError(f"{path / 'chat_template.jinja'} is not UTF-8 text") from None
    source = {"path": str(path), "kind": "hf", "sha256": sha256_of([path / "config.json", *files])}
    return Model(cfg, module, tokenizer, template, source, name=model_name(path))


def model_name(path: Path) -> str:
    """The directory's name, or its parent's when the directory is a generic 'hf' or 'model'."""
    path = path.resolve()
    return path.parent.name if path.name.lower() in ("hf", "model", "checkpoint", "weights") else path.name
