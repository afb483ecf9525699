r"""Students that keep the assistant (issue 13): SmolLM2-135M-Instruct pruned to about 90/80/70% of its
parameters, each distilled for one CPU-hour (the steps 2 quiet threads of this machine do in --minutes,
seconds per step timed on the student before training) on teacher-written conversations or on chit-chat.

A student is named by its pruning and size: d80 = depth (whole blocks, removed by measured loss), w80 = width
(Minitron-style), m80 = mixed. Per student and data: quality of the fp32 student against the fp32 teacher on
held-out teacher-answered chats (chit-chat first turns from the held-out range, answered greedily by the
teacher) and on DailyDialog's assistant turns (perplexity, ratio to the teacher's, mean KLD, top-1); decode
tokens/s of its Q4_K_M against the teacher's Q4_K_M (llama.cpp, interleaved rounds); greedy answers to the
"Paris" question and five MT-Bench first turns, each checked for loops (a 6-word run said 3 times).

Students are kept in benchmarks/.cache/students/NAME-DATA-Mmin (plus -Nconv for a teacher set other than 800
conversations): a run trains only the students it has not got, so the grid can be filled over several sessions
(each student is an hour of both cores) and reported in one run. On a bare checkout, --blocks-from a committed
results file reuses its block removals rather than measuring them again (about 20 minutes for d80).

    .venv/bin/python benchmarks/bench_students.py --students d80 --data teacher [--minutes 60]
    .venv/bin/python benchmarks/bench_students.py --students d90,d80,d70 --data teacher,chitchat  # report
    .venv/bin/python benchmarks/bench_students.py --students d80 --teacher-data 3200 --name bench_students-3200 \
        --blocks-from benchmarks/results/bench_students.json
    .venv/bin/python benchmarks/bench_students.py --minutes 60 --name bench_students-2h \
        --after benchmarks/.cache/students/d80-teacher-60min-6400conv-magpie0.4  # one more hour for it
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compress import PARIS, answers, decode_speed, export_q4km  # noqa: E402
from common import CACHE, DATA, THREADS, Bench, md_table  # noqa: E402
from compress_job import DEFAULT_LR, distill_config, importance  # noqa: E402
from converters.distill_loss import DIVERGENCES  # noqa: E402
from students import HELD_OUT, MAGPIE_SHARE, cached_record, continue_student, make_student, teacher_chats  # noqa: E402

from edgechat.app.loops import LOOP_TIMES, LOOP_WORDS, loops  # noqa: E402

PPL_GOAL, SPEED_GOAL = 1.15, 1.2  # the issue's: PPL at most 1.15x the teacher's on teacher chats, 1.2x faster


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", default="d80", help="comma list, e.g. d90,d80,d70 (d/w/m: depth/width/mixed)")
    ap.add_argument("--data", default="teacher", help="comma list of teacher, chitchat")
    ap.add_argument("--minutes", type=float, default=60.0, help="distillation budget per student (quiet wall time)")
    ap.add_argument("--teacher-data", type=int, default=800, help="teacher-written training conversations")
    ap.add_argument("--magpie-share", type=float, default=MAGPIE_SHARE,
                    help="share of the teacher-written conversations whose user turn the teacher wrote (Magpie)")
    ap.add_argument("--alpha-ce", type=float, default=0.0,
                    help="weight of cross-entropy on the data's tokens (the teacher's greedy replies) next to the KL")
    ap.add_argument("--lr", type=float, default=DEFAULT_LR, help="peak learning rate (warm-up, cosine decay)")
    ap.add_argument("--student-share", type=float, default=0.0,
                    help="--after only: the share of replies the student writes itself (sampled at T=1; greedy with "
                         "--student-greedy or --alpha-ul)")
    ap.add_argument("--student-greedy", action="store_true",
                    help="--student-share only: the student's replies are its greedy ones, not sampled at T=1")
    ap.add_argument("--alpha-ul", type=float, default=0.0,
                    help="weight of unlikelihood on the repeats in the student's own looping replies (--student-share)")
    ap.add_argument("--steps", type=int, help="--after only: distil for exactly this many steps instead of --minutes' "
                                              "worth (to compare recipes at equal steps)")
    ap.add_argument("--resample-every", type=int, default=0, help="--student-share only: sample the student's "
                    "replies again every N steps from the student as it trains (0: once, before training)")
    ap.add_argument("--divergence", choices=DIVERGENCES, default="forward", help="--after only: "
                    "KL(teacher || student) or KL(student || teacher) (GKD's mode-seeking choice)")
    ap.add_argument("--seed", type=int, help="--after only: the data order's and the student's replies' seed "
                    "(default: 1 + the continuations before), to repeat an arm on other draws")
    ap.add_argument("--drop-looping", action="store_true",
                    help="leave the teacher-written conversations whose reply loops out of the training set")
    ap.add_argument("--dialogues", type=int, default=30, help="DailyDialog test dialogues to score")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--name", default="bench_students")
    ap.add_argument("--blocks-from", help="a results JSON (e.g. benchmarks/results/bench_students.json) whose "
                                          "students' block removals to reuse instead of measuring them")
    ap.add_argument("--after", type=Path, help="a cached student folder (benchmarks/.cache/students/...) to "
                                                "distil for --minutes more on its teacher set, instead of the grid")
    args = ap.parse_args()
    before = None
    if (args.student_share or args.steps or args.seed is not None) and not args.after:
        ap.error("--student-share, --steps and --seed go with --after (a continued student)")
    for flag, on, why in (("--resample-every", args.resample_every, "it samples the student's replies again as it "
                                                                     "trains"),
                          ("--student-greedy", args.student_greedy, "it picks how the student's replies are decoded"),
                          ("--alpha-ul", args.alpha_ul, "it pushes down the repeats in the student's own replies")):
        if on and not args.student_share:
            ap.error(f"{flag} needs --student-share: {why}")
    if args.after:
        try:
            before = cached_record(args.after)
        except ValueError as e:
            ap.error(str(e))
    from edgechat.app.teacher_data import check_options
    from edgechat.core.errors import EdgechatError

    try:  # before the hours of work, not after them
        check_options(args.teacher_data, args.magpie_share, reply_tokens=1)  # replies keep their default length
    except EdgechatError as e:
        ap.error(str(e))
    committed = {}  # the students of --blocks-from
    if args.blocks_from:
        try:
            committed = dict(json.loads(Path(args.blocks_from).read_text())["students"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--blocks-from {args.blocks_from}: not a bench_students results file ({type(e).__name__}: {e})")

    import torch

    from edgechat.core.data import EvalData, read_eval_data
    from edgechat.core.sources import load_model

    torch.set_num_threads(THREADS)
    bench = Bench(args.name)
    teacher = load_model(None)
    held = teacher_chats(teacher, HELD_OUT, held_out=True)
    evals = {"teacher chats": EvalData("dialogues", "teacher-heldout", dialogues=held.conversations),
             "DailyDialog": read_eval_data(DATA / "dailydialog" / "dialogues_test.txt", max_dialogues=args.dialogues)}
    grid = [(n, d) for n in args.students.split(",") for d in args.data.split(",")]
    for _n, d in grid:
        if d not in ("teacher", "chitchat"):
            raise SystemExit(f"--data {d!r}: give teacher or chitchat")
    if args.after:
        recs = dict([continue_student(teacher, args, before, evals)])
    else:
        imp = importance(teacher, 64)
        recs = {f"{n}/{d}": make_student(n, d, teacher, imp, args, evals, committed) for n, d in grid}

    ggufs = {"teacher": export_q4km(teacher, CACHE / "compress" / "teacher"),
             **{k: Path(r["gguf"]) for k, r in recs.items()}}
    first = next(iter(recs.values()))["distilled"]
    base = {k: {"ppl": first[k]["ref_ppl"]} for k in evals}  # the teacher's own perplexities
    speed = decode_speed(ggufs, args.rounds, args.tokens)
    mt = [json.loads(ln)["turns"][0] for ln in (DATA / "mt_bench" / "mt_bench_question.jsonl").read_text().splitlines()[:5]]
    questions = [PARIS] + [(None, q) for q in mt]
    said = {k: answers(p, questions) for k, p in ggufs.items()}
    for k in said:
        for a in said[k]:
            a["loops"] = loops(a["answer"])

    t_tok = speed["tok_s"]["teacher"]
    rows, goals = [], []
    for k, r in recs.items():
        d, tc = r["distilled"], r["distilled"]["teacher chats"]
        x = speed["x_teacher"][k]
        n_loops = sum(a["loops"] for a in said[k])
        rows.append([k, r["strategy"], f"{r['params'] / 1e6:.1f}M", r["params_frac"], r["distill"]["steps"],
                     r["distill"]["tokens_seen"], speed["tok_s"][k], x, tc["ppl"], tc["ppl_ratio"], tc["mean_kld"],
                     d["DailyDialog"]["ppl"], d["DailyDialog"]["ppl_ratio"], d["DailyDialog"]["mean_kld"],
                     r["pruned"]["teacher chats"]["ppl_ratio"], n_loops])
        goals.append([k, x, "yes" if x >= SPEED_GOAL else "no", tc["ppl_ratio"],
                      "yes" if tc["ppl_ratio"] <= PPL_GOAL else "no", n_loops, "yes" if not n_loops else "no"])
    recipe = distill_config()
    ce_text = f" + {args.alpha_ce:g} x cross-entropy on the data's tokens" if args.alpha_ce else ""
    n_drop = [r["teacher_data"].get("dropped_looping", 0) for r in recs.values() if "teacher_data" in r]
    dropped = f", those whose reply loops left out ({max(n_drop)})" if args.drop_looping and n_drop else ""
    if args.student_share:
        how = "greedy" if args.student_greedy or args.alpha_ul else "sampled at T=1"
        own = next(r["teacher_data"] for r in recs.values() if "teacher_data" in r)
        rs = next((r["resampled"] for r in recs.values() if r.get("resampled")), None)
        if rs:  # re-sampled rounds: none of the replies are the student's before training
            dropped += (f"; {args.student_share:.0%} of the replies of each round's conversations written by the "
                        f"student as it trains ({how}, again every {args.resample_every} steps: "
                        f"{rs['rounds']} rounds, {rs['student_replies']} replies, {rs['seconds']:.0f} s), the "
                        "teacher's KL on them and no cross-entropy")
        else:
            dropped += (f"; {own['student_replies']} of them ({args.student_share:.0%}) answered by the student "
                        f"itself before training instead ({how}), the "
                        "teacher's KL on them and no cross-entropy" + (f"; the {own['avoid_tokens']} tokens that "
                        f"carry the repeats of its looping replies get {args.alpha_ul:g} x unlikelihood instead"
                        if args.alpha_ul else ""))
    budget = (f"{args.steps} steps (fixed) on {THREADS} threads per student" if args.steps else
              f"{args.minutes:g} min of quiet steps on {THREADS} threads per student (the step timed on the student "
              "first)")
    td = {"n": args.teacher_data, "magpie_share": args.magpie_share,  # --after: the student's own set
          **next((r["teacher_data"]["options"] for r in recs.values() if "teacher_data" in r), {})}
    md = (f"Teacher: SmolLM2-135M-Instruct (embedded GGUF, dequantized to fp32): {t_tok:.1f} decode tok/s at "
          f"Q4_K_M; perplexity {base['teacher chats']['ppl']:.3f} on {HELD_OUT} held-out teacher-answered chats, "
          f"{base['DailyDialog']['ppl']:.2f} on {args.dialogues} DailyDialog test dialogues. Distillation: "
          f"{budget}, sequences of {recipe.seq_len} tokens, {recipe.micro_batch} per step, "
          f"{'reverse KL (student || teacher)' if args.divergence == 'reverse' else 'KL'} at "
          f"T={recipe.temperature:g}{ce_text} on the assistant's tokens (teacher data) or every token "
          f"(chit-chat), AdamW lr {args.lr:g}, precision {recipe.precision} (bf16 autocast where the CPU has "
          f"it). Teacher data: {td['n']} conversations ({td['magpie_share']:.0%} Magpie prompts), replies greedy "
          f"by the teacher{dropped}. Decode: "
          f"llama.cpp, {THREADS} threads, {args.tokens} tokens, median of {args.rounds} interleaved rounds "
          f"({speed['quiet_rounds']} quiet); speed-up: the median of the per-round ratios to the teacher. Quality: fp32 student vs fp32 teacher.\n\n"
          + "".join(f"Continued: {k} started from {r['after']['from']} ({r['after']['distill']['steps']} steps "
                    f"before; then PPL x teacher {r['after']['distilled']['teacher chats']['ppl_ratio']:.3f} on "
                    f"teacher chats, {r['after']['distilled']['DailyDialog']['ppl_ratio']:.3f} on DailyDialog) and "
                    f"got the steps below on top, the set in another order (seed {r['distill']['seed']}), warm-up and cosine decay "
                    f"again.\n\n" for k, r in recs.items() if "after" in r)
          + md_table(["student/data", "pruning", "params", "of teacher", "steps", "tokens", "decode tok/s",
                      "speed-up (per round)", "PPL teacher chats", "x teacher", "KLD", "PPL DailyDialog", "x teacher", "KLD",
                      "x teacher pruned", "answers looping"], rows)
          + f"\n\nGoal: at least {SPEED_GOAL}x the teacher's decode at the same quant, perplexity at most "
            f"{PPL_GOAL}x the teacher's on held-out teacher-answered chats, no looping answers.\n\n"
          + md_table(["student/data", "speed-up", "met", "PPL x teacher", "met", "looping answers", "met"], goals)
          + f"\n\n## Answers (greedy, Q4_K_M, 80 tokens at most; [loops]: a {LOOP_WORDS}-word run said "
            f"{LOOP_TIMES}+ times)\n")
    for i, (system, q) in enumerate(questions):
        md += f"\n### {q.splitlines()[0][:120]}\n" + (f"(system: {system})\n" if system else "")
        for k in said:
            a = said[k][i]
            md += f"\n- **{k}**{' [loops]' if a['loops'] else ''}: {a['answer'][:400].replace(chr(10), ' ')}"
        md += "\n"
    bench.write({"students": recs, "teacher": base, "decode": speed, "answers": said, "minutes": args.minutes,
                 "files": {k: {"name": p.name, "bytes": p.stat().st_size} for k, p in ggufs.items()}}, md)


if __name__ == "__main__":
    main()
