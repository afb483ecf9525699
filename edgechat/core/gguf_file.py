"""A fast look at a GGUF header: scalar metadata, each tensor's dimensions and type, and whether every tensor
lies inside the file. gguf-py's GGUFReader builds a numpy view per string (seconds for a 49k-token
vocabulary); engines, the planner and `inspect` need only this much."""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from edgechat.core.errors import EdgechatError

# GGUF value types: fixed sizes (struct codes); 8 = string, 9 = array
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclass(frozen=True)
class _Array:
    count: int


class _Cursor:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise EOFError
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("Q")
        if self.pos + n > len(self.data):
            raise EOFError
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype in SCALARS:
            return self.take(SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            item_type, count = self.take("I"), self.take("Q")
            if item_type in SCALARS:  # skip fixed-size arrays in one step
                self.pos += count * struct.calcsize("<" + SCALARS[item_type])
            else:
                for _ in range(count):
                    self.value(item_type)
            return _Array(count)  # arrays are not kept, only their length
        raise ValueError(f"unknown GGUF value type {vtype}")


@dataclass
class GGUFHeader:
    meta: dict  # scalar metadata
    arrays: dict[str, int]  # array metadata: only each array's length (tokenizer.ggml.tokens: the vocabulary)
    tensors: dict[str, tuple[list[int], str]]  # GGUF name -> (dims, ne0 first; ggml type name)

    @property
    def arch(self) -> str | None:
        return self.meta.get("general.architecture")

    @property
    def params(self) -> int:
        """Weights stored in the file, every tensor counted."""
        return sum(math.prod(dims) for dims, _ in self.tensors.values())


def read_header(path: Path) -> GGUFHeader:
    """The header of a GGUF file; raises EdgechatError if it is not GGUF or is truncated."""
    import gguf

    path = Path(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read(min(size, 64 << 20))  # metadata and tensor infos sit at the start
    if data[:4] != b"GGUF":
        raise EdgechatError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
    cur = _Cursor(data)
    cur.pos = 4
    try:
        cur.take("I")  # version
        n_tensors, n_kv = cur.take("Q"), cur.take("Q")
        meta, arrays = {}, {}
        for _ in range(n_kv):
            key = cur.string()
            value = cur.value(cur.take("I"))
            if isinstance(value, _Array):
                arrays[key] = value.count
            else:
                meta[key] = value
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.take("Q") for _ in range(cur.take("I"))]
            infos.append((name, dims, gguf.GGMLQuantizationType(cur.take("I")), cur.take("Q")))
    except (EOFError, ValueError, UnicodeDecodeError) as e:
        raise EdgechatError(f"{path} is truncated or corrupt: its header cannot be read ({e or 'short file'})") from None
    align = meta.get("general.alignment", 32)
    start = (cur.pos + align - 1) // align * align
    for name, dims, ttype, offset in infos:
        block, type_size = gguf.GGML_QUANT_SIZES[ttype]
        n = 1
        for d in dims:
            n *= d
        if start + offset + n // block * type_size > size:
            raise EdgechatError(f"{path} is truncated: tensor {name} ends past the end of the file")
    return GGUFHeader(meta, arrays, {name: (dims, ttype.name) for name, dims, ttype, _ in infos})
