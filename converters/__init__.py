"""Converters: functions from a model (and options) to a model or an artifact. Output formats are looked up
by name and their modules imported on first use, so naming a format loads neither torch nor ExecuTorch."""
from __future__ import annotations

import importlib

from converters.formats import FORMATS, ExportOptions, Format, register_format
from edgechat.core.errors import EdgechatError

__all__ = ["FORMAT_MODULES", "ExportOptions", "Format", "register_format", "format_names", "get_format",
           "plan_exports"]

# format name -> the module that registers it
FORMAT_MODULES = {"gguf": "converters.gguf_export", "pte": "converters.pte_format", "hf": "converters.hf_writer"}


def format_names() -> tuple[str, ...]:
    return tuple(FORMAT_MODULES)


def get_format(name: str) -> Format:
    if name not in FORMATS:
        if name not in FORMAT_MODULES:
            raise EdgechatError(f"unknown format {name!r}: choose one of {', '.join(FORMAT_MODULES)}")
        importlib.import_module(FORMAT_MODULES[name])
    return FORMATS[name]


def plan_exports(formats: list[str], quants: list[str]) -> dict[str, list[str]]:
    """Which quants each requested format makes; every quant must belong to some requested format."""
    fmts = {f: get_format(f) for f in formats}
    plan = {}
    for f, fmt in fmts.items():
        plan[f] = [q for q in quants if q in fmt.quants] or ([fmt.default_quant] if not quants or f == "hf" else [])
    for q in quants:
        if not any(q in fmt.quants for fmt in fmts.values()):
            accepted = sorted({x for fmt in fmts.values() for x in fmt.quants})
            raise EdgechatError(f"unknown quant type {q!r} for format {'/'.join(formats)}: choose one of {', '.join(accepted)}")
    missing = [f for f, qs in plan.items() if not qs]
    if missing:
        raise EdgechatError(f"no quant type given for format {missing[0]}: choose from {', '.join(fmts[missing[0]].quants)}")
    return plan
