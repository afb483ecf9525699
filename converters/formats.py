"""What an output format is: its name, the quant schemes it makes (from targets.schemes) and its export
function, registered by the format's own module the way torchao maps a config to its handler."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class ExportOptions:
    threads: int | None = None
    imatrix: dict | None = None  # GGUF: per-tensor importance, from converters.imatrix
    extra: dict = field(default_factory=dict)


@dataclass
class Format:
    name: str
    quants: tuple[str, ...]
    default_quant: str
    export: Callable  # (model, out_dir, quants, options, progress) -> list[artifact dict]


FORMATS: dict[str, Format] = {}


def register_format(name: str, quants: tuple[str, ...], default: str):
    def wrap(fn):
        FORMATS[name] = Format(name, tuple(quants), default, fn)
        return fn
    return wrap
