"""A fast, strict look at a GGUF header: scalar metadata, each tensor's dimensions and type, and where its data
lies. gguf-py's GGUFReader builds a numpy view per string (seconds for a 49k-token vocabulary); engines, the
planner and `inspect` need only this much. Every field is checked here, the way llama.cpp's gguf.cpp checks
it (and a little more), before gguf-py or llama.cpp read a byte of tensor data: a malformed file is one
EdgechatError naming the file and what is wrong, never an exception from deep inside a reader."""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from edgechat.core.errors import EdgechatError

# GGUF value types: fixed sizes (struct codes); 8 = string, 9 = array
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
VERSIONS = (2, 3)  # what llama.cpp reads (v1 has 32-bit counts and is refused there too)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 63  # GGML_MAX_NAME - 1
HEADER_LIMIT = 64 << 20  # metadata and tensor infos sit at the start; a header beyond this is not a model's
# Keys other code reads, with the GGUF type they must have (a value of the wrong type is a corrupt file).
INTS = {0, 1, 2, 3, 4, 5, 10, 11}
KEY_TYPES = {
    "general.architecture": {STRING}, "general.name": {STRING}, "general.alignment": {4},
    "tokenizer.ggml.model": {STRING}, "tokenizer.ggml.pre": {STRING}, "tokenizer.chat_template": {STRING},
    "tokenizer.ggml.tokens": ("array", {STRING}), "tokenizer.ggml.merges": ("array", {STRING}),
    "tokenizer.ggml.token_type": ("array", INTS), "tokenizer.ggml.scores": ("array", {6}),
    **{f"tokenizer.ggml.{k}_token_id": INTS for k in ("bos", "eos", "eot", "unknown", "padding")},
    "tokenizer.ggml.add_bos_token": {7}, "tokenizer.ggml.add_space_prefix": {7},
}


class _Bad(Exception):
    """A malformed field: the message says which and why."""


@dataclass(frozen=True)
class _Array:
    count: int
    item_type: int


class _Cursor:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise EOFError(f"{what} runs past the end of the file")

    def take(self, fmt: str, what: str = "a field"):
        size = struct.calcsize("<" + fmt)
        self.need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        n = self.take("Q", what)
        self.need(n, what)
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"{what} is not valid UTF-8") from None

    def value(self, vtype: int, what: str):
        if vtype in SCALARS:
            v = self.take(SCALARS[vtype], what)
            if vtype == 7 and self.data[self.pos - 1] > 1:
                raise _Bad(f"{what} is a bool of value {self.data[self.pos - 1]}")
            return v
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            item_type, count = self.take("I", what), self.take("Q", what)
            if item_type in SCALARS:  # skip fixed-size arrays in one step
                self.need(count * struct.calcsize("<" + SCALARS[item_type]), what)
                self.pos += count * struct.calcsize("<" + SCALARS[item_type])
            elif item_type == STRING:
                self.need(count * 8, what)  # each string has at least its length: no loop of 2**64
                for i in range(count):
                    self.string(f"{what}[{i}]")
            else:  # llama.cpp refuses arrays of arrays too
                raise _Bad(f"{what} is an array of unsupported type {item_type}")
            return _Array(count, item_type)  # arrays are not kept, only their length and type
        raise _Bad(f"{what} has unknown GGUF value type {vtype}")


@dataclass
class GGUFHeader:
    meta: dict  # scalar metadata
    arrays: dict[str, int]  # array metadata: only each array's length (tokenizer.ggml.tokens: the vocabulary)
    tensors: dict[str, tuple[list[int], str]]  # GGUF name -> (dims, ne0 first; ggml type name)
    data_offset: int = 0  # where the tensor data section starts
    array_types: dict[str, int] = field(default_factory=dict)

    @property
    def arch(self) -> str | None:
        return self.meta.get("general.architecture")

    @property
    def params(self) -> int:
        """Weights stored in the file, every tensor counted."""
        return sum(math.prod(dims) for dims, _ in self.tensors.values())


def read_header(path: Path) -> GGUFHeader:
    """The header of a GGUF file, every field checked; raises EdgechatError if it is not GGUF, is truncated
    or is malformed."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            data = f.read(min(size, HEADER_LIMIT))
    except OSError as e:
        raise EdgechatError(f"cannot read {path}: {e.strerror or e}") from None
    if data[:4] != b"GGUF":
        raise EdgechatError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
    try:
        header = _parse(data, size)
        from edgechat.core.validate import check_gguf_meta

        check_gguf_meta(header)
        return header
    except EOFError as e:
        raise EdgechatError(f"{path} is truncated or corrupt: its header cannot be read ({e or 'short file'})") from None
    except (_Bad, EdgechatError) as e:
        raise EdgechatError(f"{path} is corrupt: {e}") from None


def _parse(data: bytes, size: int) -> GGUFHeader:
    import gguf

    cur = _Cursor(data)
    cur.pos = 4
    version = cur.take("I", "the version")
    if version not in VERSIONS:
        raise _Bad(f"GGUF version {version} is not supported (llama.cpp reads versions 2 and 3; "
                   "a big-endian file also shows a huge version)")
    n_tensors, n_kv = cur.take("Q", "the tensor count"), cur.take("Q", "the metadata count")
    # each key-value pair takes at least 13 bytes and each tensor info 29: bigger counts cannot fit the file
    if n_kv * 13 > len(data) or n_tensors * 29 > len(data):
        raise EOFError(f"{n_kv} metadata keys and {n_tensors} tensors cannot fit in {size} bytes")
    meta, arrays, array_types = {}, {}, {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if not key or key in meta or key in arrays:
            raise _Bad(f"metadata key #{i} {key!r} is empty or repeated")
        vtype = cur.take("I", f"the type of {key}")
        value = cur.value(vtype, f"metadata {key}")
        _check_key_type(key, vtype, value)
        if isinstance(value, _Array):
            arrays[key], array_types[key] = value.count, value.item_type
        else:
            meta[key] = value
    align = meta.get("general.alignment", 32)
    if align <= 0 or align & (align - 1):
        raise _Bad(f"general.alignment {align} is not a power of two")
    infos = []
    for i in range(n_tensors):
        name = cur.string(f"tensor name #{i}")
        if not name or len(name.encode()) > MAX_NAME:
            raise _Bad(f"tensor #{i} has an empty or too long name {name[:80]!r}")
        n_dims = cur.take("I", f"tensor {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Bad(f"tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        dims = [cur.take("Q", f"tensor {name}") for _ in range(n_dims)]
        code = cur.take("I", f"tensor {name}")
        offset = cur.take("Q", f"tensor {name}")
        try:
            ttype = gguf.GGMLQuantizationType(code)
            block, type_size = gguf.GGML_QUANT_SIZES[ttype]
        except (ValueError, KeyError):
            raise _Bad(f"tensor {name} has unknown type {code}") from None
        if any(d < 1 for d in dims) or math.prod(dims) >= 1 << 62:
            raise _Bad(f"tensor {name} has dimensions {dims}")
        if dims[0] % block:
            raise _Bad(f"tensor {name}: row length {dims[0]} is not a multiple of {ttype.name}'s block of {block}")
        infos.append((name, dims, ttype, offset, math.prod(dims) // block * type_size))
    if len({n for n, *_ in infos}) != len(infos):
        raise _Bad("two tensors have the same name")
    start = (cur.pos + align - 1) // align * align
    expected = 0
    for name, dims, ttype, offset, nbytes in infos:
        if offset != expected:  # llama.cpp requires the data to be packed in order, each aligned
            raise _Bad(f"tensor {name} has data offset {offset}, expected {expected}")
        expected += (nbytes + align - 1) // align * align
        if start + offset + nbytes > size:
            raise EOFError(f"tensor {name} ends past the end of the file")
    return GGUFHeader(meta, arrays, {name: (dims, ttype.name) for name, dims, ttype, _, _ in infos},
                      data_offset=start, array_types=array_types)


def _check_key_type(key: str, vtype: int, value) -> None:
    want = KEY_TYPES.get(key)
    if want is None:
        return
    if isinstance(want, tuple):
        if not isinstance(value, _Array) or value.item_type not in want[1]:
            raise _Bad(f"metadata {key} must be an array of GGUF type {sorted(want[1])}")
    elif vtype not in want:
        raise _Bad(f"metadata {key} has GGUF type {vtype}, expected {sorted(want)}")
