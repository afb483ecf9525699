"""Compression of SmolLM2-135M-Instruct (the teacher): students pruned to about 70% and 50% of its parameters
(width, Minitron-style) and a depth-only student at 50% (depth vs width at the same size), each distilled on
chit-chat for a fixed CPU budget, then quantized to Q4_K_M with llama.cpp's quantizer.

Per student: parameters, Q4_K_M file size; quality on the assistant turns of DailyDialog test dialogues
(perplexity, and mean KLD / top-1 vs the fp32 teacher) for pruned only, pruned + distilled (fp32, torch
engine) and the distilled Q4_K_M (llama.cpp engine); decode tokens/s of each Q4_K_M vs the teacher's Q4_K_M
(llama.cpp, in this process, interleaved rounds, fixed token count); and greedy answers to the "Paris"
question and five MT-Bench first turns.

The distillation budget is wall time on this machine: a short timing probe gives the seconds per step, and
the step count is budget / step time, so the learning-rate schedule runs to its end. Students are kept in
benchmarks/.cache/compress (use --reuse to skip pruning and distillation on a re-run).

    .venv/bin/python benchmarks/bench_compress.py [--minutes 60] [--students w70,w50,d50]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, DATA, THREADS, Bench, md_table, median, rotate, wait_quiet  # noqa: E402
from compress_job import (STUDENTS, distill_config, distill_for, importance, load_student,  # noqa: E402
                         prune_student, recipe_record)

PARIS = ("Answer the user's question in one sentence.", "What is the capital of France?")
N_CTX = 512
PPL_GOAL = 1.3  # distilled perplexity at most 1.3x the teacher's
SPEED_GOAL = 1.5  # the 50% student decodes at least 1.5x the teacher (both Q4_K_M)


def quality(engine, reference, data) -> dict:
    from edgechat.app.evaluate import evaluate

    q = evaluate(engine, reference, data, n_ctx=N_CTX)
    return {k: q.as_dict()[k] for k in ("ppl", "ref_ppl", "ppl_ratio", "mean_kld", "top1_agreement", "tokens_scored")}


def torch_engine(model):
    from runtimes.torch_engine import TorchEngine

    return TorchEngine(model, n_ctx=N_CTX)


def gguf_engine(path: Path):
    from edgechat.app.api import open_engine

    return open_engine(path, n_ctx=N_CTX, threads=THREADS, logits_all=True)


def export_q4km(model, out: Path) -> Path:
    return export_gguf(model, out, "q4_k_m")


def export_gguf(model, out: Path, quant: str) -> Path:
    from converters import ExportOptions, get_format, plan_exports
    from edgechat.reports.progress import Steps

    plan_exports(["gguf"], [quant])
    out.mkdir(parents=True, exist_ok=True)
    arts = get_format("gguf").export(model, out, [quant], ExportOptions(threads=THREADS), Steps(enabled=False))
    return out / arts[0]["file"]


def student_home(name: str, minutes: float, job: Path | None) -> Path:
    return CACHE / "compress" / (f"{name}-job-{job.name}" if job else f"{name}-{minutes:g}min")


def make_student(name: str, teacher, imp, minutes: float, dd, reuse: bool, job: Path | None) -> tuple[object, dict]:
    """Prune, evaluate, distil (here, or take the student that compress_job.py distilled), evaluate."""
    from converters.hf_writer import write_hf
    from edgechat.core.load_hf import load_hf

    strategy, frac = STUDENTS[name]
    home = student_home(name, minutes, job)
    if reuse and (home / "record.json").exists():
        return load_hf(home / "distilled"), json.loads((home / "record.json").read_text())
    if job:
        pruned, student, ran = load_student(job, teacher, name, imp)
        chosen = ran["chosen"]
    else:
        pruned, plan = prune_student(teacher, name, imp)
        chosen = plan.chosen
    rec = {"strategy": strategy, "target_frac": frac, "chosen": chosen, "params": pruned.config.param_count(),
           "params_frac": pruned.config.param_count() / teacher.config.param_count()}
    ref = torch_engine(teacher)
    t = time.perf_counter()
    rec["pruned_fp32"] = quality(torch_engine(pruned), ref, dd)
    rec["eval_s"] = round(time.perf_counter() - t, 1)
    print(f"[{name}] pruned: {rec['params'] / 1e6:.1f}M params, {rec['pruned_fp32']}", file=sys.stderr)
    if job:
        spec = json.loads((job / "job.json").read_text())["students"][name]
        cfg = distill_config(ran["steps"])
        rec["distill"] = {"step_s_probe": spec["cpu_step_s"], "ran_on": ran["device"], "wall_s": ran["wall_s"],
                          "first": ran["first"], "last": ran["last"], "curve": ran["curve"]}
        rec["distill"].update(recipe_record(cfg))
    else:
        student, rec["distill"] = distill_for(teacher, pruned, minutes, name)
    rec["distilled_fp32"] = quality(torch_engine(student), ref, dd)
    print(f"[{name}] distilled: {rec['distilled_fp32']}", file=sys.stderr)
    write_hf(student, home / "distilled")
    (home / "record.json").write_text(json.dumps(rec, indent=2, default=str))
    return student, rec


def decode_speed(paths: dict, rounds: int, tokens: int) -> dict:
    """llama.cpp decode tok/s of each GGUF, interleaved round by round, the same fixed tokens for all; x_teacher:
    each one's median over the rounds of its ratio to the teacher in the same round."""
    from runtimes import llama_lib

    Llama = llama_lib.load(next(iter(paths.values()))).Llama

    llms = {k: Llama(str(p), n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
            for k, p in paths.items()}
    # each model's own ids for the prompt (a vocabulary-trimmed one splits words the teacher keeps whole)
    prompts = {k: llm.tokenize(b"Write a long story about a lighthouse keeper.", add_bos=True) for k, llm in llms.items()}
    feed = [llms["teacher"].tokenize(b" the", add_bos=False)[0]] * tokens
    out = {k: [] for k in llms}
    load = []
    for r in range(rounds + 1):  # round 0 warms up
        q = wait_quiet(0.3, 30)
        for k in rotate(list(llms), r):
            llm = llms[k]
            llm.reset()
            llm.eval(prompts[k])
            t = time.perf_counter()
            for tok in feed:
                llm.eval([tok])
            if r:
                out[k].append(tokens / (time.perf_counter() - t))
        if r:
            load.append(q)
    per_round = {k: median([a / b for a, b in zip(v, out["teacher"])]) for k, v in out.items()}  # noise shared per round
    return {"tok_s": {k: median(v) for k, v in out.items()}, "values": out, "x_teacher": per_round,
            "quiet_rounds": sum(q["quiet"] for q in load)}


def answers(path: Path, questions: list[tuple[str | None, str]], **penalties) -> list[dict]:
    """Greedy answers, 80 tokens at most; penalties: frequency_penalty, presence_penalty."""
    import edgechat

    out = []
    for system, q in questions:
        chat = edgechat.load(path, system=system, n_ctx=1024, threads=THREADS, max_tokens=80, temperature=0.0,
                             **penalties)
        out.append({"system": system, "question": q, "answer": chat.send(q).text.strip()})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="distillation wall-time budget per student")
    ap.add_argument("--students", default="w70,w50,d50", help=f"comma list of {', '.join(STUDENTS)}")
    ap.add_argument("--dialogues", type=int, default=30, help="DailyDialog test dialogues to score")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reuse", action="store_true", help="reuse students already distilled with this budget")
    ap.add_argument("--calib-seqs", type=int, default=64, help="chit-chat sequences (512 tokens) for importance")
    ap.add_argument("--from-job", type=Path, help="take the students that compress_job.py distilled (its budget)")
    args = ap.parse_args()

    import torch

    from converters.prune import Importance
    from edgechat.core.data import read_eval_data
    from edgechat.core.sources import load_model

    torch.set_num_threads(THREADS)
    bench = Bench("bench_compress" + (f"-{args.from_job.name}" if args.from_job else ""))
    teacher = load_model(None)
    dd = read_eval_data(DATA / "dailydialog" / "dialogues_test.txt", max_dialogues=args.dialogues)
    job = args.from_job
    if job:  # the job's importance, budget and students
        spec = json.loads((job / "job.json").read_text())
        imp = Importance(**torch.load(job / "importance.pt"))
        args.minutes, args.calib_seqs, importance_s = spec["minutes"], spec["calib_seqs"], spec["importance_s"]
    else:
        t = time.perf_counter()
        imp = importance(teacher, args.calib_seqs)
        importance_s = time.perf_counter() - t
    names = args.students.split(",")
    recs, models = {}, {}
    for n in names:
        models[n], recs[n] = make_student(n, teacher, imp, args.minutes, dd, args.reuse, job)

    ggufs = {"teacher": export_q4km(teacher, CACHE / "compress" / "teacher")}
    for n in names:
        ggufs[n] = export_q4km(models[n], student_home(n, args.minutes, job) / "gguf")
    ref = torch_engine(teacher)
    q4 = {k: quality(gguf_engine(p), ref, dd) for k, p in ggufs.items()}
    speed = decode_speed(ggufs, args.rounds, args.tokens)
    mt = [json.loads(ln)["turns"][0] for ln in (DATA / "mt_bench" / "mt_bench_question.jsonl").read_text().splitlines()[:5]]
    questions = [PARIS] + [(None, q) for q in mt]
    said = {k: answers(p, questions) for k, p in ggufs.items()}

    teacher_ppl = q4["teacher"]["ref_ppl"]
    rows = [["teacher", "-", f"{teacher.config.param_count() / 1e6:.1f}M", 1.0, ggufs["teacher"].stat().st_size / 2**20,
             speed["tok_s"]["teacher"], 1.0, teacher_ppl, None, None, q4["teacher"]["ppl"], q4["teacher"]["mean_kld"]]]
    for n in names:
        r = recs[n]
        rows.append([n, r["strategy"], f"{r['params'] / 1e6:.1f}M", r["params_frac"], ggufs[n].stat().st_size / 2**20,
                     speed["tok_s"][n], speed["tok_s"][n] / speed["tok_s"]["teacher"], r["pruned_fp32"]["ppl"],
                     r["distilled_fp32"]["ppl"], r["distilled_fp32"]["ppl"] / teacher_ppl, q4[n]["ppl"], q4[n]["mean_kld"]])
    kld_rows = [[n, recs[n]["pruned_fp32"]["mean_kld"], recs[n]["distilled_fp32"]["mean_kld"],
                 recs[n]["pruned_fp32"]["top1_agreement"], recs[n]["distilled_fp32"]["top1_agreement"],
                 recs[n]["distill"]["steps"], recs[n]["distill"]["tokens_seen"], recs[n]["distill"]["step_s_probe"],
                 recs[n]["distill"]["wall_s"]] for n in names]
    ran_on, recipe = recs[names[0]]["distill"]["ran_on"], distill_config()
    budget = (f"the steps that {THREADS} quiet CPU threads of this machine do in {args.minutes:g} min (seconds per step "
              f"measured per student), run on {ran_on} in fp32 (TF32 off), weights returned in fp16" if job else
              f"{args.minutes:g} min of wall time per student on {THREADS} threads")
    md = (f"Teacher: SmolLM2-135M-Instruct (embedded Q4_1 GGUF, dequantized to fp32). Distillation budget: "
          f"{budget} (chit-chat conversations 0-3000, sequences of {recipe.seq_len} tokens, {recipe.micro_batch} per "
          f"step, KL of logits at T={recipe.temperature:g}, AdamW lr {recipe.lr:g} warm-up + cosine). Quality on "
          f"the assistant turns of {args.dialogues} DailyDialog test dialogues (n_ctx {N_CTX}); KLD vs the fp32 "
          f"teacher. Decode: llama.cpp, {THREADS} threads, {args.tokens} tokens, median of {args.rounds} interleaved "
          f"rounds ({speed['quiet_rounds']} quiet). Importance measured once ({importance_s:.0f} s, {args.calib_seqs} chit-chat "
          f"sequences).\n\n"
          + md_table(["model", "pruning", "params", "of teacher", "Q4_K_M MiB", "decode tok/s", "speed-up",
                      "PPL pruned (fp32)", "PPL distilled (fp32)", "distilled / teacher PPL", "PPL Q4_K_M",
                      "KLD Q4_K_M"], rows)
          + f"\n\nGoals: the 50% student decodes at least {SPEED_GOAL}x the teacher; distilled perplexity at most "
            f"{PPL_GOAL}x the teacher's ({teacher_ppl:.2f} fp32).\n\n"
          + md_table(["student", "KLD pruned", "KLD distilled", "top-1 pruned", "top-1 distilled", "steps",
                      "tokens seen", "CPU s/step", f"distill s ({ran_on})"], kld_rows)
          + "\n\n## Answers (greedy, Q4_K_M, 80 tokens at most)\n")
    for i, (system, q) in enumerate(questions):
        md += f"\n### {q.splitlines()[0][:120]}\n" + (f"(system: {system})\n" if system else "")
        for k in said:
            md += f"\n- **{k}**: {said[k][i]['answer'][:400].replace(chr(10), ' ')}"
        md += "\n"
    bench.write({"students": recs, "q4_k_m_quality": q4, "decode": speed, "answers": said,
                 "files": {k: {"name": p.name, "bytes": p.stat().st_size} for k, p in ggufs.items()},
                 "minutes": args.minutes, "importance_s": importance_s}, md)


if __name__ == "__main__":
    main()
