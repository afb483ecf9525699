"""The students of bench_students, made and cached: pruned by name (d85: depth to 85% of the parameters), distilled
on teacher-written conversations or chit-chat (compress_job.distill_for), scored against the teacher and kept in
benchmarks/.cache/students/NAME-DATA-Mmin[...] with their record; --after continues a cached one."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compress import export_q4km, quality, torch_engine  # noqa: E402
from common import CACHE  # noqa: E402
from compress_job import DEFAULT_LR, distill_config, distill_for  # noqa: E402

STRATEGIES = {"d": "depth", "w": "width", "m": "mixed"}
HELD_OUT = 40  # teacher-answered held-out chats
MAGPIE_SHARE = 0.25  # teacher_conversations' default; cache names without -magpieX assume it


def spec(name: str) -> tuple[str, float]:
    m = re.fullmatch(r"([dwm])(\d\d)", name)
    if not m:
        raise SystemExit(f"student {name!r}: give d, w or m (depth, width, mixed) and a percentage, e.g. d80")
    return STRATEGIES[m.group(1)], int(m.group(2)) / 100


def teacher_chats(teacher, n: int, held_out: bool, magpie_share: float = MAGPIE_SHARE, drop_looping: bool = False):
    """Teacher-written conversations (cached by edgechat.app.teacher_data): training ones from the start of the
    chit-chat corpus with a share of Magpie prompts (drop_looping: without those whose reply loops); held-out ones
    from the held-out range, no Magpie."""
    from edgechat.app.teacher_data import teacher_conversations
    from edgechat.core.data import HELD_OUT_START
    from edgechat.reports.progress import Steps

    if held_out:
        return teacher_conversations(teacher, n=n, seed=1, magpie_share=0.0, corpus_start=HELD_OUT_START,
                                     progress=Steps())
    chats = teacher_conversations(teacher, n=n, seed=0, magpie_share=magpie_share, progress=Steps())
    return chats.without_loops() if drop_looping else chats


def chosen_before(name: str, committed: dict):
    """A block removal measured before: a cached student's, else one of a committed results file's students
    (--blocks-from), else None (measure it). The same name first; else, for a depth student, another depth
    student's longest removal (prune() takes its first blocks: the removal is greedy, so they are the same)."""
    records = [json.loads(p.read_text()) for p in sorted((CACHE / "students").glob("*/record.json"))]
    records += [r for _, r in sorted(committed.items())]
    same = next((r["chosen"] for r in records if r["name"] == name), None)
    if same or not name.startswith("d"):
        return same
    depth = [r["chosen"] for r in records if r["chosen"].get("layer_removal")]
    return max(depth, key=lambda c: len(c["layer_removal"]), default=None)


def cached_record(folder: Path) -> dict:
    """--after's student: its record.json, checked to be a student distilled on teacher-written data."""
    try:
        before = json.loads((folder / "record.json").read_text())
        if before["data"] != "teacher":
            raise ValueError(f"distilled on {before['data']}; only a teacher-data student is continued")
        before["teacher_data"]["options"]["n"], before["distill"]["steps"], before["distilled"]  # what it reads
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--after {folder}: not a cached teacher-data student ({type(e).__name__}: {e}; see "
                         "benchmarks/.cache/students)") from None
    return before


def continue_student(teacher, args, before: dict, evals) -> tuple[str, dict]:
    """--after: the cached student in args.after (its record `before`) distilled for args.minutes more on the
    same teacher-written set, the data in another order (seed 1, 2, ... for the first, second, ... continuation;
    --seed another, to repeat an arm), warm-up and cosine decay again. Cached as AFTER+Mmin."""
    from edgechat.core.sources import load_model

    key = f"{before['name']}/{before['data']}"
    budget = f"{args.steps}steps" if args.steps else f"{args.minutes:g}min"
    home = CACHE / "students" / f"{args.after.name}+{budget}{recipe_suffix(args)}"
    if (home / "record.json").exists():
        return key, json.loads((home / "record.json").read_text())
    rec = {k: before[k] for k in ("name", "data", "strategy", "target_frac", "chosen", "params", "params_frac",
                                  "pruned")}
    rec["after"] = {"from": args.after.name, "distill": before["distill"], "distilled": before["distilled"]}
    chats = teacher_chats(teacher, before["teacher_data"]["options"]["n"], held_out=False,
                          magpie_share=before["teacher_data"]["options"].get("magpie_share", MAGPIE_SHARE),
                          drop_looping=args.drop_looping)
    if chats.sha256 != before["teacher_data"]["sha256"]:
        raise SystemExit(f"--after {args.after}: its teacher-written set ({before['teacher_data']['path']}) is "
                         "not the one made now")
    start = load_model(args.after / "distilled")
    seed = args.seed if args.seed is not None else 1 + args.after.name.count("+")
    resample_for = None
    if args.student_share:
        from edgechat.app.distill_data import on_policy, resampler
        from edgechat.reports.progress import Steps

        opts = distill_config(alpha_ul=args.alpha_ul, resample_every=args.resample_every)
        opts.student_share, opts.reply_tokens = args.student_share, chats.options.get("reply_tokens", 128)
        opts.student_greedy = args.student_greedy
        if args.resample_every:  # from the student in training, each round on the conversations it reads
            def rounds(s):
                rec["resampled"] = (fn := resampler(chats, opts, s, seed)).stats  # filled in as it trains
                return fn

            resample_for = rounds
        else:
            chats = on_policy(chats, opts, start, seed, Steps())
    rec["teacher_data"] = chats.record()
    student, rec["distill"] = distill_for(teacher, start, args.minutes, f"{key} after {args.after.name}",
                                          chats.packed(distill_config().seq_len), seed=seed,
                                          alpha_ce=args.alpha_ce, lr=args.lr, alpha_ul=args.alpha_ul, steps=args.steps,
                                          resample_every=args.resample_every, resample_for=resample_for,
                                          divergence=args.divergence)
    return key, finish_student(student, teacher, rec, evals, home, key)


def finish_student(student, teacher, rec: dict, evals, home: Path, key: str) -> dict:
    """Scores the distilled student against the teacher, caches it in `home` (HF folder, Q4_K_M, record)."""
    from converters.hf_writer import write_hf

    ref = torch_engine(teacher)
    rec["distilled"] = {k: quality(torch_engine(student), ref, d) for k, d in evals.items()}
    print(f"[{key}] distilled: {rec['distilled']}", file=sys.stderr)
    write_hf(student, home / "distilled")
    rec["gguf"] = str(export_q4km(student, home / "gguf"))
    (home / "record.json").write_text(json.dumps(rec, indent=2, default=str))
    return rec


def recipe_suffix(args) -> str:
    """Cache names of students trained with another peak learning rate, with cross-entropy next to the KL or
    without the looping teacher replies, with the student's own replies (greedy) and unlikelihood, on reverse KL
    (older names: DEFAULT_LR, KL only, every reply, none of the student's, forward KL)."""
    return ((f"-lr{args.lr:g}" if args.lr != DEFAULT_LR else "") + (f"-ce{args.alpha_ce:g}" if args.alpha_ce else "")
            + ("-noloops" if args.drop_looping else "") + (f"-own{args.student_share:g}" if args.student_share else "")
            + ("-greedy" if args.student_greedy and not args.alpha_ul else "")
            + (f"-ul{args.alpha_ul:g}" if args.alpha_ul else "") + (f"-every{args.resample_every}" if args.resample_every
                                                                     else "")
            + ("-reverse" if args.divergence == "reverse" else "")
            + (f"-seed{args.seed}" if args.seed is not None else ""))


def make_student(name, data, teacher, imp, args, evals, committed: dict) -> dict:
    from converters.prune import plan_for_target, prune

    more = ""  # older names: 800 conversations, MAGPIE_SHARE of them Magpie
    if data == "teacher" and args.teacher_data != 800:
        more += f"-{args.teacher_data}conv"
    if data == "teacher" and args.magpie_share != MAGPIE_SHARE:
        more += f"-magpie{args.magpie_share:g}"
    home = CACHE / "students" / f"{name}-{data}-{args.minutes:g}min{more}{recipe_suffix(args)}"
    if (home / "record.json").exists():
        return json.loads((home / "record.json").read_text())
    strategy, frac = spec(name)
    plan = plan_for_target(teacher.config, frac, strategy)
    pruned = prune(teacher, plan, imp, chosen_before(name, committed))
    rec = {"name": name, "data": data, "strategy": strategy, "target_frac": frac, "chosen": plan.chosen,
           "params": pruned.config.param_count(),
           "params_frac": pruned.config.param_count() / teacher.config.param_count()}
    ref = torch_engine(teacher)
    rec["pruned"] = {k: quality(torch_engine(pruned), ref, d) for k, d in evals.items()}
    print(f"[{name}/{data}] pruned: {rec['params'] / 1e6:.1f}M params, {rec['pruned']}", file=sys.stderr)
    dataset = None
    if data == "teacher":
        chats = teacher_chats(teacher, args.teacher_data, held_out=False, magpie_share=args.magpie_share,
                              drop_looping=args.drop_looping)
        dataset = chats.packed(distill_config().seq_len)
        rec["teacher_data"] = chats.record()
    student, rec["distill"] = distill_for(teacher, pruned, args.minutes, f"{name}/{data}", dataset,
                                          alpha_ce=args.alpha_ce, lr=args.lr)
    return finish_student(student, teacher, rec, evals, home, f"{name}/{data}")
