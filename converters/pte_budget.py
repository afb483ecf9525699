""".pte plans for a size budget (--bpw / --size-mib with --format pte): the budget checked before any work, one
per-module sensitivity pass on the export module (after any AWQ/QAT lever), then per budget the plan from
converters.mixed_precision.choose_types (the one dynamic programme both formats use), and export_budgets, which
writes each plan's program through converters.pte_export and plans again smaller one that comes out over budget."""
from __future__ import annotations

from pathlib import Path

from converters import mixed_precision as mp
from converters import pte_mixed as pm
from converters.pte_levers import calibration_for, prepare_module
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model

REPLANS = 3  # a budget's program planned again at most this often when it comes out over the budget


def _planned(model: Model, opts):
    """The export module's planned modules, their least bytes (--share-tied: the head only at 8 bits, the
    table's rows free) and the program's fixed bytes."""
    from converters.pte_modules import export_module

    module = export_module(model.module, opts.max_seq_len, fused_ops=False, fuse_qkv=opts.fuse_qkv,
                           fuse_mlp=opts.fuse_mlp)
    planned = pm.planned_modules(module)
    least = None
    if opts.share_tied:
        from converters.pte_tied import tied_least

        least = tied_least(planned)
    return planned, least, pm.fixed_bytes(module, planned, opts.max_seq_len)


def check_budgets(model: Model, opts, budgets: list[dict]) -> tuple[list[int], int]:
    """Each budget's bytes for the planned modules (refusing one below the smallest plan), and the fixed bytes."""
    planned, least, fixed = _planned(model, opts)
    params = model.config.param_count()
    why = "--share-tied (an 8-bit head, the table its rows) allows" if least else "the per-module types allow"
    return [pm.check_budget(b, fixed, params, planned, least, why) for b in budgets], fixed


def bpw_range(model: Model, extra: dict) -> tuple[float, float]:
    """The bits per weight of the smallest and the largest .pte plan for this model and these options."""
    from converters.pte_options import budget_options

    planned, least, fixed = _planned(model, budget_options(model, extra))
    bits = lambda n: (n + fixed) * 8 / model.config.param_count()  # noqa: E731
    return bits(pm.plan_bytes(planned, least)), bits(pm.plan_bytes(planned, least, largest=True))


def plan_budgets(model: Model, module, opts, budgets, allowed, fixed, calibration, step, measure_all=None):
    """[(budget, plan, the manifest's plan record)] from one sensitivity pass on `module`."""
    sens = budget_sensitivity(model, module, opts, calibration, step, measure_all)
    return [(budget, *plan_within(sens, limit, fixed)) for budget, limit in zip(budgets, allowed)]


def budget_sensitivity(model: Model, module, opts, calibration, step, measure_all=None,
                       batch_shape: tuple[int, int] | None = None) -> dict:
    """The per-module sensitivity pass every budget's plan is chosen from, on a calibration batch of
    `batch_shape` (sequences, tokens; default both formats' SENS_SEQS x SENS_TOKENS; the tokens at most the
    program's max_seq_len, which its KV cache holds)."""
    seqs, tokens = batch_shape or (mp.SENS_SEQS, mp.SENS_TOKENS)
    batch = mp.calibration_batch(calibration_for(model, calibration), seqs, min(tokens, opts.max_seq_len))
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


def export_budgets(model: Model, out_dir: Path, extra: dict, step) -> list[dict]:
    """One .pte per budget: checked before any work, one sensitivity pass after the levers, one plan each."""
    import copy
    from dataclasses import replace

    from converters.gguf_export import budget_name, slug
    from converters.pte_export import export_pte_file
    from converters.pte_options import budget_options
    from edgechat.core.files import artifact_bytes, pte_data_file

    budgets, opts = extra["budgets"], budget_options(model, extra)
    allowed, fixed = check_budgets(model, opts, budgets)
    # with --qat-steps the plan comes first (from the fp32 weights), then each budget trains toward its own plan
    module, levers = prepare_module(model, replace(opts, qat_steps=0), extra.get("calibration"), step)
    sens = budget_sensitivity(model, module, opts, extra.get("calibration"), step, extra.get("measure_all"),
                              extra.get("sensitivity_batch"))
    if opts.share_tied:  # the head at 8 bits, the table its rows: paid for once
        from converters.pte_tied import tied_sensitivity

        sens = tied_sensitivity(sens, pm.planned_modules(module))
    out = []
    for budget, limit in zip(budgets, allowed):
        name = budget_name(budget)
        path = out_dir / f"{slug(model.name)}-{name}.pte"
        plan, record = plan_within(sens, limit, fixed)  # check_budgets refused what no plan fits
        if opts.qat_steps:
            module, levers = prepare_module(model, opts, extra.get("calibration"), step, plan=plan)
        total, overs = limit + fixed, []  # the file's budget; the overshoots taken off the plan
        while True:
            art = export_pte_file(model, path, replace(opts, quant=name, plan=plan), step,
                                  module=copy.deepcopy(module), levers=levers)
            if (size := artifact_bytes(path)) <= total:
                break
            # the program's own bytes beyond the weights are estimated: take the overshoot off and plan again
            overs.append(size - total)
            if len(overs) <= REPLANS:
                try:
                    # below the last plan's own bytes too: an overshoot smaller than the planner's byte step
                    # would otherwise give the same plan again
                    smaller = min(limit - sum(overs), record["tensor_bytes"] - overs[-1])
                    plan, record = plan_within(sens, smaller, fixed)
                    step(f"{path.name} is {overs[-1]} bytes over its budget: planned again {limit - smaller} bytes "
                         "smaller")
                    continue
                except ValueError:  # below the smallest plan
                    pass
            path.unlink()
            pte_data_file(path).unlink(missing_ok=True)
            raise EdgechatError(f"a budget of {mp.budget_text(budget)} is below the smallest .pte this model "
                                f"makes once written: {size / 2**20:.2f} MiB with the types planned for it "
                                "last; ask for more")
        if overs:
            record["replanned_over_bytes"] = overs
        out.append({**art, "budget": budget, "plan": record})
    return out
