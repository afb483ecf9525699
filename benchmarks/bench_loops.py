r"""How often the teacher and the cached students loop (issue 13's "no degenerate loops"), on more prompts than
bench_students' six: greedy answers (Q4_K_M unless --quant says, llama.cpp, 80 tokens at most, as
bench_students) to the "Paris" question and the first turns of all 80 MT-Bench questions, each checked for a
6-word run said 3 times (edgechat.app.loops). Six prompts cannot tell recipes apart; 80 can tell a student from
its teacher; --held-out N adds N held-out chit-chat first turns and a Fisher exact test of each model's loop
count against --baseline's, to tell recipes apart.

For each student's looping answers it also reads, with the fp32 models, the probability the teacher and the
student give each token that repeats an earlier 8-token run of the reply: whether the teacher, shown the
student's loop, would continue it too (then KL to the teacher on the student's own replies cannot undo it);
and at each loop's onset whether the teacher, in the student's context, would have started it too.

With --penalties it also answers under OpenAI's frequency/presence penalties (edgechat.app.sampling), the
decode-time guard against loops, and counts the loops and the "Paris" answers under each.

    .venv/bin/python benchmarks/bench_loops.py                      # the d85 students
    .venv/bin/python benchmarks/bench_loops.py --students 'd8*,w*' --name bench_loops-more
    .venv/bin/python benchmarks/bench_loops.py --penalties 0.5:0,0:0.5 --no-probs --name bench_loops-penalties
    .venv/bin/python benchmarks/bench_loops.py --quant q8_0 --no-probs --name bench_loops-q8_0
    .venv/bin/python benchmarks/bench_loops.py --students 'd85-*+*' --held-out 44 --name bench_loops-onpolicy
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compress import PARIS, answers, export_gguf  # noqa: E402
from common import CACHE, DATA, THREADS, Bench, md_table  # noqa: E402

from edgechat.app.loops import LOOP_TIMES, LOOP_WORDS, loops, repeats  # noqa: E402

REPEAT = 8  # tokens: a token repeats when it ends an 8-token run seen earlier in the same reply


def loop_probs(teacher, student, question: str, answer: str) -> dict:
    """In a looping reply, by the fp32 models: (teacher p, student p) of each token that ends a REPEAT-token run
    seen earlier in it, and at the loop's onset (the first token of the first such run's second saying) the
    teacher's and the student's p of it and whether it is the teacher's own greedy choice there."""
    import torch

    ids, spans = teacher.chat_format().assistant_spans([{"role": "user", "content": question},
                                                        {"role": "assistant", "content": answer}])
    x = torch.tensor([ids])
    with torch.no_grad():
        pt, ps = (torch.softmax(m.module(x)[0].float(), -1) for m in (teacher, student))
    start, end = spans[0]
    again = repeats(ids, [start <= j < end for j in range(len(ids))], REPEAT + 1)
    out = {"repeats": [(float(pt[j - 1, ids[j]]), float(ps[j - 1, ids[j]])) for j, a in enumerate(again) if a]}
    first = next((j for j, a in enumerate(again) if a), None)
    if first is not None:
        j = first - REPEAT  # the run of REPEAT + 1 tokens ending at `first` starts here
        out["onset"] = (float(pt[j - 1, ids[j]]), float(ps[j - 1, ids[j]]), int(pt[j - 1].argmax()) == ids[j])
    return out


def teacher_nll(teacher, said: list[dict]) -> float:
    """Median over the answers of the fp32 teacher's mean negative log-likelihood of each reply's tokens: how
    plausible the teacher finds the text. Loops score low, word salad (too strong a penalty) high."""
    import torch

    out = []
    for a in said:
        msgs = ([{"role": "system", "content": a["system"]}] if a["system"] else []) + [
            {"role": "user", "content": a["question"]}, {"role": "assistant", "content": a["answer"]}]
        ids, spans = teacher.chat_format().assistant_spans(msgs)
        start, end = spans[0]
        with torch.no_grad():
            logp = torch.log_softmax(teacher.module(torch.tensor([ids]))[0].float(), -1)
        out.append(-float(logp[start - 1:end - 1].gather(1, torch.tensor(ids[start:end])[:, None]).mean()))
    return statistics.median(out)


def scored(teacher, said: list[dict], n81: int) -> dict:
    """One set of answers with each one's loop mark, the loop counts (the six, Paris + MT-Bench, the held-out
    chats after them), "Paris" and the teacher's NLL (over Paris + MT-Bench, as earlier runs)."""
    for a in said:
        a["loops"] = loops(a["answer"])
    return {"answers": said, "loops_six": sum(a["loops"] for a in said[:6]),
            "loops_all": sum(a["loops"] for a in said[:n81]), "loops_held": sum(a["loops"] for a in said[n81:]),
            "paris": "Paris" in said[0]["answer"], "teacher_nll": teacher_nll(teacher, said[:n81])}


def fisher_p(a: int, n: int, b: int, m: int) -> float:
    """Two-sided Fisher exact test: the chance of loop counts at least this far apart (a of n against b of m)
    were both drawn from one rate: the sum of the hypergeometric probabilities no larger than the observed."""
    k, total = a + b, n + m
    prob = [math.comb(n, i) * math.comb(m, k - i) / math.comb(total, k) for i in range(max(0, k - m), min(k, n) + 1)]
    seen = math.comb(n, a) * math.comb(m, b) / math.comb(total, k)
    return min(1.0, sum(p for p in prob if p <= seen * (1 + 1e-9)))


def looping_lines(said: list[dict]) -> str:
    return "".join(f"\n- {a['question'].splitlines()[0][:70]}: {a['answer'][:200].replace(chr(10), ' ')}"
                   for a in said if a["loops"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", default="d85*", help="comma list of globs of cached student folders in "
                                                      "benchmarks/.cache/students")
    ap.add_argument("--name", default="bench_loops")
    ap.add_argument("--strip", default="-teacher-60min-6400conv-magpie0.4",
                    help="the part of the students' names they share, left out of the table (it starts with a dash: "
                         "give it as --strip=-teacher-...)")
    ap.add_argument("--penalties", default="", help="comma list of FREQUENCY:PRESENCE penalty pairs to answer "
                                                   "under too, e.g. 0.5:0,0:0.5")
    ap.add_argument("--no-probs", action="store_true", help="skip the fp32 repeat-token probabilities")
    ap.add_argument("--held-out", type=int, default=0, help="also answer the first turns of this many held-out "
                    "chit-chat conversations (never trained on; the range holds 44), for counts that can tell recipes "
                    "apart")
    ap.add_argument("--baseline", help="the student the others' loop counts are tested against (Fisher exact; "
                                       "default: the first)")
    ap.add_argument("--quant", default="q4_k_m", help="the GGUF quant that answers (q4_k_m: the students' "
                                                     "cached files; another is exported from their fp32 weights)")
    args = ap.parse_args()
    penalties = [tuple(float(x) for x in p.split(":")) for p in args.penalties.split(",") if p]

    import torch

    from edgechat.core.sources import load_model

    torch.set_num_threads(THREADS)
    found = {g: [p for p in (CACHE / "students").glob(g) if (p / "record.json").exists()]
             for g in args.students.split(",")}
    if missing := [g for g, ps in found.items() if not ps]:  # each glob must find one: a typo is not a skipped arm
        raise SystemExit(f"--students: no cached student in {CACHE / 'students'} matches {', '.join(missing)}")
    homes = sorted({p for ps in found.values() for p in ps})
    bench = Bench(args.name)
    teacher = load_model(None)
    mt = [json.loads(ln)["turns"][0] for ln in (DATA / "mt_bench" / "mt_bench_question.jsonl").read_text().splitlines()]
    from edgechat.core.data import HELD_OUT_START, chitchat_dialogues

    held = [(None, d[0]["content"]) for d in chitchat_dialogues(HELD_OUT_START, args.held_out)] if args.held_out else []
    if len(held) < args.held_out:
        print(f"--held-out {args.held_out}: the held-out range has {len(held)} conversations; using them all",
              file=sys.stderr)
    questions = [PARIS] + [(None, q) for q in mt] + held
    n81 = 1 + len(mt)  # Paris and MT-Bench: the counts earlier runs report
    home = CACHE / "compress" if args.quant == "q4_k_m" else CACHE / "loops" / args.quant
    models = {"teacher": (export_gguf(teacher, home / "teacher", args.quant), None)}
    for h in homes:
        rec = json.loads((h / "record.json").read_text())
        models[h.name] = (Path(rec["gguf"]) if args.quant == "q4_k_m" else
                          export_gguf(load_model(h / "distilled"), home / h.name, args.quant), rec)
    res, rows = {}, []
    for k, (gguf, rec) in models.items():
        said = answers(gguf, questions)
        r = {**scored(teacher, said, n81), "penalized": {
            f"{f:g}:{p:g}": {"frequency_penalty": f, "presence_penalty": p,
                             **scored(teacher, answers(gguf, questions, frequency_penalty=f, presence_penalty=p), n81)}
            for f, p in penalties}}
        looping = [a for a in said if a["loops"]]
        if rec:
            r["ppl_ratio"] = rec["distilled"]["teacher chats"]["ppl_ratio"]
        if rec and not args.no_probs:
            student = load_model(CACHE / "students" / k / "distilled")
            found = [loop_probs(teacher, student, a["question"], a["answer"]) for a in looping]
            probs = [p for f in found for p in f["repeats"]]
            onsets = [f["onset"] for f in found if "onset" in f]
            r["repeats"] = {"tokens": len(probs),
                            "teacher_p_median": statistics.median(p[0] for p in probs) if probs else None,
                            "student_p_median": statistics.median(p[1] for p in probs) if probs else None}
            r["onsets"] = {"n": len(onsets), "teacher_greedy": sum(o[2] for o in onsets),
                           "teacher_p_median": statistics.median(o[0] for o in onsets) if onsets else None,
                           "student_p_median": statistics.median(o[1] for o in onsets) if onsets else None}
        res[k] = r
        rep, on = r.get("repeats", {}), r.get("onsets", {})
        rows.append([k.replace(args.strip, ""), r.get("ppl_ratio", 1.0), f"{r['loops_six']} of 6",
                     f"{r['loops_all']} of {n81}", rep.get("tokens", ""), rep.get("teacher_p_median", ""),
                     rep.get("student_p_median", ""),
                     f"{on['teacher_greedy']} of {on['n']}; {on['teacher_p_median']:.3f} / {on['student_p_median']:.3f}"
                     if on.get("n") else "", "yes" if r["paris"] else "no", f"{r['teacher_nll']:.3f}"]
                    + [f"{q['loops_all']} of {n81}, Paris {'yes' if q['paris'] else 'no'}, "
                       f"NLL {q['teacher_nll']:.3f}"
                       for q in r["penalized"].values()])
        print(f"[{k}] {rows[-1][2:4]} held-out {r['loops_held']} {rows[-1][7:]}", file=sys.stderr)
    held_cols, held_text = [], ""
    if held:  # each count against the baseline's, over all the prompts
        base = next((k for k in res if k != "teacher" and args.baseline and args.baseline in k),
                    next(k for k in res if k != "teacher"))
        n_base = res[base]["loops_all"] + res[base]["loops_held"]
        for row, (k, r) in zip(rows, res.items()):
            r["p_vs_baseline"] = fisher_p(r["loops_all"] + r["loops_held"], len(questions), n_base, len(questions))
            row[4:4] = [f"{r['loops_held']} of {len(held)}", "(baseline)" if k == base else f"{r['p_vs_baseline']:.2g}"]
        held_cols = ["loops, held-out chats", f"p, same loop rate as {base.replace(args.strip, '')}"]
        held_text = (f"Held-out chats: the first turns of {len(held)} chit-chat conversations from the held-out range "
                     f"(never trained on). p: two-sided Fisher exact test that a model's loop count over all "
                     f"{len(questions)} prompts and the baseline's come from one rate (small: they differ). ")
    md = (f"Greedy answers ({args.quant.upper()}, llama.cpp, {THREADS} threads, 80 tokens at most) to the \"Paris\" question and the "
          f"first turns of the {len(mt)} MT-Bench questions; an answer loops when a {LOOP_WORDS}-word run is said "
          f"{LOOP_TIMES}+ times. \"the six\": bench_students' six (Paris and the first five MT-Bench turns). "
          f"Repeats: tokens of the looping answers that end a {REPEAT}-token run seen earlier in the same answer, "
          "and the median probability the fp32 teacher and the fp32 student give them in that context. "
          "Onsets: the first token of each looping answer's first repeated run: in how many the fp32 teacher's own "
          "greedy choice in the student's context is that token, and the teacher's / student's median p of it. "
          "NLL: the median over the 81 answers of the fp32 teacher's mean negative log-likelihood of the reply's "
          "tokens (loops score low, word salad high). "
          + held_text + "\"F:P\": the same greedy answers under frequency penalty F and presence penalty P. "
          f"Student names without the common \"{args.strip}\".\n\n"
          + md_table(["model", "PPL x teacher (teacher chats)", "loops, the six", "loops, all", *held_cols,
                      "repeat tokens", "teacher p (median)", "student p (median)",
                      "onsets: teacher's choice; teacher / student p", "Paris", "NLL"]
                     + [f"{f:g}:{p:g}: loops, all, Paris, NLL" for f, p in penalties], rows)
          + "\n\n## Looping answers\n")
    for k, r in res.items():
        md += f"\n### {k}\n" + looping_lines(r["answers"]) + "\n"
        for key, q in r["penalized"].items():
            md += f"\n{key}, Paris: {q['answers'][0]['answer'][:200]}\n" + looping_lines(q["answers"]) + "\n"
    bench.write({"models": res}, md)


if __name__ == "__main__":
    main()
