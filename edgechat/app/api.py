"""edgechat.load(): artifact or source path -> engine -> Chat."""
from __future__ import annotations

from edgechat.app.chat import Chat
from edgechat.core.sources import load_model, resolve_artifact

__all__ = ["load", "open_engine", "load_model", "resolve_artifact"]


def open_engine(source=None, engine: str | None = None, target: str = "host", n_ctx: int | str | None = None,
                threads: int | None = None, quant: str | None = None, **engine_options):
    """n_ctx: tokens, None (the model's own), or "auto" (the largest that fits). The memory fit is checked
    first: a model that does not fit the target's app budget or this machine's free memory is refused."""
    import runtimes
    from edgechat.app.fit import check_fit
    from edgechat.app.targeting import threads_for

    path = resolve_artifact(source, quant)
    name = engine or runtimes.engine_for_path(path)
    n_ctx = check_fit(path, name, n_ctx, target)
    return runtimes.open_engine(name, path, n_ctx=n_ctx, threads=threads or threads_for(target), **engine_options)


def load(source=None, target: str = "host", engine: str | None = None, system: str | None = None,
         n_ctx: int | str | None = None, threads: int | None = None, quant: str | None = None, power: str | None = None,
         **sampling) -> Chat:
    """Open an artifact (.gguf, output directory, HF directory for the torch reference; None for the
    embedded SmolLM2-135M-Instruct) and return a Chat. sampling: temperature, top_p, top_k, seed, max_tokens,
    frequency_penalty, presence_penalty (edgechat.app.sampling.SamplingParams).
    power: "auto" (a power reader if one works here, else an estimate from the target's power figures),
    "estimate", or a reader's name (edgechat.probes.power.READERS); default $EDGECHAT_POWER, else auto."""
    import os
    import time

    from edgechat.probes.energy import meter_for

    meter = meter_for(target, power or os.environ.get("EDGECHAT_POWER", "auto"))  # a bad target fails before loading
    t0 = time.perf_counter()
    chat = Chat(open_engine(source, engine, target, n_ctx, threads, quant), system=system, **sampling)
    chat.load_s = time.perf_counter() - t0
    chat.meter = meter
    return chat
