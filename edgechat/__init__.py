"""edgechat: dialogue models on edge devices, one chat API over llama.cpp, ExecuTorch and torch.

The public names are re-exported lazily, so `import edgechat` (and `edgechat --help`) loads neither torch nor
an engine: each name's module is imported the first time the name is used."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
_EXPORTS = {
    "load": "edgechat.app.api",
    "load_model": "edgechat.core.sources",
    "Chat": "edgechat.app.chat",
    "Reply": "edgechat.app.chat",
    "Stats": "edgechat.probes.latency",
    "EdgechatError": "edgechat.core.errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'edgechat' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
