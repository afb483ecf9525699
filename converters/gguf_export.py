"""GGUF artifacts: gguf-py writes F32/F16, llama.cpp's quantizer makes Q8_0/Q4_0/Q4_K_M from the F32 file, and
for a size budget (--bpw / --size-mib) the per-tensor mixed-precision plan (converters.mixed_precision)."""
from __future__ import annotations

import re
from pathlib import Path

from converters.formats import ExportOptions, register_format
from converters.gguf_quantize import quantize
from converters.gguf_writer import write_gguf
from edgechat.core.model import Model
from targets import schemes

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "model"


def budget_name(budget: dict) -> str:
    """The quant name of a budget's artifact: mixed-bpw4.5, mixed-90mib (`--quant` picks it in a directory)."""
    return f"mixed-bpw{budget['bpw']:g}" if "bpw" in budget else f"mixed-{budget['size_mib']:g}mib"


@register_format("gguf", quants=schemes.names("gguf", made=True), default=schemes.DEFAULTS["gguf"])
def export_gguf(model: Model, out_dir: Path, quants: list[str], options: ExportOptions, progress=None) -> list[dict]:
    """options.extra may hold "budgets" ([{"bpw": X} | {"size_mib": N}]) and "calibration" (token sequences
    for the sensitivity pass); the importance matrix, where given, goes to Q4_0/K-quants and to the plans."""
    uses_imatrix = lambda q: bool(options.imatrix) and schemes.get(q).imatrix  # noqa: E731
    base = out_dir / f"{slug(model.name)}-f32.gguf"
    step = progress.step if progress else (lambda *_a, **_k: (lambda _n: None))
    step(f"writing F32 GGUF ({model.config.param_count() / 1e6:.1f}M params)")
    write_gguf(model, base, "f32")
    artifacts = []
    for q in quants:
        path = out_dir / f"{slug(model.name)}-{q}.gguf"
        if q == "f32":
            continue
        art = {"file": path.name, "format": "gguf", "quant": q, "imatrix": uses_imatrix(q)}
        if schemes.get(q).handler == "gguf-py":
            step(f"writing {q.upper()} GGUF")
            write_gguf(model, path, q)
        else:
            step(f"quantizing to {q.upper()} with llama.cpp")
            made = quantize(base, path, q, threads=options.threads, imatrix=options.imatrix if uses_imatrix(q) else None)
            art["fallbacks"] = made.fallbacks
        artifacts.append(art)
    budgets = options.extra.get("budgets") or []
    if budgets:
        artifacts += export_budgets(model, base, out_dir, budgets, options, step)
    if "f32" in quants:
        artifacts.insert(0, {"file": base.name, "format": "gguf", "quant": "f32", "imatrix": False})
    else:
        base.unlink()
    return artifacts


def export_budgets(model: Model, base: Path, out_dir: Path, budgets: list[dict], options: ExportOptions, step) -> list[dict]:
    """One sensitivity pass, then one llama.cpp-quantized file per budget, each with its plan."""
    from converters import mixed_precision as mp
    from edgechat.core.gguf_file import read_header

    header, tensors = read_header(base), mp.planned_tensors(model)
    allowed = [mp.check_budget(b, header, tensors) for b in budgets]  # refused before the expensive pass
    advance = step("per-tensor sensitivity on calibration text", total=mp.measurements(model))
    done = [0]

    def on_step():
        done[0] += 1
        advance(done[0])

    sens = mp.sensitivity(model, base, options.extra["calibration"], imatrix=options.imatrix,
                          threads=options.threads, on_step=on_step)
    out = []
    for budget, limit in zip(budgets, allowed):
        name = budget_name(budget)
        plan = mp.choose_types(sens, limit)
        step(f"quantizing the {mp.budget_text(budget)} plan with llama.cpp")
        path = out_dir / f"{slug(model.name)}-{name}.gguf"
        made = quantize(base, path, threads=options.threads, imatrix=options.imatrix, tensor_types=plan)
        out.append({"file": path.name, "format": "gguf", "quant": name, "imatrix": bool(options.imatrix),
                    "budget": budget, "fallbacks": made.fallbacks,
                    "plan": {**mp.plan_summary(sens, plan), "method": sens["method"],
                             "calibration": sens["calibration"],
                             "sensitivity": {n: {t: e["kld"] for t, e in info["types"].items()}
                                             for n, info in sens["tensors"].items()}}})
    return out
