"""edgechat's side of targets/: a SOURCE's or an artifact's shape as a ModelSpec, plans for them, target
errors turned into EdgechatError."""
from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path

from edgechat.core.errors import EdgechatError


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
def gguf_quant(meta: dict, tensors: dict) -> str:
    """The file's quant name: llama.cpp's general.file_type, else the type of its FFN matrices."""
    from targets import schemes

    by_ftype = schemes.by_llama_ftype()
    if meta.get("general.file_type") in by_ftype:
        return by_ftype[meta["general.file_type"]].name
    t = tensors.get("blk.0.ffn_up.weight", ([], "F32"))[1].lower()
    return t if t in schemes.names("gguf") else "q4_0"


def spec_from_gguf(path: Path):
    """(ModelSpec, {tensor: type}, quant name) of a GGUF file, from its header."""
    from edgechat.core import archs
    from edgechat.core.gguf_file import read_header

    header = read_header(path)
    if "token_embd.weight" not in header.tensors:
        raise EdgechatError(f"{path} does not look like a decoder-only LLM (no token_embd.weight)")
    family = archs.for_gguf(header.arch)
    config = family.config_from_gguf(header.meta, header.tensors, header.tensors["token_embd.weight"][0][1])
    spec = config.spec(header.meta.get("general.name") or path.stem)
    return spec, {name: t for name, (_, t) in header.tensors.items()}, gguf_quant(header.meta, header.tensors)


def spec_from_pte(path: Path):
    """(ModelSpec, {tensor: type}, quant name) of a .pte, from the manifest edgechat wrote beside it (a program
    holds no model config of its own): the scheme's types, or a --bpw/--size-mib program's per-module plan."""
    from targets import ModelSpec
    from targets.quants import pte_choice_type, pte_plan_types, tensor_types

    from edgechat.core.manifest import MANIFEST, read_manifest

    m = read_manifest(path.parent) or {}
    art = next((a for a in m.get("artifacts", []) if a.get("file") == path.name), None)
    if art is None:
        raise EdgechatError(f"{path}: no {MANIFEST} beside it lists this program, and a .pte holds no model "
                            "shape of its own: keep the .pte in the directory `edgechat convert` wrote")
    with target_errors():
        spec = ModelSpec.from_dict(m["model"], name=m.get("source", {}).get("name", path.stem))
        if art.get("plan"):  # named for the scheme most of its linears take (its types are its own)
            plan = art["plan"]["tensor_types"]
            linears = [pte_choice_type(c) for m, c in plan.items() if "layers." in m]
            quant = "8da8w" if 2 * linears.count("QC8W") >= len(linears) else "8da4w"
            return spec, pte_plan_types(plan, spec), quant
        return spec, tensor_types(art["quant"], spec), art["quant"]


def model_spec(source) -> tuple:
    """(ModelSpec, the artifact's own tensor types and quant, or None and None) for a SOURCE: None (the default
    model), a .gguf, an edgechat output directory, or a Hugging Face directory. Reads headers and configs only."""
    from targets import ModelSpec

    from edgechat.core import archs
    from edgechat.core.load_hf import read_config
    from edgechat.core.manifest import read_manifest
    from edgechat.core.sources import DEFAULT_NAME, path_kind

    kind, path = path_kind(source)
    if kind == "default":
        spec, types, quant = spec_from_gguf(path)
        return ModelSpec(**{**asdict(spec), "name": DEFAULT_NAME}), types, quant
    if kind == "gguf":
        return spec_from_gguf(path)
    if kind == "pte":
        return spec_from_pte(path)
    if kind == "artifacts":
        m = read_manifest(path)
        with target_errors():
            return ModelSpec.from_dict(m["model"], name=m.get("source", {}).get("name", path.name)), None, None
    if kind == "hf" and (path / "config.json").exists():
        return archs.config_from_hf(read_config(path)).spec(path.name), None, None
    raise EdgechatError(f"cannot read a model shape from {path}: give a .gguf, an HF or an edgechat output directory")


# -- plans --------------------------------------------------------------------------------------------
def plan_for(source, target: str, formats=None, quants=None, n_ctx: int = 2048, prompt_tokens: int = 128,
             gen_tokens: int = 128, min_decode_tok_s: float = 20.0, measure: bool = True, as_is: bool = False,
             threads: int | None = None, accelerator: str | None = None):
    """The plan for converting SOURCE for TARGET; as_is=True plans a .gguf or a .pte as it stands (its own
    tensor types: only the placement is chosen). threads: for host, the threads the engine will run."""
    from targets import Request, plan, schemes

    spec, types, quant = model_spec(source)
    profile = get_profile(target, measure=measure, threads=threads)
    req = Request(n_ctx=n_ctx, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, min_decode_tok_s=min_decode_tok_s,
                  accelerator=accelerator)
    if as_is:
        if types is None:
            raise EdgechatError(f"--as-is plans an existing .gguf or .pte artifact; {source} is not one")
        req.formats, req.quants, req.tensor_types = (schemes.get(quant).format,), (quant,), types
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
    from converters import format_names
    from targets import schemes

    planned = [f for f in format_names() if f in schemes.formats()]  # what the planner has quant facts for
    fmts = [f for f in (formats or planned) if f in planned]
    if not fmts:
        raise EdgechatError(f"--target plans GGUF or .pte artifacts; this build exports {', '.join(format_names())}")
    spec = model_spec(source)[0]
    from targets import Request, plan

    req = Request(formats=tuple(fmts), quants=tuple(quants) or None, accelerator=accelerator)
    with target_errors():
        p = plan(spec, get_profile(target), req)
    return p.to_dict(slots=True)
