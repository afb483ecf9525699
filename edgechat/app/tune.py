"""tune: build the candidates (the source at every quant scheme and --bpw plan of one format, GGUF or .pte,
and pruned + distilled students at the ratios the distillation budget can recover), measure each one's quality
against the source and its speed, draw the speed-quality frontier and write the best candidate that meets the
constraint into OUT, staged as `convert` does, with the whole frontier in its manifest."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from edgechat.app import frontier
from edgechat.app.pipeline import ConvertOptions, convert
from edgechat.core.errors import EdgechatError, GateFailed
from edgechat.core.files import staging
from edgechat.core.manifest import write_manifest
from edgechat.core.sources import load_model
from targets import schemes

FORMATS = ("gguf", "pte")
STUDENT_QUANTS = {"gguf": "q4_k_m", "pte": "8da4w"}
DEFAULT_MAX_KLD = 0.05  # with no constraint given: the fastest candidate this close to the source


@dataclass
class TuneOptions:
    target: str = "host"
    max_mib: float | None = None
    min_decode_tok_s: float | None = None
    max_kld: float | None = None
    format: str = "gguf"  # the candidates' format: "gguf" (llama.cpp) or "pte" (ExecuTorch)
    quants: list[str] | None = None  # None: every scheme edgechat makes in the format
    bpw: list[float] | None = None  # --bpw plans; None: two between the smallest file possible and 8 bits
    budget_minutes: float = 5.0  # distillation wall time per student; 0: the quantization plans only
    device: str = "cpu"
    teacher_data: int = 0  # students learn from this many teacher-written conversations (0: chit-chat)
    kept: list[float] | None = None  # students' kept-parameter fractions (default: what the budget recovers)
    student_quant: str | None = None  # None: the format's 4-bit scheme (q4_k_m, 8da4w)
    share_tied: bool = False  # pte: the --bpw plans hold a tied embedding/head once (converters.pte_tied)
    awq: bool = False  # pte: activation-aware scales for the quantized programs (converters.pte_awq)
    eval_data: str | None = None
    prompts: int = 8  # held-out prompts whose greedy reply is compared with the source's
    reply_tokens: int = 24
    runs: int = 2  # profiling rounds (artifacts interleaved) for the speed here
    threads: int | None = None
    imatrix: bool = True

    def __post_init__(self):
        if self.quants is None:
            self.quants = list(schemes.names(self.format, made=True)) if self.format in FORMATS else []
        if self.student_quant is None:
            self.student_quant = STUDENT_QUANTS.get(self.format, "")

    def pte_extra(self, budgets: bool) -> dict:
        """convert's .pte options for the quant schemes (budgets=False) or the --bpw plans: --share-tied only
        for the plans, which choose the head's and table's types themselves (a scheme's 4-bit table is not the
        head's 8-bit rows)."""
        if self.format != "pte":
            return {}
        return {k: True for k, on in (("awq", self.awq), ("share_tied", self.share_tied and budgets)) if on}


def constraint(opts: TuneOptions) -> tuple[str, float]:
    given = [(k, getattr(opts, k)) for k in frontier.CONSTRAINTS if getattr(opts, k) is not None]
    if len(given) > 1:
        raise EdgechatError("give one constraint: --max-mib, --min-decode-tok-s or --max-kld, not "
                            + " and ".join(frontier.CONSTRAINTS[k][0] for k, _ in given))
    for k, v in given:
        if v <= 0:
            raise EdgechatError(f"{frontier.CONSTRAINTS[k][0]} must be above 0, got {v:g}")
    return given[0] if given else ("max_kld", DEFAULT_MAX_KLD)


def check_options(opts: TuneOptions) -> str:
    """Everything that can be refused before any model work; returns the format the candidates are made in."""
    from converters import plan_exports
    from edgechat.app.targeting import get_profile, target_errors

    constraint(opts)
    get_profile(opts.target, measure=False)
    fmt = opts.format
    if fmt not in FORMATS:
        raise EdgechatError(f"tune makes gguf or pte candidates, not {fmt}")
    with target_errors():
        for option, q in [*(("--quant", q) for q in opts.quants), ("--student-quant", opts.student_quant)]:
            if schemes.get(q).format != fmt:
                raise EdgechatError(f"{option} {q} is not a {fmt} scheme: tune --format {fmt} tries "
                                    f"{', '.join(schemes.names(fmt, made=True))}")
    if fmt != "pte" and (opts.share_tied or opts.awq):
        raise EdgechatError("--share-tied and --awq are .pte levers: add --format pte")
    if opts.share_tied and opts.bpw == []:
        raise EdgechatError("--share-tied applies to the --bpw plans: drop --no-bpw")
    plan_exports([fmt], [*opts.quants, opts.student_quant])
    for k in opts.kept or []:
        if not 0 < k < 1:
            raise EdgechatError(f"--kept {k:g} is out of range: give the fraction of parameters a student keeps, in (0, 1)")
    if opts.budget_minutes < 0:
        raise EdgechatError(f"--budget-minutes must be 0 (no students) or more, got {opts.budget_minutes:g}")
    if opts.budget_minutes > 0:  # an unusable training device fails now, not after the quantized candidates
        from converters.distill import DistillConfig, train_device

        train_device(DistillConfig(device=opts.device))
    return fmt


def auto_bpw(model, opts: TuneOptions) -> list[float]:
    """Two mixed-precision plans, a third and two thirds of the way from the smallest file the format's types
    allow for this model (every matrix at its cheapest candidate type) to 8 bits (GGUF: Q8_0's 8.5; .pte: every
    module at 8 bits): a budget below the smallest is refused, and what lies between the fixed schemes depends
    on the model's shapes."""
    import math

    if opts.format == "pte":
        from converters.pte_budget import bpw_range

        smallest, top = bpw_range(model, opts.pte_extra(budgets=True))
    else:
        from converters import mixed_precision as mp

        tensors = mp.planned_tensors(model)
        fixed = sum(p.numel() * 4 for p in model.module.parameters() if p.dim() == 1)  # norms stay F32
        smallest = (sum(mp.type_bytes(t, mp.candidates(t.cols)[0]) for t in tensors) + fixed) * 8 / model.config.param_count()
        top = 8.5
    if smallest > top - 0.5:
        return []
    return [math.ceil((smallest + f * (top - smallest)) * 10) / 10 for f in (1 / 3, 2 / 3)]


def measure(source, teacher, fmt: str, targets: list[str], opts: TuneOptions, work: Path, steps):
    """Every candidate built in `work` and measured: quality, greedy match, speed here and on each target."""
    from edgechat.app.tune_measure import greedy_match, speeds

    rows, budget = build_candidates(source, teacher, fmt, opts, work, steps)
    paths = [r["dir"] / r["file"] for r in rows]
    match = greedy_match(teacher, paths, opts, steps)
    speed, machine = speeds(paths, targets, opts, steps)
    for r, p in zip(rows, paths):
        r.update(match=match[p], decode_tok_s_here=speed[p]["here"], estimates=speed[p]["est"])
    return rows, budget, machine


def for_target(rows: list[dict], target: str, key: str, bound: float) -> tuple[list[dict], dict | None]:
    """The frontier on one target: its speed axis (on host the speed measured here, elsewhere the planner's
    estimate), the dominated points, and the chosen candidate (None when none meets the constraint)."""
    rows = [{k: v for k, v in r.items() if k != "chosen"} for r in rows]
    for r in rows:
        r["decode_tok_s_target"] = r["estimates"][target]
        r["speed"] = r["decode_tok_s_here"] if target == "host" else r["decode_tok_s_target"]
    frontier.mark_dominated(rows)
    best = frontier.choose(rows, key, bound)
    if best:
        best["chosen"] = True
    return rows, best


def write_frontier(rows, out: Path, stem: str, title: str, notes: list[str], key: str, bound: float) -> list[str]:
    frontier.write_markdown(rows, out / f"{stem}.md", title, notes)
    frontier.write_chart(rows, out / f"{stem}.png", title, key, bound)
    return [f"{stem}.md", f"{stem}.png"]


def candidate_row(name: str, kind: str, art: dict, manifest: dict, cdir: Path, kept: float | None) -> dict:
    q = art.get("quality") or {}
    return {"name": name, "kind": kind, "kept": kept, "file": art["file"], "dir": cdir, "quant": art["quant"],
            "params": manifest["model"]["params"], "bytes": art["bytes"], "mib": round(art["bytes"] / 2**20, 4),
            "bpw": (art.get("size") or {}).get("bpw"), "mean_kld": q.get("mean_kld"), "ppl": q.get("ppl"),
            "ppl_ratio": q.get("ppl_ratio"), "top1": q.get("top1_agreement"), "manifest": manifest}


def build_candidates(source, teacher, fmt: str, opts: TuneOptions, work: Path, steps) -> tuple[list[dict], dict | None]:
    if opts.share_tied:  # an untied model is refused now, not after the schemes' candidates are built
        from converters.pte_options import budget_options
        from converters.pte_tied import check_tied

        check_tied(teacher, budget_options(teacher, opts.pte_extra(budgets=True)))
    bpw = auto_bpw(teacher, opts) if opts.bpw is None else opts.bpw
    quant_opts = ConvertOptions(formats=[fmt], quants=list(opts.quants), budgets=[{"bpw": b} for b in bpw],
                                eval_data=opts.eval_data, threads=opts.threads, imatrix=opts.imatrix,
                                extra=opts.pte_extra(budgets=False))
    runs = [("quants", quant_opts)]  # one load, one importance matrix, every plan
    if opts.share_tied and bpw:  # the plans hold the tied matrix once; the schemes cannot (pte_extra)
        runs = [("quants", replace(quant_opts, budgets=[])),
                ("plans", replace(quant_opts, quants=[], extra=opts.pte_extra(budgets=True)))]
    rows = []
    for name, copts in runs:
        if copts.quants or copts.budgets:
            m = convert(source, work / name, copts, steps)
            rows += [candidate_row(a["quant"], "mixed" if "budget" in a else "quant", a, m, work / name, None)
                     for a in m["artifacts"] if a.get("quality")]
    budget = None
    if opts.budget_minutes > 0:
        from converters.budget import plan_budget
        from converters.distill import DistillConfig
        from edgechat.app.recipe import ExportSection, PruneOptions, Recipe

        cfg = DistillConfig(device=opts.device, teacher_data=opts.teacher_data)
        steps.step(f"timing distillation steps on {opts.device} for the {opts.budget_minutes:g}-minute budget")
        budget = plan_budget(teacher, cfg, opts.budget_minutes).as_dict()
        for kept in opts.kept or budget["kept_fractions"]:
            name = f"s{round(kept * 100)}-{opts.student_quant}"
            recipe = Recipe(prune=PruneOptions(target_params=kept, strategy="mixed"),
                            distill=replace(cfg, steps=budget["steps"]),
                            export=ExportSection(formats=[fmt], quants=[opts.student_quant]))
            copts = replace(quant_opts, quants=[opts.student_quant], budgets=[], recipe=recipe)
            m = convert(source, work / name, copts, steps)
            rows += [candidate_row(name, "student", a, m, work / name, kept) for a in m["artifacts"] if a.get("quality")]
    return rows, budget


def tune(source, out_dir: str | Path, opts: TuneOptions, steps) -> dict:
    fmt = check_options(opts)
    key, bound = constraint(opts)
    out_dir = Path(out_dir)
    with staging(out_dir) as tmp:
        work = tmp / "candidates"
        steps.step(f"loading {source or 'the default model (SmolLM2-135M-Instruct)'}")
        teacher = load_model(source)
        rows, budget, machine = measure(source, teacher, fmt, [opts.target], opts, work, steps)
        rows, best = for_target(rows, opts.target, key, bound)
        steps.step("writing the frontier and the chosen artifact")
        title = (f"tune {teacher.name} for {opts.target}: {len(rows)} candidates, "
                 f"{frontier.CONSTRAINTS[key][0]} {bound:g}")
        notes = frontier_notes(opts, key, bound, best, budget, machine)
        files = write_frontier(rows, tmp, "frontier", title, notes, key, bound)
        record = {"target": opts.target, "constraint": {key: bound}, "chosen": best["name"] if best else None,
                  "budget": budget, "machine": machine, "options": {k: v for k, v in vars(opts).items()},
                  "frontier": [{k: v for k, v in r.items() if k not in ("dir", "manifest")} for r in rows],
                  "files": files}
        if best:
            m = best["manifest"]
            art = next(a for a in m["artifacts"] if a["file"] == best["file"])
            for name in [best["file"], *([art["data_file"]] if art.get("data_file") else []), *m.get("files", [])]:
                shutil.move(str(best["dir"] / name), str(tmp / name))
            manifest = {**{k: v for k, v in m.items() if k not in ("created", "tools")}, "artifacts": [art],
                        "tune": record, "status": "ok"}
        else:
            manifest = {"source": {**teacher.source, "name": teacher.name}, "artifacts": [], "files": [],
                        "tune": record, "status": "failed"}
        shutil.rmtree(work)
        write_manifest(tmp, manifest)
    if not best:
        raise GateFailed(frontier.closest_miss(rows, key, bound, opts.target, out_dir), manifest)
    return manifest


def frontier_notes(opts, key, bound, best, budget, machine) -> list[str]:
    notes = [f"constraint: {frontier.CONSTRAINTS[key][0]} {bound:g}; chosen: "
             + (f"{best['name']}" if best else "none (no candidate meets it)"),
             "quality against the source: mean KLD and perplexity ratio on "
             f"{opts.eval_data or 'held-out chit-chat dialogues'}; match: share of {opts.prompts} held-out prompts "
             f"whose greedy reply ({opts.reply_tokens} tokens) is the source's",
             f"speed: decode tok/s measured here (median, {opts.runs} interleaved rounds, {machine['threads']} threads, "
             f"load average {machine['load_avg']}) and the planner's estimate for {opts.target}"]
    if budget:
        notes.append(f"students: {budget['steps']} distillation steps each ({budget['minutes']:g} min on {budget['device']} "
                     f"at {budget['step_s']:.3g} s a step, {budget['tokens_per_param']:.3g} tokens per parameter); "
                     f"kept fractions {', '.join(f'{k:g}' for k in (opts.kept or budget['kept_fractions']))}")
    else:
        notes.append("students: none (--budget-minutes 0)")
    return notes
