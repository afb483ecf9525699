"""The engine registry: one engine per artifact kind, looked up by name and imported only when opened, so
choosing an engine loads neither llama.cpp nor ExecuTorch nor torch until it runs."""
from __future__ import annotations

import importlib
from pathlib import Path

from edgechat.core.errors import EdgechatError
from edgechat.core.sources import path_kind

# name -> (module:class, the path kinds it runs)
ENGINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "llama.cpp": ("runtimes.llama_cpp_engine:LlamaCppEngine", ("gguf", "default")),
    "executorch": ("runtimes.pte_engine:PteEngine", ("pte",)),
    "torch": ("runtimes.torch_engine:TorchEngine", ("hf", "artifacts")),
}


def register_engine(name: str, target: str, kinds: tuple[str, ...] = ()) -> None:
    """Add an engine: target is "module:Class", kinds the path kinds (edgechat.core.sources) it runs."""
    ENGINES[name] = (target, kinds)


def engine_class(name: str) -> type:
    if name not in ENGINES:
        raise EdgechatError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    module, _, cls = ENGINES[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def engine_for_path(path: Path) -> str:
    kind = path_kind(path)[0]
    for name, (_, kinds) in ENGINES.items():
        if kind in kinds:
            return name
    raise EdgechatError(f"no engine runs {Path(path).name}: give a .gguf or .pte file, an artifact directory or an "
                        "HF directory")


def open_engine(name: str, path: Path, **options):
    """Open the engine `name` on the artifact at `path` (each engine's own `open` reads what it needs)."""
    return engine_class(name).open(path, **options)
