"""edgechat's side of targets/: a SOURCE's or an artifact's shape as a ModelSpec, plans for them, target
errors turned into EdgechatError, and the check of a plan's estimate against a measured run on `host`."""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

from edgechat.errors import EdgechatError


@contextlib.contextmanager
def target_errors():
    from targets import TargetError

    try:
        yield
    except TargetError as e:
        raise EdgechatError(str(e)) from None


def get_profile(name: str, measure: bool = True, threads: int | None = None):
    from targets import load_profile

    with target_errors():
        return load_profile(name, measure=measure, threads=threads)


def threads_for(target: str = "host") -> int:
    return get_profile(target, measure=False).cpu.threads


# -- shapes -------------------------------------------------------------------------------------------
def gguf_tensors(path: Path) -> tuple[dict, dict[str, tuple[list[int], str]]]:
    """Scalar metadata and {tensor name: (dims, ggml type name)} from a GGUF header."""
    import gguf

    from edgechat.gguf_header import _Cursor, scan_gguf

    meta = scan_gguf(path)  # clear errors for a foreign or truncated file
    with open(path, "rb") as f:
        cur = _Cursor(f.read(64 << 20))
    cur.pos = 8
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    for _ in range(n_kv):
        cur.string()
        cur.value(cur.take("I"))
    tensors = {}
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.take("Q") for _ in range(cur.take("I"))]
        ttype = gguf.GGMLQuantizationType(cur.take("I")).name
        cur.take("Q")
        tensors[name] = (dims, ttype)
    return meta, tensors


def gguf_quant(meta: dict, tensors: dict) -> str:
    """The file's quant name: llama.cpp's general.file_type, else the type of its FFN matrices."""
    from targets.quants import GGUF_QUANTS, LLAMA_FTYPES

    if meta.get("general.file_type") in LLAMA_FTYPES:
        return LLAMA_FTYPES[meta["general.file_type"]]
    t = tensors.get("blk.0.ffn_up.weight", ([], "F32"))[1].lower()
    return t if t in GGUF_QUANTS else "q4_0"


def spec_from_gguf(path: Path):
    """(ModelSpec, {tensor: type}, quant name) of a GGUF file, from its header."""
    from targets import ModelSpec

    meta, tensors = gguf_tensors(path)
    arch = meta.get("general.architecture")
    a = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
    if "token_embd.weight" not in tensors or a("block_count") is None:
        raise EdgechatError(f"{path} does not look like a decoder-only LLM (no token_embd.weight or block_count)")
    d, heads = a("embedding_length"), a("attention.head_count")
    spec = ModelSpec(name=meta.get("general.name") or path.stem, vocab_size=tensors["token_embd.weight"][0][1],
                     hidden_size=d, intermediate_size=a("feed_forward_length"), num_layers=a("block_count"),
                     num_heads=heads, num_kv_heads=a("attention.head_count_kv") or heads,
                     head_dim=a("attention.key_length") or d // heads, max_seq_len=a("context_length", 2048),
                     tie_word_embeddings="output.weight" not in tensors,
                     attention_bias="blk.0.attn_q.bias" in tensors)
    return spec, {name: t for name, (_, t) in tensors.items()}, gguf_quant(meta, tensors)


def model_spec(source) -> tuple:
    """(ModelSpec, the artifact's own tensor types and quant, or None and None) for a SOURCE: None (the default
    model), a .gguf, an edgechat output directory, or a Hugging Face directory. Reads headers and configs only."""
    from targets import ModelSpec

    from edgechat.config import ModelConfig
    from edgechat.sources import default_model_path

    if source is None:
        spec, types, quant = spec_from_gguf(default_model_path())
        return ModelSpec(**{**asdict(spec), "name": "SmolLM2-135M-Instruct"}), types, quant
    path = Path(source)
    if not path.exists():
        raise EdgechatError(f"no such file or directory: {path}")
    if path.suffix == ".gguf":
        return spec_from_gguf(path)
    if path.is_dir() and (path / "edgechat.json").exists():
        m = json.loads((path / "edgechat.json").read_text())
        with target_errors():
            return ModelSpec.from_dict(m["model"], name=m.get("source", {}).get("name", path.name)), None, None
    cfg = path / "config.json" if path.is_dir() else path
    if cfg.name == "config.json" and cfg.exists():
        config = ModelConfig.from_hf(json.loads(cfg.read_text()))
        with target_errors():
            return ModelSpec.from_dict(asdict(config), name=cfg.parent.name), None, None
    raise EdgechatError(f"cannot read a model shape from {path}: give a .gguf, an HF or an edgechat output directory")


# -- plans --------------------------------------------------------------------------------------------
def plan_for(source, target: str, formats=None, quants=None, n_ctx: int = 2048, prompt_tokens: int = 128,
             gen_tokens: int = 128, min_decode_tok_s: float = 20.0, measure: bool = True, as_is: bool = False,
             threads: int | None = None, accelerator: str | None = None):
    """The plan for converting SOURCE for TARGET; as_is=True plans a .gguf as it stands (its own tensor
    types: only the placement is chosen). threads: for host, the threads the engine will run."""
    from targets import Request, plan

    spec, types, quant = model_spec(source)
    profile = get_profile(target, measure=measure, threads=threads)
    req = Request(n_ctx=n_ctx, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, min_decode_tok_s=min_decode_tok_s,
                  accelerator=accelerator)
    if as_is:
        if types is None:
            raise EdgechatError(f"--as-is plans an existing .gguf artifact; {source} is not one")
        req.formats, req.quants, req.tensor_types = ("gguf",), (quant,), types
    else:
        if formats:
            req.formats = tuple(formats)
        if quants:
            req.quants = tuple(quants)
    with target_errors():
        return plan(spec, profile, req)


def convert_plan(source, target: str, formats: list[str] | None, quants: list[str],
                 accelerator: str | None = None) -> dict:
    """For `convert --target`: the plan among the formats this build can export; returns its dict with
    the chosen "format" and "quant"."""
    from converters import FORMATS, _load_builtin

    _load_builtin()
    exportable = [f for f in ("gguf", "pte") if f in FORMATS]
    fmts = [f for f in (formats or exportable) if f in ("gguf", "pte")]
    if not fmts:
        raise EdgechatError(f"--target plans GGUF or .pte artifacts; this build exports {', '.join(exportable)}")
    missing = [f for f in fmts if f not in FORMATS]
    if missing:
        raise EdgechatError(f"format {missing[0]} cannot be exported by this build")
    spec = model_spec(source)[0]
    from targets import Request, plan

    req = Request(formats=tuple(fmts), quants=tuple(quants) or None, accelerator=accelerator)
    with target_errors():
        p = plan(spec, get_profile(target), req)
    return p.to_dict(slots=True)


def check_on_host(plan_dict: dict, artifact: Path, threads: int | None = None, tokens: int = 64) -> dict:
    """Run the artifact here on a fixed prompt and set the measured decode/prefill speed beside the plan's
    estimate (the estimate is only ever checked on `host`)."""
    import edgechat

    chat = edgechat.load(artifact, threads=threads, max_tokens=tokens, n_ctx=512)
    chat.probes = True
    try:
        chat.complete("Once upon a time", max_tokens=8)  # warm-up
        chat.reset()
        stats = chat.send("Tell me a long story about a robot who learns to paint.", max_tokens=tokens).stats
    finally:
        chat.engine.close()
    est = plan_dict["chosen"]
    return {"measured_decode_tok_s": round(stats.decode_tok_s, 2), "estimated_decode_tok_s": round(est["decode_tok_s"], 2),
            "decode_ratio": round(stats.decode_tok_s / est["decode_tok_s"], 3) if est["decode_tok_s"] else None,
            "measured_prefill_tok_s": round(stats.prefill_tok_s, 1),
            "estimated_prefill_tok_s": round(est["prefill_tok_s"], 1), "tokens": stats.completion_tokens}
