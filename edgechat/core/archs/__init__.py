"""The architecture registry: one module per model family in this package, each a `Family` subclass
registered by its Hugging Face architecture names (as llama.cpp's converter registers `ModelBase`
subclasses). A family holds everything that differs between families: the config mapping to and from HF,
the GGUF architecture, metadata keys and tensor names (from gguf-py's MODEL_ARCH / TensorNameMap), its
checkpoint's tensor names, chat-template end-of-turn markers, and the block features the one `Transformer`
reads. Every module in this package is imported on first use, so a new family is one new file."""
from __future__ import annotations

import importlib
import pkgutil

from edgechat.core.archs.family import Family
from edgechat.core.errors import EdgechatError

__all__ = ["Family", "register", "get", "for_hf", "for_gguf", "names", "end_of_turn_markers", "config_from_hf",
           "config_to_hf"]

_BY_NAME: dict[str, Family] = {}
_BY_HF: dict[str, Family] = {}
_loaded = False


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make the family known by its name and its Hugging Face architecture names."""
    family = cls()
    keys = [(family.name, _BY_NAME), *((hf, _BY_HF) for hf in family.hf_architectures)]
    for key, table in keys:
        other = table.get(key)
        if other is not None and type(other).__qualname__ != cls.__qualname__:
            raise ValueError(f"architecture {key!r} is registered twice ({type(other).__name__}, {cls.__name__})")
    for key, table in keys:
        table[key] = family
    return cls


def _load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for info in pkgutil.iter_modules(__path__):
            if info.name != "family":
                importlib.import_module(f"{__name__}.{info.name}")


def names() -> list[str]:
    _load_all()
    return sorted(_BY_NAME)


def get(name: str) -> Family:
    _load_all()
    if name not in _BY_NAME:
        raise EdgechatError(f"unsupported architecture {name!r}: edgechat supports {', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[name]


def for_hf(cfg: dict) -> Family:
    """The family of a Hugging Face config.json (its `architectures`, else its `model_type`)."""
    _load_all()
    archs = cfg.get("architectures") or []
    if not archs:
        by_type = {f.hf_model_type: f for f in _BY_NAME.values()}
        if cfg.get("model_type") in by_type:
            return by_type[cfg["model_type"]]
    arch_name = archs[0] if archs else ""
    if arch_name not in _BY_HF:
        raise EdgechatError(f"unsupported architecture {arch_name or '(none given)'!r}: edgechat supports "
                            f"{', '.join(sorted(_BY_HF))}")
    return _BY_HF[arch_name]


def for_gguf(gguf_arch: str | None) -> Family:
    """The family of a GGUF file's general.architecture (the family of that name, where several share it)."""
    _load_all()
    by_gguf: dict[str, Family] = {}
    for f in _BY_NAME.values():
        if f.gguf_name not in by_gguf or f.name == f.gguf_name:
            by_gguf[f.gguf_name] = f
    if gguf_arch not in by_gguf:
        raise EdgechatError(f"unsupported GGUF architecture {gguf_arch!r}: edgechat supports {', '.join(sorted(by_gguf))}")
    return by_gguf[gguf_arch]


def end_of_turn_markers() -> tuple[str, ...]:
    """Every registered family's end-of-turn markers: a checkpoint may carry another family's template."""
    _load_all()
    return tuple(dict.fromkeys(m for f in _BY_NAME.values() for m in f.end_of_turn))


def config_from_hf(cfg: dict):
    """ModelConfig of a Hugging Face config.json; refuses an unsupported architecture by name."""
    return for_hf(cfg).config_from_hf(cfg)


def config_to_hf(config, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    out = get(config.arch).config_to_hf(config)
    # written even when None: some transformers configs (SmolLM3's) default them to their released vocab's ids
    out.update(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=None)
    return out
