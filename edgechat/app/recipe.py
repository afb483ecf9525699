"""One recipe file (TOML) for prune -> distill -> quantize/export -> eval -> gate. Unknown keys are refused."""
from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from converters.distill import DistillConfig
from converters.distill_loss import DIVERGENCES
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


# Numbers beyond their field's type: (low, high or None, low allowed?); any other number must be >= 0.
RANGES = {"prune.ffn": (0, 1, True), "prune.hidden": (0, 1, True), "prune.target_params": (0, 1, False),
          "gate.max_kld": (0, None, False), "gate.max_ppl_ratio": (0, None, False), "distill.lr": (0, None, False),
          "distill.temperature": (0, None, False),
          **{f"distill.{k}": (1, None, True) for k in ("steps", "micro_batch", "grad_accum", "seq_len",
                                                        "checkpoint_every", "max_dialogues")}}
# (the distillation device and the export formats are checked where they are used, with the registry's names)
CHOICES = {"prune.strategy": ("width", "depth", "mixed"), "distill.divergence": DIVERGENCES}


def _type_ok(value, annotation: str) -> bool:
    """The field's annotation (a string: these modules use postponed annotations) against a TOML value."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        return "None" in kinds
    for k in kinds:
        if k == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if (k == "int" and isinstance(value, int)) or (k == "float" and isinstance(value, (int, float))
                                                         and math.isfinite(value)):
            return True
        if k == "str" and isinstance(value, str):
            return True
        if k == "list[str]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True
    return False


def _check_value(key: str, value, annotation: str, where: str) -> None:
    if not _type_ok(value, annotation):
        raise EdgechatError(f"{where}: '{key}' must be {annotation.replace('|', 'or')}, got {value!r:.60}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high, inclusive = RANGES.get(key, (0, None, True))
        if not ((value >= low if inclusive else value > low) and (high is None or value < high)):
            bound = f"{'>=' if inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
            raise EdgechatError(f"{where}: '{key}' must be {bound}, got {value!r}")
    choices = CHOICES.get(key)
    for v in value if isinstance(value, list) else [value]:
        if choices and v not in choices:
            raise EdgechatError(f"{where}: '{key}' must be one of {', '.join(choices)}, got {v!r:.60}")


def _section(name: str, cls, values: dict, where: str):
    types = {f.name: f.type for f in fields(cls)}
    allowed = set(types) - {"log"}
    for key in values:
        if key not in allowed:
            raise EdgechatError(f"{where}: unknown key '{name}.{key}' (allowed: {', '.join(sorted(allowed))})")
        _check_value(f"{name}.{key}", values[key], str(types[key]), where)
    return cls(**values)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise EdgechatError(f"no such recipe file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise EdgechatError(f"cannot read {path}: {e.strerror or e}") from None
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
