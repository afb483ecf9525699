"""Engines by name, and the choice of engine for an artifact path."""
from __future__ import annotations

from pathlib import Path

from edgechat.errors import EdgechatError

ENGINES: dict[str, type] = {}
SUFFIX_ENGINE = {".gguf": "llama.cpp", ".pte": "executorch"}


def register_engine(name: str):
    def wrap(cls):
        ENGINES[name] = cls
        return cls
    return wrap


def engine_for_path(path: Path) -> str:
    if path.suffix in SUFFIX_ENGINE:
        return SUFFIX_ENGINE[path.suffix]
    if path.is_dir():
        return "torch"
    raise EdgechatError(f"no engine runs {path.name}: give a .gguf or .pte file, an artifact directory or an HF directory")


def _register_builtin():
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from runtimes.pte_engine import PteEngine
    from runtimes.torch_engine import TorchEngine

    register_engine("llama.cpp")(LlamaCppEngine)
    register_engine("executorch")(PteEngine)
    register_engine("torch")(TorchEngine)


_register_builtin()
