"""One recipe file (TOML) for prune -> distill -> quantize/export -> eval -> gate. Unknown keys are refused."""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from converters.distill import DistillConfig
from edgechat.core.errors import EdgechatError


@dataclass
class PruneOptions:
    layers: int = 0
    ffn: float = 0.0
    heads: int = 0
    hidden: float = 0.0
    target_params: float | None = None
    strategy: str = "width"  # for target_params: width, depth or mixed
    calib: str | None = None  # text for importance (default: chit-chat conversations)

    @property
    def active(self) -> bool:
        return bool(self.layers or self.ffn or self.heads or self.hidden or self.target_params)


@dataclass
class GateOptions:
    max_kld: float | None = None
    max_ppl_ratio: float | None = None

    @property
    def active(self) -> bool:
        return self.max_kld is not None or self.max_ppl_ratio is not None


@dataclass
class ExportSection:
    formats: list[str] = field(default_factory=lambda: ["gguf"])
    quants: list[str] = field(default_factory=list)
    hf: bool = False  # also write the student as a Hugging Face checkpoint (in OUTDIR/hf)
    eval_data: str | None = None


@dataclass
class Recipe:
    prune: PruneOptions = field(default_factory=PruneOptions)
    distill: DistillConfig | None = None
    export: ExportSection = field(default_factory=ExportSection)
    gate: GateOptions = field(default_factory=GateOptions)
    sha256: str | None = None
    path: str | None = None


SECTIONS = {"prune": PruneOptions, "distill": DistillConfig, "export": ExportSection, "gate": GateOptions}


def _section(name: str, cls, values: dict, where: str):
    allowed = {f.name for f in fields(cls)} - {"log"}
    for key in values:
        if key not in allowed:
            raise EdgechatError(f"{where}: unknown key '{name}.{key}' (allowed: {', '.join(sorted(allowed))})")
    return cls(**values)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise EdgechatError(f"no such recipe file: {path}")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgechatError(f"{path} is not valid TOML: {e}") from None
    for key in data:
        if key not in SECTIONS:
            raise EdgechatError(f"{path}: unknown key '{key}' (sections: {', '.join(SECTIONS)})")
        if not isinstance(data[key], dict):
            raise EdgechatError(f"{path}: '{key}' must be a table ([{key}])")
    parts = {k: _section(k, SECTIONS[k], data[k], str(path)) for k in data}
    return Recipe(**parts, sha256=hashlib.sha256(raw).hexdigest(), path=str(path))
