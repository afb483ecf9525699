"""The mutators of the fuzz tests and benchmarks/fuzz_campaign.py (tests/fuzzing.py applies them to real files).
Each draws from a seeded `random.Random` (hypothesis supplies the seed) and knows the layout
of its format (GGUF fields, the safetensors header, JSON and TOML values), so most inputs get past the magic
and reach the checks deep inside: lengths, offsets, types, dimensions, truncations."""
from __future__ import annotations

import json
import math
import random
import re
import struct

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
