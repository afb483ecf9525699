"""The compression stages of a recipe: prune (importance on calibration text) then distill from the
source, with each stage's quality against the teacher, and the quality gate on the final artifacts."""
from __future__ import annotations

from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model
from edgechat.app.recipe import GateOptions, Recipe


def stage_quality(teacher: Model, student: Model, data, n_ctx: int) -> dict:
    from edgechat.app.evaluate import evaluate
    from runtimes.torch_engine import TorchEngine

    q = evaluate(TorchEngine(student, n_ctx=n_ctx), TorchEngine(teacher, n_ctx=n_ctx), data, n_ctx=n_ctx)
    return {"params": student.config.param_count(), **q.as_dict()}


def check_inputs(recipe: Recipe) -> None:
    """The recipe's data files and training device, checked before any model work: a missing or empty file
    or an unusable device fails in a second."""
    from converters.distill import train_device, train_precision
    from edgechat.core.data import read_eval_data

    if recipe.distill:
        train_precision(recipe.distill, train_device(recipe.distill))
        from edgechat.app.teacher_data import check_config

        check_config(recipe.distill)

    for path in (recipe.prune.calib, recipe.distill.data if recipe.distill else None, recipe.export.eval_data):
        if path:
            read_eval_data(path)


def compress(teacher: Model, recipe: Recipe, data, steps, n_ctx: int = 512) -> tuple[Model, dict]:
    """Returns the student and the manifest's record of every stage."""
    from converters.budget import recovery_note
    from converters.prune import measure_importance, plan_for_target, plan_from_options, prune, pruned_config
    from edgechat.core.conversation import calibration_sequences

    record: dict = {"teacher_params": teacher.config.param_count()}
    student = teacher
    p = recipe.prune
    if p.active:  # the plan needs only the config: impossible requests fail before the importance pass
        plan = (plan_for_target(teacher.config, p.target_params, p.strategy) if p.target_params
                else plan_from_options(teacher.config, p.layers, p.ffn, p.heads, p.hidden))
        kept = pruned_config(teacher.config, plan).param_count() / teacher.config.param_count()
        note = recovery_note(teacher.config.param_count(), kept, recipe.distill)
        if note:  # said before the long work, so the user can stop it
            steps.note(note)
            record["budget_note"] = note
        seqs = calibration_sequences(teacher, p.calib)
        advance = steps.step("measuring importance on calibration text", total=len(seqs))
        imp = measure_importance(teacher, seqs, on_sequence=advance)
        steps.step("pruning")
        student = prune(teacher, plan, imp)
        record["prune"] = {"options": vars(p), **plan.chosen,
                           "ffn_importance_mean": [round(float(x.mean()), 6) for x in imp.ffn],
                           "kv_group_importance": [[round(float(v), 6) for v in g] for g in imp.groups]}
        steps.step("quality after pruning")
        record["pruned"] = stage_quality(teacher, student, data, n_ctx)
    if recipe.distill and recipe.distill.steps > 0:
        if student is teacher:
            raise EdgechatError("the recipe distills without pruning: add a [prune] section (a student smaller than the teacher)")
        from converters.distill import config_dict, distill, train_precision

        cfg = recipe.distill
        dataset, resample = None, None
        if cfg.teacher_data:
            from edgechat.app.distill_data import for_config, resampler

            dataset = for_config(teacher, cfg, progress=steps, student=student)
            resample = resampler(dataset, cfg, student)
        distill(teacher, student, cfg, progress=steps, dataset=dataset.packed(cfg.seq_len) if dataset else None,
                resample=resample)
        precision = train_precision(cfg, hidden_size=student.config.hidden_size)
        record["distill"] = {"config": config_dict(cfg), "precision": precision,
                             "teacher_data": dataset.record() if dataset else None,
                             "resampled": resample.stats if resample else None, "first": cfg.log[0],
                             "last": cfg.log[-1], "curve": cfg.log[:: max(1, cfg.steps // 50)]}
        steps.step("quality after distillation")
        record["distilled"] = stage_quality(teacher, student, data, n_ctx)
    return student, record


def check_gate(gate: GateOptions, artifacts: list[dict]) -> dict:
    """Every runnable artifact against the bounds; returns {"passed", "reasons", bounds}."""
    reasons = []
    for a in artifacts:
        q = a.get("quality")
        if a.get("format") == "hf" or q is None:
            continue
        if gate.max_kld is not None and q["mean_kld"] > gate.max_kld:
            reasons.append(f"{a['file']}: mean KLD {q['mean_kld']:.4f} > {gate.max_kld}")
        if gate.max_ppl_ratio is not None and q["ppl_ratio"] > gate.max_ppl_ratio:
            reasons.append(f"{a['file']}: perplexity ratio {q['ppl_ratio']:.3f} > {gate.max_ppl_ratio}")
    return {"passed": not reasons, "reasons": reasons, "max_kld": gate.max_kld, "max_ppl_ratio": gate.max_ppl_ratio}
