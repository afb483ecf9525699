"""GGUF artifacts: gguf-py writes F32/F16, llama.cpp's quantizer makes Q8_0/Q4_0/Q4_K_M from the F32 file."""
from __future__ import annotations

import re
from pathlib import Path

from converters.formats import ExportOptions, register_format
from converters.gguf_quantize import quantize_gguf
from converters.gguf_writer import write_gguf
from edgechat.core.model import Model
from targets import schemes

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "model"


@register_format("gguf", quants=schemes.names("gguf", made=True), default=schemes.DEFAULTS["gguf"])
def export_gguf(model: Model, out_dir: Path, quants: list[str], options: ExportOptions, progress=None) -> list[dict]:
    uses_imatrix = lambda q: bool(options.imatrix) and schemes.get(q).imatrix  # noqa: E731
    base = out_dir / f"{slug(model.name)}-f32.gguf"
    step = progress.step if progress else (lambda *_a, **_k: None)
    step(f"writing F32 GGUF ({model.config.param_count() / 1e6:.1f}M params)")
    write_gguf(model, base, "f32")
    artifacts = []
    for q in quants:
        path = out_dir / f"{slug(model.name)}-{q}{'-imat' if uses_imatrix(q) else ''}.gguf"
        if q == "f32":
            continue
        if schemes.get(q).handler == "gguf-py":
            step(f"writing {q.upper()} GGUF")
            write_gguf(model, path, q)
        else:
            step(f"quantizing to {q.upper()} with llama.cpp")
            quantize_gguf(base, path, q, threads=options.threads, imatrix=options.imatrix if uses_imatrix(q) else None)
        artifacts.append({"file": path.name, "format": "gguf", "quant": q, "imatrix": uses_imatrix(q)})
    if "f32" in quants:
        artifacts.insert(0, {"file": base.name, "format": "gguf", "quant": "f32", "imatrix": False})
    else:
        base.unlink()
    return artifacts
