""".pte as a format of `convert` (the registry's "pte"): each quant's program (converters.pte_export) and each
--bpw/--size-mib budget's plan (converters.pte_budget), with every refusal made before any work."""
from __future__ import annotations

from pathlib import Path

import torch
from targets import schemes

from converters.formats import ExportOptions, register_format
from converters.gguf_export import slug
from converters.pte_budget import export_budgets
from converters.pte_export import export_pte_file
from converters.pte_options import budget_options, check_options, resolve_options
from converters.pte_tied import check_tied
from edgechat.core.model import Model


@register_format("pte", quants=schemes.names("pte"), default=schemes.DEFAULTS["pte"])
def export_pte(model: Model, out_dir: Path, quants: list[str], options: ExportOptions, progress=None) -> list[dict]:
    """options.extra: the PteOptions fields, and "budgets" ([{"bpw": X} | {"size_mib": N}]) with "calibration"
    (token sequences) for the per-module plans (converters.pte_budget)."""
    step = progress.step if progress else (lambda *_a, **_k: None)
    extra = options.extra or {}
    check_options(quants, extra)
    resolved = [resolve_options(model, q, extra) for q in quants]  # every refusal before any work
    for opts in resolved + ([budget_options(model, extra)] if extra.get("budgets") else []):
        check_tied(model, opts)
    if options.threads:
        torch.set_num_threads(options.threads)
    artifacts = []
    for opts in resolved:
        path = out_dir / f"{slug(model.name)}-{opts.quant}.pte"
        artifacts.append(export_pte_file(model, path, opts, step, calibration=extra.get("calibration")))
    if extra.get("budgets"):
        artifacts += export_budgets(model, out_dir, extra, step)
    return artifacts
