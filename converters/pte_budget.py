""".pte plans for a size budget (--bpw / --size-mib with --format pte): the budget checked before any work, one
per-module sensitivity pass on the export module (after any AWQ/QAT lever), then per budget the plan from
converters.mixed_precision.choose_types (the one dynamic programme both formats use). converters.pte_export
applies and exports each plan."""
from __future__ import annotations

from converters import mixed_precision as mp
from converters import pte_mixed as pm
from converters.pte_levers import calibration_for
from edgechat.core.model import Model


def check_budgets(model: Model, opts, budgets: list[dict]) -> tuple[list[int], int]:
    """Each budget's bytes for the planned modules (refusing one below the smallest plan), and the fixed bytes."""
    from converters.pte_modules import export_module

    module = export_module(model.module, opts.max_seq_len, fused_ops=False, fuse_qkv=opts.fuse_qkv,
                           fuse_mlp=opts.fuse_mlp)
    planned = pm.planned_modules(module)
    fixed = pm.fixed_bytes(module, planned, opts.max_seq_len)
    params = model.config.param_count()
    return [pm.check_budget(b, fixed, params, planned) for b in budgets], fixed


def plan_budgets(model: Model, module, opts, budgets, allowed, fixed, calibration, step, measure_all=None):
    """[(budget, plan, the manifest's plan record)] from one sensitivity pass on `module`."""
    sens = budget_sensitivity(model, module, opts, calibration, step, measure_all)
    return [(budget, *plan_within(sens, limit, fixed)) for budget, limit in zip(budgets, allowed)]


def budget_sensitivity(model: Model, module, opts, calibration, step, measure_all=None) -> dict:
    """The per-module sensitivity pass every budget's plan is chosen from."""
    batch = mp.calibration_batch(calibration_for(model, calibration))
    planned = pm.planned_modules(module)
    if measure_all is None:
        measure_all = sum(p.numel() for p in module.parameters()) * batch.numel() * \
            sum(len(pm.candidates(m)) for m in planned) < mp.MEASURE_ALL_MACS
    advance = step("per-module sensitivity on calibration text", total=pm.measurements(planned, measure_all))
    done = [0]

    def on_step():
        done[0] += 1
        if callable(advance):
            advance(done[0])

    return pm.sensitivity(module, opts.max_seq_len, batch, opts.hqq, measure_all=measure_all, on_step=on_step)


def plan_within(sens: dict, limit: int, fixed: int) -> tuple[dict, dict]:
    """The plan whose planned modules take at most `limit` bytes, and its manifest record."""
    plan = mp.choose_types(sens, limit)
    summary = mp.plan_summary(sens, plan)
    return plan, {**summary, "predicted_file_bytes": summary["tensor_bytes"] + fixed, "method": sens["method"],
                  "calibration": sens["calibration"],
                  "sensitivity": {n: {t: e["kld"] for t, e in info["types"].items()} for n, info in sens["tensors"].items()}}
