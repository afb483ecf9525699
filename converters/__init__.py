"""Converters: functions from a model (and options) to a model or an artifact. Output formats register
here with the quant types they accept, the way torchao maps a config to its handler."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from edgechat.errors import EdgechatError


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
        FORMATS[name] = Format(name, quants, default, fn)
        return fn
    return wrap


def plan_exports(formats: list[str], quants: list[str]) -> dict[str, list[str]]:
    """Which quants each requested format makes; every quant must belong to some requested format."""
    _load_builtin()
    for f in formats:
        if f not in FORMATS:
            raise EdgechatError(f"unknown format {f!r}: choose one of {', '.join(FORMATS)}")
    plan = {}
    for f in formats:
        fmt = FORMATS[f]
        plan[f] = [q for q in quants if q in fmt.quants] or ([fmt.default_quant] if not quants or f == "hf" else [])
    for q in quants:
        if not any(q in FORMATS[f].quants for f in formats):
            accepted = sorted({x for f in formats for x in FORMATS[f].quants})
            raise EdgechatError(f"unknown quant type {q!r} for format {'/'.join(formats)}: choose one of {', '.join(accepted)}")
    missing = [f for f, qs in plan.items() if not qs]
    if missing:
        raise EdgechatError(f"no quant type given for format {missing[0]}: choose from {', '.join(FORMATS[missing[0]].quants)}")
    return plan


def _load_builtin():
    import converters.gguf_export  # noqa: F401  (registers "gguf")
    import converters.hf_writer  # noqa: F401  (registers "hf")
    import converters.pte_export  # noqa: F401  (registers "pte")
