"""What an artifact holds: architecture, parameter count, tensor types, tokenizer, template, manifest."""
from __future__ import annotations

import collections
import json
from pathlib import Path

from edgechat.core.errors import EdgechatError
from edgechat.core.manifest import read_manifest


def describe_gguf(path: Path) -> dict:
    """From the header alone (no tensor data, no vocabulary strings): a second for any model size."""
    from edgechat.core import archs
    from edgechat.core.gguf_file import read_header
    from edgechat.core.gguf_sizes import size_report

    h = read_header(path)
    n_vocab = h.arrays.get("tokenizer.ggml.tokens", 0)
    cfg = archs.for_gguf(h.arch).config_from_gguf(h.meta, h.tensors, n_vocab)
    types = collections.Counter(t for _, t in h.tensors.values())
    model = h.meta.get("tokenizer.ggml.model")
    return {
        "file": str(path), "format": "gguf", "bytes": path.stat().st_size,
        "name": h.meta.get("general.name"), "architecture": cfg.arch, "params": h.params,
        "layers": cfg.num_layers, "hidden": cfg.hidden_size, "heads": f"{cfg.num_heads}/{cfg.num_kv_heads}",
        "context": cfg.max_seq_len, "tensor_types": dict(types),
        "tokenizer": f"{model} ({h.meta.get('tokenizer.ggml.pre')}), {n_vocab} tokens" if model else None,
        "chat_template": bool(h.meta.get("tokenizer.chat_template")),
        "size": size_report(path),
        "runs_on": runs_on(path, h),
    }


def runs_on(path: Path, header) -> dict:
    """How llama.cpp would run the file here: its CPU variant (what this host's probe found so far) and threads."""
    from runtimes import cpu_variants
    from targets.host import physical_cores

    c = cpu_variants.for_model(path, cpu_variants.tensor_types(header))
    return {"engine": "llama.cpp", "cpu_variant": c.variant, "cpu_backend": c.label(), "how": c.how,
            "threads": physical_cores()}


def describe(artifact: str | None) -> dict:
    from edgechat.core.sources import path_kind, resolve_artifact

    kind, path = path_kind(resolve_artifact(artifact))
    if kind == "gguf":
        info = describe_gguf(path)
        manifest = read_manifest(path.parent)
        if manifest:
            info["manifest"] = {k: manifest[k] for k in ("source", "created") if k in manifest}
            entry = next((a for a in manifest.get("artifacts", []) if a.get("file") == path.name), None)
            if entry:  # what convert recorded: the quant asked for, its fallbacks, a budget's plan
                info["manifest"]["artifact"] = {k: entry[k] for k in ("quant", "imatrix", "budget", "fallbacks", "plan")
                                                if k in entry}
                info["manifest"]["imatrix"] = manifest.get("imatrix")
        return info
    if kind == "pte":
        return describe_pte(path)
    if kind in ("hf", "artifacts") and (path / "config.json").exists():
        return {"dir": str(path), "format": "hf", "config": json.loads((path / "config.json").read_text()),
                "files": sorted(p.name for p in path.iterdir())}
    raise EdgechatError(f"cannot inspect {path}: give a .gguf or .pte file or an output/HF directory")


PTE_KEYS = ("quant", "group_size", "embedding_quant", "head_quant", "max_seq_len", "hqq", "awq", "qat_steps", "qat",
            "budget", "plan")


def describe_pte(path: Path) -> dict:
    """The runner metadata, the delegated linears' weight types as the program holds them, and what convert
    recorded (the levers, a budget's per-module plan and its sensitivities)."""
    from converters.pte_program import program_layout, type_counts
    from runtimes.pte_engine import read_program

    _program, meta = read_program(path)
    from edgechat.core.files import artifact_bytes, pte_data_file

    info = {"file": str(path), "format": "pte", "bytes": artifact_bytes(path),
            "metadata": {k: (list(v) if k == "get_eos_ids" else v) for k, v in meta.items()},
            "program_types": type_counts(program_layout(path))}
    if pte_data_file(path).exists():  # --share-tied: the tied matrix's one copy lives there
        info["data_file"] = pte_data_file(path).name
    manifest = read_manifest(path.parent)
    entry = next((a for a in (manifest or {}).get("artifacts", []) if a.get("file") == path.name), None)
    if entry:
        info["manifest"] = {"source": manifest.get("source"), "created": manifest.get("created"),
                            "artifact": {k: entry[k] for k in PTE_KEYS if k in entry}}
        if entry.get("size"):
            info["bits per weight"] = entry["size"]["bpw"]
    return info


def text_view(info: dict) -> dict:
    """`inspect` without --json: the size report and the recorded plan folded into one line each."""
    from edgechat.core.gguf_sizes import shares_text

    out = dict(info)
    size = out.pop("size", None)
    if size:
        out["bits per weight"] = f"{size['bpw']:.2f} ({shares_text(size, top=6)} of {size['weights']:,} weights)"
    run = out.pop("runs_on", None)
    if run:
        out["runs on"] = f"{run['engine']} CPU variant {run['cpu_backend']}, {run['threads']} threads"
    manifest = dict(out.pop("manifest", None) or {})
    art = manifest.pop("artifact", None) or {}
    manifest.pop("imatrix", None)
    if manifest:
        out["manifest"] = manifest
    if art:
        out["quant"] = art.get("quant")
        out["imatrix"] = art.get("imatrix")
    if art.get("fallbacks"):
        f = art["fallbacks"]
        moves = sorted({f"{x['requested']}->{x['type']}" for x in f})
        out["fallbacks"] = f"{len(f)} tensors ({', '.join(moves)}): {f[0]['reason']}"
    if info.get("format") == "pte":
        out.pop("metadata", None)
        out.pop("imatrix", None)
        out["program types"] = ", ".join(f"{t} x{n}" for t, n in sorted(out.pop("program_types").items()))
        for key in ("hqq", "awq", "qat_steps"):
            if key in art:
                out[key] = art[key]
    if art.get("plan"):
        p, counts = art["plan"], {}
        for t in p["tensor_types"].values():
            counts[t] = counts.get(t, 0) + 1
        out["plan"] = (f"{art.get('budget')}: {', '.join(f'{t} x{n}' for t, n in sorted(counts.items()))}; "
                       f"summed sensitivity {p['predicted_kld']:.4f} ({p['method']})")
    return out
