"""Mutators and readers shared by the fuzz tests (hypothesis drives them through a seeded `random.Random`) and
benchmarks/fuzz_campaign.py (20,000 inputs per reader, in a watched subprocess). Each mutator knows the layout
of its format (GGUF fields, the safetensors header, JSON and TOML values), so most inputs get past the magic
and reach the checks deep inside: lengths, offsets, types, dimensions, truncations."""
from __future__ import annotations

import json
import math
import random
import re
import struct
from pathlib import Path

INTERESTING = [0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 63, 64, 255, 256, 1023, 4096, 65535, 2**31 - 1, 2**31, 2**32 - 1,
               2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1]
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _int(rng: random.Random, bits: int) -> int:
    r = rng.random()
    if r < 0.6:
        v = rng.choice(INTERESTING)
    elif r < 0.8:
        v = rng.randrange(0, 1 << min(bits, 16))
    else:
        v = rng.getrandbits(bits)
    return v % (1 << bits)


# -- GGUF ----------------------------------------------------------------------------------------------
def gguf_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, size, kind) of every header field of a valid GGUF: counts, string lengths and bytes, value
    types, array item types and counts, tensor dims, types and offsets."""
    out, pos = [], 4

    def field(size, kind):
        nonlocal pos
        out.append((pos, size, kind))
        pos += size
        return pos - size

    def u(fmt, size, kind):
        at = field(size, kind)
        return struct.unpack_from("<" + fmt, data, at)[0]

    def string(kind):
        n = u("Q", 8, "len")
        field(n, "str") if n else None

    u("I", 4, "version")
    n_tensors, n_kv = u("Q", 8, "count"), u("Q", 8, "count")
    for _ in range(n_kv):
        string("key")
        vtype = u("I", 4, "type")
        if vtype == 8:
            string("value")
        elif vtype == 9:
            item, count = u("I", 4, "type"), u("Q", 8, "count")
            if item == 8:
                for i in range(count):
                    if i < 4 or i == count - 1:
                        string("value")
                    else:
                        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            else:
                field(count * SCALAR_SIZES[item], "values")
        else:
            field(SCALAR_SIZES[vtype], "scalar")
    for _ in range(n_tensors):
        string("name")
        n_dims = u("I", 4, "ndims")
        for _ in range(n_dims):
            u("Q", 8, "dim")
        u("I", 4, "ttype")
        u("Q", 8, "offset")
    out.append((pos, 0, "end"))
    return out


def mutate_gguf(data: bytes, fields: list, rng: random.Random) -> bytes:
    buf = bytearray(data)
    header_end = fields[-1][0]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.random()
        at, size, kind = rng.choice(fields[:-1])
        if op < 0.45 and size in (4, 8) and kind not in ("str", "values"):  # a number field: an interesting value
            struct.pack_into("<I" if size == 4 else "<Q", buf, at, _int(rng, size * 8))
        elif op < 0.6 and kind in ("str", "key", "name", "value") and size:  # bad UTF-8 or other bytes in a string
            i = at + rng.randrange(size)
            buf[i] = rng.choice([0xFF, 0xC0, 0x80, 0x00, rng.randrange(256)])
        elif op < 0.8:  # random bytes anywhere in the header
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(min(header_end, len(buf)))] = rng.randrange(256)
        elif op < 0.9:  # truncation, mostly inside the header
            cut = rng.randrange(header_end) if rng.random() < 0.8 else rng.randrange(len(buf))
            del buf[cut:]
            break
        else:  # bytes inserted or removed: everything after shifts
            i = rng.randrange(header_end)
            if rng.random() < 0.5:
                buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            else:
                del buf[i:i + rng.randint(1, 16)]
    return bytes(buf)


# -- safetensors ---------------------------------------------------------------------------------------
def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    (n,) = struct.unpack_from("<Q", data)
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    op = rng.random()
    if op < 0.55:  # a structural change to one tensor's entry, the length kept consistent
        names = [k for k in header if k != "__metadata__"]
        info = header[rng.choice(names)]
        what = rng.choice(["dtype", "shape", "offsets", "offsets", "drop", "extra", "type"])
        if what == "dtype":
            info["dtype"] = rng.choice(["F16", "BF16", "I64", "F64", "U8", "BOOL", "Q4", "", "f32"])
        elif what == "shape":
            s = info["shape"]
            if s and rng.random() < 0.7:
                s[rng.randrange(len(s))] = rng.choice([0, 1, -1, 2, 63, 65, 2**31, 2**63, 10**30, 1.5, "x", None])
            else:
                info["shape"] = rng.choice([[], [1] * 9, None, "64", [64, 64, 64]])
        elif what == "offsets":
            o = info["data_offsets"]
            o[rng.randrange(2)] = rng.choice([0, -1, 1, len(body), len(body) + 1, 2**64, 2**63 - 1, o[0] + 4, 3.0])
        elif what == "drop":
            info.pop(rng.choice(list(info)))
        elif what == "extra":
            info["extra"] = 1
        else:
            header[rng.choice(names)] = rng.choice([[], 1, "x", None])
        raw = json.dumps(header).encode()
        out = struct.pack("<Q", len(raw)) + raw + body
    elif op < 0.7:  # the header length itself
        out = struct.pack("<Q", _int(rng, 64)) + data[8:]
    elif op < 0.85:  # bytes of the JSON header
        buf = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            buf[8 + rng.randrange(n)] = rng.randrange(256)
        out = bytes(buf)
    else:  # truncation
        out = data[:rng.randrange(8 + n + 64 if rng.random() < 0.7 else len(data))]
    return out


# -- JSON and TOML values ------------------------------------------------------------------------------
def random_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if r < 0.35:
        return rng.choice([0, -1, 1, 2, 3, 7, 64, 65, 511, 512, 513, 2**31, 2**63, -(2**63), 10**40])
    if r < 0.5:
        return rng.choice([0.0, -1.0, 0.5, 1e-30, 1e300, 3.14])
    if r < 0.6:
        return rng.choice([True, False, None])
    if r < 0.8:
        return rng.choice(["", "x", "llama", "LlamaForCausalLM", "\u00e9\u6f22", "a" * 300, "cuda", "gguf"])
    if depth > 1:
        return []
    if r < 0.9:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "content", "rope_theta", "name"]): random_value(rng, depth + 1)}


def mutate_json_obj(obj, rng: random.Random):
    """A copy with one to three keys set, deleted or added (anywhere in the tree)."""
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.randint(1, 3)):
        target = obj
        while isinstance(target, dict) and target and rng.random() < 0.3:
            k = rng.choice(list(target))
            if isinstance(target[k], (dict, list)) and target[k]:
                target = target[k] if isinstance(target[k], dict) else target
            else:
                break
        if isinstance(target, dict) and target and rng.random() < 0.8:
            k = rng.choice(list(target))
            if rng.random() < 0.2:
                del target[k]
            else:
                target[k] = random_value(rng)
        elif isinstance(target, dict):
            target[rng.choice(["extra", "vocab_size", "head_dim", "num_key_value_heads", "model"])] = random_value(rng)
    return obj


def mutate_text(text: str, rng: random.Random) -> bytes:
    """Byte-level damage to a text file: flips, truncation, duplication, bad UTF-8."""
    return mutate_bytes(text.encode(), rng)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    op = rng.random()
    if op < 0.4:
        for _ in range(rng.randint(1, 6)):
            if buf:
                buf[rng.randrange(len(buf))] = rng.choice([0xFF, 0x00, ord("["), ord("="), ord('"'), rng.randrange(256)])
    elif op < 0.7:
        del buf[rng.randrange(len(buf) + 1):]
    else:
        i, j = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
        buf[i:i] = buf[i:j]
    return bytes(buf)


def toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            return "nan"
        if isinstance(v, int) and not -(2**63) <= v < 2**63:
            return str(2**63 - 1)
        return repr(v)
    if v is None:
        return '""'
    if isinstance(v, list):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def mutate_toml(text: str, rng: random.Random) -> bytes:
    """Values replaced (numbers, strings, arrays, inline tables, nan/inf), keys renamed, lines dropped or
    duplicated, or byte-level damage."""
    lines = text.splitlines()
    op = rng.random()
    if op < 0.25:
        return mutate_text(text, rng)
    for _ in range(rng.randint(1, 3)):
        assigns = [i for i, line in enumerate(lines) if re.match(r"\s*[\w.-]+\s*=", line)]
        if not assigns:
            break
        i = rng.choice(assigns)
        key, _, _ = lines[i].partition("=")
        r = rng.random()
        if r < 0.6:
            value = rng.choice([random_value(rng), float("nan"), float("inf"), -1, 0, 10**9])
            lines[i] = f"{key}= {toml_literal(value)}"
        elif r < 0.75:
            lines[i] = f"{rng.choice(['bogus', 'cores', 'name', 'steps', 'ffn'])} {lines[i][len(key):]}"
        elif r < 0.9:
            del lines[i]
        else:
            lines.insert(i, lines[i])
    if rng.random() < 0.15:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(["[bogus]", "[cpu]", "[[accelerator]]", "[prune.x]"]))
    return "\n".join(lines).encode()


# -- one input: a mutated copy of a real file, written where its reader looks --------------------------------
class Cases:
    """Base files read once (real ones from ../shared/data and the project); `make(reader, rng, workdir)` writes
    one mutated input and returns the path its reader takes."""

    def __init__(self, stories_dir: Path, gguf_path: Path, tokenizer_json_dir: Path, profile_path: Path):
        self.stories = stories_dir
        self.gguf = gguf_path.read_bytes()
        self.gguf_fields = gguf_fields(self.gguf)
        self.safetensors = (stories_dir / "model.safetensors").read_bytes()
        self.config = json.loads((stories_dir / "config.json").read_text())
        self.sp_model = (stories_dir / "tokenizer.model").read_bytes()
        self.tok_json = json.loads((tokenizer_json_dir / "tokenizer.json").read_text())
        self.tok_config = json.loads((tokenizer_json_dir / "tokenizer_config.json").read_text())
        self.profile_name = profile_path.name
        self.profile = profile_path.read_text()

    def make(self, reader: str, rng: random.Random, work: Path) -> Path:
        return getattr(self, f"_{reader}")(rng, work)

    def _gguf(self, rng, work):
        (work / "m.gguf").write_bytes(mutate_gguf(self.gguf, self.gguf_fields, rng))
        return work / "m.gguf"

    def _safetensors(self, rng, work):
        (work / "model.safetensors").write_bytes(mutate_safetensors(self.safetensors, rng))
        return work / "model.safetensors"

    def _config(self, rng, work):
        d = work / "cfg"
        d.mkdir(exist_ok=True)
        if not (d / "tokenizer.model").exists():
            (d / "tokenizer.model").write_bytes(self.sp_model)
        text = json.dumps(self.config, indent=1)
        data = json.dumps(mutate_json_obj(self.config, rng)).encode() if rng.random() < 0.8 else mutate_text(text, rng)
        (d / "config.json").write_bytes(data)
        return d

    def _tokenizer(self, rng, work):
        d = work / "tok"
        d.mkdir(exist_ok=True)
        for f in d.iterdir():
            f.unlink()
        which = rng.choice(["sp", "sp", "json", "json", "config"])
        if which == "sp":
            (d / "tokenizer.model").write_bytes(mutate_bytes(self.sp_model, rng))
        else:
            tok = mutate_json_obj(self.tok_json, rng) if which == "json" else self.tok_json
            data = json.dumps(tok).encode()
            if which == "json" and rng.random() < 0.3:
                data = mutate_bytes(json.dumps(self.tok_json).encode(), rng)
            (d / "tokenizer.json").write_bytes(data)
            cfg = mutate_json_obj(self.tok_config, rng) if which == "config" else self.tok_config
            (d / "tokenizer_config.json").write_text(json.dumps(cfg))
        return d

    def _recipe(self, rng, work):
        (work / "recipe.toml").write_bytes(mutate_toml(SAMPLE_RECIPE, rng))
        return work / "recipe.toml"

    def _profile(self, rng, work):
        (work / self.profile_name).write_bytes(mutate_toml(self.profile, rng))
        return work / self.profile_name


READERS = ("gguf", "safetensors", "config", "tokenizer", "recipe", "profile")


def reader(name: str):
    return {"gguf": read_gguf, "safetensors": read_safetensors_file, "config": read_config_dir,
            "tokenizer": read_tokenizer_dir, "recipe": read_recipe, "profile": read_profile}[name]


# -- the readers under test: each returns normally (input accepted) or raises the project's error type ------
def read_gguf(path: Path):
    """The header check, then the whole loader (gguf-py, tokenizer, weights) on what passed it."""
    from edgechat.core.gguf_file import read_header
    from edgechat.core.load_gguf import load_gguf

    read_header(path)
    return load_gguf(path)


def read_safetensors_file(path: Path):
    from edgechat.core.load_hf import read_safetensors

    return read_safetensors([path])


def read_config_dir(path: Path):
    from edgechat.core.load_hf import read_hf_config
    from edgechat.core.hf_files import load_tokenizer_dir
    from edgechat.core.validate import check_vocab

    raw, _, cfg = read_hf_config(path)
    tok = load_tokenizer_dir(path, raw)
    check_vocab(cfg, tok, str(path))
    return cfg


def read_tokenizer_dir(path: Path):
    from edgechat.core.chat_template import render, template_from_tokenizer_config
    from edgechat.core.hf_files import load_tokenizer_dir, read_json

    tok = load_tokenizer_dir(path, {})
    ids = tok.encode("Once upon a time, hello!")
    tok.decode(ids)
    tpl = template_from_tokenizer_config(read_json(path / "tokenizer_config.json"))
    if tpl:
        render(tpl, [{"role": "user", "content": "hi"}], bos_token=tok.bos_text, eos_token=tok.eos_text)
    return tok


def read_recipe(path: Path):
    from edgechat.app.recipe import load_recipe

    return load_recipe(path)


def read_profile(path: Path):
    from targets.profile import read_profile_file

    return read_profile_file(path)


def expected_errors(reader: str) -> tuple[type, ...]:
    """The one error type a reader may raise: EdgechatError, or for device profiles (targets/ imports nothing of
    edgechat) TargetError, which edgechat turns into its own one-line error at the boundary."""
    if reader == "profile":
        from targets.errors import TargetError

        return (TargetError,)
    from edgechat.core.errors import EdgechatError

    return (EdgechatError,)


SAMPLE_RECIPE = """[prune]
ffn = 0.5
layers = 2
strategy = "width"
[distill]
steps = 1000
lr = 0.0003
micro_batch = 4
seq_len = 256
device = "cpu"
[export]
formats = ["gguf"]
quants = ["q4_k_m"]
hf = true
[gate]
max_ppl_ratio = 1.3
max_kld = 0.5
"""
