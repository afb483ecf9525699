"""edgechat.load(): artifact or source path -> engine -> Chat."""
from __future__ import annotations

import json
from pathlib import Path

from edgechat.chat import Chat
from edgechat.errors import EdgechatError
from edgechat.sources import default_model_path, load_model

__all__ = ["load", "open_engine", "load_model", "resolve_artifact"]


def resolve_artifact(source: str | Path | None, quant: str | None = None) -> Path:
    """None -> the embedded default GGUF; an output directory -> the artifact its manifest lists."""
    if source is None:
        return default_model_path()
    path = Path(source)
    if not path.exists():
        raise EdgechatError(f"no such file or directory: {path}")
    manifest = path / "edgechat.json"
    if path.is_dir() and manifest.exists():
        arts = json.loads(manifest.read_text()).get("artifacts", [])
        runnable = [a for a in arts if a.get("format") != "hf" and (quant is None or a.get("quant") == quant)]
        if not runnable and quant is None and any(a.get("format") == "hf" for a in arts):
            return path  # a Hugging Face checkpoint: the torch reference engine runs it
        if not runnable:
            raise EdgechatError(f"{manifest} lists no runnable artifact{' with quant ' + quant if quant else ''}")
        return path / runnable[0]["file"]
    return path


def open_engine(source=None, engine: str | None = None, target: str = "host", n_ctx: int | None = None,
                threads: int | None = None, quant: str | None = None, **engine_options):
    from runtimes import ENGINES, engine_for_path
    from edgechat.targeting import threads_for

    path = resolve_artifact(source, quant)
    name = engine or engine_for_path(path)
    if name not in ENGINES:
        raise EdgechatError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    threads = threads or threads_for(target)
    if name == "torch":
        return ENGINES[name](load_model(path), n_ctx=n_ctx, threads=threads)
    return ENGINES[name](path, n_ctx=n_ctx, threads=threads, **engine_options)


def load(source=None, target: str = "host", engine: str | None = None, system: str | None = None,
         n_ctx: int | None = None, threads: int | None = None, quant: str | None = None, power: str | None = None,
         **sampling) -> Chat:
    """Open an artifact (.gguf, output directory, HF directory for the torch reference; None for the
    embedded SmolLM2-135M-Instruct) and return a Chat. sampling: temperature, top_p, top_k, seed, max_tokens.
    power: "auto" (a power reader if one works here, else an estimate from the target's power figures),
    "estimate", or a reader's name (edgechat.power.READERS); default $EDGECHAT_POWER, else auto."""
    import os
    import time

    from edgechat.energy import meter_for

    meter = meter_for(target, power or os.environ.get("EDGECHAT_POWER", "auto"))  # a bad target fails before loading
    t0 = time.perf_counter()
    chat = Chat(open_engine(source, engine, target, n_ctx, threads, quant), system=system, **sampling)
    chat.load_s = time.perf_counter() - t0
    chat.meter = meter
    return chat
