"""tune: build the candidates (the source at every quant scheme and GGUF --bpw plan, and pruned + distilled
students at the ratios the distillation budget can recover), measure each one's quality against the source and
its speed, draw the speed-quality frontier and write the best candidate that meets the constraint into OUT,
staged as `convert` does, with the whole frontier in its manifest."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgechat.app import frontier
from edgechat.app.pipeline import ConvertOptions, convert
from edgechat.core.errors import EdgechatError, GateFailed
from edgechat.core.files import staging
from edgechat.core.manifest import write_manifest
from edgechat.core.sources import load_model
from targets import schemes

DEFAULT_MAX_KLD = 0.05  # with no constraint given: the fastest candidate this close to the source
PROMPTS_START = 7140  # held-out chit-chat conversations past the 20 the KLD/PPL figures score (7100-7129)


@dataclass
class TuneOptions:
    target: str = "host"
    max_mib: float | None = None
    min_decode_tok_s: float | None = None
    max_kld: float | None = None
    quants: list[str] = field(default_factory=lambda: list(schemes.names("gguf", made=True)))
    bpw: list[float] | None = None  # GGUF --bpw plans; None: two between the smallest file possible and Q8_0
    budget_minutes: float = 5.0  # distillation wall time per student; 0: the quantization plans only
    device: str = "cpu"
    teacher_data: int = 0  # students learn from this many teacher-written conversations (0: chit-chat)
    kept: list[float] | None = None  # students' kept-parameter fractions (default: what the budget recovers)
    student_quant: str = "q4_k_m"
    eval_data: str | None = None
    prompts: int = 8  # held-out prompts whose greedy reply is compared with the source's
    reply_tokens: int = 24
    runs: int = 2  # profiling rounds (artifacts interleaved) for the speed here
    threads: int | None = None
    imatrix: bool = True


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
    with target_errors():
        fmts = {schemes.get(q).format for q in [*opts.quants, opts.student_quant]}
    if fmts != {"gguf"} and (opts.bpw or len(fmts) > 1):
        raise EdgechatError("tune makes GGUF candidates (--bpw plans are GGUF): give GGUF quants "
                            f"({', '.join(schemes.names('gguf', made=True))})")
    fmt = fmts.pop()
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


def auto_bpw(model) -> list[float]:
    """Two mixed-precision plans, a third and two thirds of the way from the smallest file llama.cpp's types
    allow for this model (every matrix at its cheapest candidate type) to Q8_0's 8.5 bits: a budget below the
    smallest is refused, and what lies between the fixed schemes depends on the model's shapes."""
    import math

    from converters import mixed_precision as mp

    tensors = mp.planned_tensors(model)
    fixed = sum(p.numel() * 4 for p in model.module.parameters() if p.dim() == 1)  # norms stay F32
    smallest = (sum(mp.type_bytes(t, mp.candidates(t.cols)[0]) for t in tensors) + fixed) * 8 / model.config.param_count()
    if smallest > 8.0:
        return []
    return [math.ceil((smallest + f * (8.5 - smallest)) * 10) / 10 for f in (1 / 3, 2 / 3)]


def held_out_prompts(n: int) -> list[str]:
    from edgechat.core.data import chitchat_dialogues

    return [d[0]["content"] for d in chitchat_dialogues(PROMPTS_START, n) if d[0]["role"] == "user"]


def replies(chat, prompts: list[str], on_prompt=None) -> list[list[int]]:
    out = []
    for i, p in enumerate(prompts):
        chat.reset()
        out.append(list(chat.send(p).token_ids))
        if on_prompt:
            on_prompt(i + 1)
    return out


def greedy_match(teacher, paths: list[Path], opts: TuneOptions, steps) -> dict[Path, float]:
    """Share of held-out prompts whose greedy reply (token ids, up to reply_tokens) is the source's own."""
    from edgechat.app.api import load
    from edgechat.app.chat import Chat
    from runtimes.torch_engine import TorchEngine

    prompts = held_out_prompts(opts.prompts)
    sampling = dict(temperature=0.0, max_tokens=opts.reply_tokens)
    ref = replies(Chat(TorchEngine(teacher, n_ctx=1024, threads=opts.threads), **sampling), prompts,
                  steps.step("the source's greedy replies to held-out prompts", total=len(prompts)))
    out = {}
    for path in paths:
        chat = load(path, threads=opts.threads, n_ctx=1024, **sampling)
        try:
            got = replies(chat, prompts, steps.step(f"greedy replies of {path.name}", total=len(prompts)))
        finally:
            chat.engine.close()
        out[path] = sum(a == b for a, b in zip(got, ref)) / len(prompts)
    return out


def speeds(paths: list[Path], targets: list[str], opts: TuneOptions, steps) -> tuple[dict, dict]:
    """Decode tok/s measured here (profiling run: each artifact in its own process, interleaved, medians) and
    the planner's estimate for each target; plus the machine's load during the run."""
    from edgechat.app.profiling import artifact_facts, run_profiling

    steps.step(f"measuring decode speed here ({len(paths)} artifacts interleaved, {opts.runs} rounds)")
    run = run_profiling([str(p) for p in paths], runs=opts.runs, max_tokens=32, threads=opts.threads,
                        target="host", progress=False)
    out = {}
    for row in run["results"]:
        est = {}
        for t in targets:
            facts = artifact_facts(row["path"], t, max(round(row["prompt_tokens_mean"]), 1),
                                   max(round(row["completion_tokens_mean"]), 1), run["n_ctx"])
            est[t] = (facts["estimate"] or {}).get("decode_tok_s")
        out[Path(row["path"])] = {"here": row["decode_tok_s"]["median"], "est": est}
    return out, {"load_avg": run["load_avg"], "load_avg_after": run["load_avg_after"], "threads": run["threads"],
                 "warning": run["machine"]["warning"]}


def measure(source, teacher, fmt: str, targets: list[str], opts: TuneOptions, work: Path, steps):
    """Every candidate built in `work` and measured: quality, greedy match, speed here and on each target."""
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
    bpw = auto_bpw(teacher) if opts.bpw is None else opts.bpw
    quant_opts = ConvertOptions(formats=[fmt], quants=list(opts.quants), budgets=[{"bpw": b} for b in bpw],
                                eval_data=opts.eval_data, threads=opts.threads, imatrix=opts.imatrix)
    m = convert(source, work / "quants", quant_opts, steps)  # one load, one importance matrix, every plan
    rows = [candidate_row(a["quant"], "mixed" if "budget" in a else "quant", a, m, work / "quants", None)
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
            for name in [best["file"], *m.get("files", [])]:
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
