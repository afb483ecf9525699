"""What holding SmolLM2's tied embedding/head matrix once would buy a .pte plan (issue 12's miss at llama.cpp
Q4_K_M's size). A program keeps the 49152 x 576 matrix twice: the lookup table (ExecuTorch's quantized
embedding) and the head's XNNPACK weights; the GGUF keeps it once. This benchmark measures the ceiling of
sharing it on the quantized module run eagerly (cheap; --programs exports and runs the real files): one
sensitivity pass (HQQ + AWQ, as the exported plans), then at each --budget-mib two plans:
  apart: the plan convert makes today (the table and the head each planned and paid for);
  once:  the head held at 8 bits (8da8w, per-row int8 and fp32 scales) and the table taken as those same rows
         (8-bit rows, per-row scales), paid for once, so the table's bytes go to the rest of the model.
Both scored eagerly by torchao (the quantized export module, as bench_quality_per_byte_pte's eager rows) against
the fp32 reference on WikiText-2 and DailyDialog: mean KLD, top-1, PPL, with the predicted file size.

--programs: the real thing, as `edgechat convert --format pte --size-mib N --awq --share-tied` writes it (the
.pte and its .ptd, converters.pte_tied), run by ExecuTorch's runtime beside llama.cpp's own Q4_0 and Q4_K_M (its
convert_hf_to_gguf.py + quantize): mean KLD / top-1 / PPL on --program-chunks x 512 WikiText-2 and
--program-dialogues DailyDialog dialogues, then decode tokens/s in interleaved rounds; issue 12's goal table.

    .venv/bin/python benchmarks/bench_pte_tied.py [--budget-mib 100.57 --budget-mib 87.48] [--chunks 6]
    .venv/bin/python benchmarks/bench_pte_tied.py --programs [--program-chunks 40 --program-dialogues 30]
        [--qat-steps N]   (convert's --qat-steps: each budget's plan chosen first, then trained toward it)
        [--sens-batch SEQSxTOKENS]   (the sensitivity pass's calibration batch; default convert's own)
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import N_CTX, CachedReference, eval_datasets  # noqa: E402
from bench_quality_per_byte_pte import SEQ, EagerProgram  # noqa: E402
from common import Bench, md_table, median  # noqa: E402

THREADS = 1  # another 1-thread run can share this 2-core machine
# the GGUFs of those sizes (40 x 512 WikiText-2, bench_quality_per_byte_pte) and issue 12's goal for the .pte
GGUF = {100.57: ("llama.cpp Q4_K_M", 0.05739), 87.48: ("llama.cpp Q4_0", 0.2929)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-mib", type=float, action="append", help="file budgets (default 100.57 and 87.48)")
    ap.add_argument("--chunks", type=int, default=6, help="WikiText-2 chunks of 512 tokens")
    ap.add_argument("--dialogues", type=int, default=6, help="DailyDialog test dialogues")
    ap.add_argument("--programs", action="store_true", help="export and run the programs (see above)")
    ap.add_argument("--program-chunks", type=int, default=40)
    ap.add_argument("--program-dialogues", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved decode rounds")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per decode round")
    ap.add_argument("--qat-steps", type=int, default=0, help="--programs with convert's --qat-steps N")
    ap.add_argument("--sens-batch", default=None, help="--programs: the sensitivity pass's calibration batch, "
                    "SEQSxTOKENS (default: the .pte pass's own)")
    ap.add_argument("--name", default=None, help="results name (default bench_pte_tied[_program])")
    args = ap.parse_args()
    budgets = args.budget_mib or [100.57, 87.48]
    if args.programs:
        return programs(args, budgets)

    import torch

    from converters import mixed_precision as mp
    from converters import pte_mixed as pm
    from converters.pte_budget import budget_sensitivity, check_budgets
    from converters.pte_levers import calibration_for, prepare_module
    from converters.pte_options import budget_options
    from converters.pte_tied import HEAD, TABLE, tied_sensitivity
    from edgechat.app.evaluate import evaluate
    from edgechat.core.sources import load_model
    from runtimes.torch_engine import TorchEngine

    torch.set_num_threads(THREADS)
    bench = Bench(args.name or "bench_pte_tied")
    model = load_model(None)
    opts = budget_options(model, {"max_seq_len": SEQ, "hqq": True, "awq": True})
    allowed, fixed = check_budgets(model, opts, [{"size_mib": b} for b in budgets])
    calib = calibration_for(model)
    t = time.perf_counter()
    module, levers = prepare_module(model, opts, calib)
    sens = budget_sensitivity(model, module, opts, calib, lambda *a, **k: None)
    sens_s = time.perf_counter() - t
    print(f"sensitivity pass: {sens_s:.0f} s", file=sys.stderr, flush=True)
    datasets = eval_datasets(args.dialogues)
    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), Path(tempfile.mkdtemp(prefix="edgechat-tied-")))
    rows = []
    try:
        for budget, limit in zip(budgets, allowed):
            for how, s in (("apart", sens), ("once", tied_sensitivity(sens, pm.planned_modules(module)))):
                plan = mp.choose_types(s, limit)
                summary = mp.plan_summary(s, plan)
                quantized = pm.apply_plan(copy.deepcopy(module), plan, opts.hqq)
                engine = EagerProgram(quantized, ref)
                t = time.perf_counter()
                row = {"budget_mib": budget, "how": how, "plan_mib": (summary["tensor_bytes"] + fixed) / 2**20,
                       "predicted_kld": summary["predicted_kld"], "head": plan[HEAD], "table": plan[TABLE],
                       "counts": {c: sum(v == c for v in plan.values()) for c in sorted(set(plan.values()))},
                       "plan": plan}
                for dname, data in datasets.items():
                    row[dname] = evaluate(engine, ref, data, n_ctx=N_CTX, max_chunks=args.chunks).as_dict()
                row["eval_s"] = round(time.perf_counter() - t, 1)
                print(f"{budget:g} MiB {how}: WikiText-2 KLD {row['wikitext2']['mean_kld']:.4f}, DailyDialog "
                      f"{row['dailydialog']['mean_kld']:.4f} ({row['eval_s']:.0f} s)", file=sys.stderr, flush=True)
                rows.append(row)
    finally:
        ref.close()
    table_rows = []
    for r in rows:
        gguf, kld = GGUF.get(r["budget_mib"], ("-", None))
        w = r["wikitext2"]["mean_kld"]
        table_rows.append([f"{r['budget_mib']:g}", r["how"], round(r["plan_mib"], 2), r["head"], r["table"],
                           ", ".join(f"{k} {v}" for k, v in r["counts"].items()),
                           w, r["wikitext2"]["top1_agreement"], r["wikitext2"]["ppl"], r["dailydialog"]["mean_kld"],
                           f"{gguf} {kld}: {w / kld:.2f}x (goal 1.5x)" if kld else "-"])
    md = (f"SmolLM2-135M-Instruct, .pte plans with HQQ + AWQ (one sensitivity pass, {sens_s:.0f} s, {THREADS} "
          f"thread), each scored eagerly by torchao against the fp32 reference: WikiText-2 {args.chunks} chunks x "
          f"{N_CTX}, DailyDialog {args.dialogues} dialogues. 'apart': the table and the head planned and paid for "
          f"each (what convert writes); 'once': the head held at 8 bits and the table taken as its rows, paid for "
          f"once (what --share-tied writes; --programs runs those files). The GGUF's KLD is its "
          f"40-chunk figure from bench_quality_per_byte_pte; the eager rows there score 6 chunks, so the ratio is "
          f"indicative.\n\n"
          + md_table(["budget MiB", "tied matrix", "plan MiB", "head", "table", "modules by type", "WikiText-2 KLD",
                      "top-1", "PPL", "DailyDialog KLD", "vs the GGUF of that size"], table_rows) + "\n")
    bench.write({"sens_s": sens_s, "levers": levers, "rows": rows}, md)


def programs(args, budgets):
    """The --share-tied programs of each budget (convert's own export path: HQQ + AWQ, one sensitivity pass)
    against llama.cpp's own GGUFs: quality on the issue's text, then interleaved decode."""
    import torch

    from bench_quality_per_byte import decode_speeds, llama_cpp_files
    from common import CACHE
    from converters.pte_budget import export_budgets
    from edgechat.app.evaluate import evaluate
    from edgechat.core.conversation import calibration_sequences
    from edgechat.core.files import artifact_bytes
    from edgechat.core.sources import load_model
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from runtimes.pte_engine import PteEngine
    from runtimes.torch_engine import TorchEngine

    torch.set_num_threads(THREADS)
    bench = Bench(args.name or "bench_pte_tied_program")
    model = load_model(None)
    out = CACHE / ("pte-tied-programs" + (f"-qat{args.qat_steps}" if args.qat_steps else "")
                   + (f"-sens{args.sens_batch}" if args.sens_batch else ""))
    out.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save(out)
    if model.chat_template:
        (out / "chat_template.jinja").write_text(model.chat_template)
    # the files convert writes (no forward_all: it adds ~0.5 MiB of program, which the budget would pay for),
    # scored through one-token steps of `forward`, the decode path; exported on both cores
    torch.set_num_threads(2)
    extra = {"max_seq_len": SEQ, "awq": True, "share_tied": True, "qat_steps": args.qat_steps,
             "budgets": [{"size_mib": b} for b in budgets], "calibration": calibration_sequences(model, None)}
    if args.sens_batch:
        extra["sensitivity_batch"] = tuple(int(v) for v in args.sens_batch.split("x"))
    t = time.perf_counter()
    arts = export_budgets(model, out, extra, lambda *a, **k: print(*a, file=sys.stderr, flush=True))
    export_s = time.perf_counter() - t
    torch.set_num_threads(THREADS)
    flags = "--awq --share-tied" + (f" --qat-steps {args.qat_steps}" if args.qat_steps else "") \
        + (f", sensitivity on {args.sens_batch}" if args.sens_batch else "")
    files = {f"--size-mib {a['budget']['size_mib']:g} {flags} (.pte + .ptd)": out / a["file"] for a in arts}
    files.update(llama_cpp_files(CACHE / "qpb-llama.cpp"))
    datasets = eval_datasets(args.program_dialogues)
    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), Path(tempfile.mkdtemp(prefix="edgechat-tied-")))
    rows = {}
    try:
        for name, path in files.items():
            engine = (PteEngine if path.suffix == ".pte" else LlamaCppEngine)(path, n_ctx=N_CTX, threads=THREADS,
                                                                               logits_all=True)
            try:
                rows[name] = {"bytes": artifact_bytes(path), "file": path.name, **{
                    d: evaluate(engine, ref, data, n_ctx=N_CTX, max_chunks=args.program_chunks).as_dict()
                    for d, data in datasets.items()}}
            finally:
                engine.close()
            print(f"{name}: {rows[name]['bytes'] / 2**20:.2f} MiB, WikiText-2 KLD "
                  f"{rows[name]['wikitext2']['mean_kld']:.4f}", file=sys.stderr, flush=True)
    finally:
        ref.close()
    speeds = decode_speeds(files, args.rounds, args.tokens)
    for name, row in rows.items():
        row["decode_tok_s"] = median(speeds[name])
    for a in arts:
        row = rows[next(n for n, p in files.items() if p.name == a["file"])]
        row["plan"] = a["plan"]
        if "qat" in a:
            row["qat"] = a["qat"]
    table = md_table(["artifact", "MiB", "WikiText-2 KLD", "top-1", "PPL", "DailyDialog KLD", "top-1", "PPL",
                      "decode tok/s"],
                     [[n, round(r["bytes"] / 2**20, 2), r["wikitext2"]["mean_kld"], r["wikitext2"]["top1_agreement"],
                       r["wikitext2"]["ppl"], r["dailydialog"]["mean_kld"], r["dailydialog"]["top1_agreement"],
                       r["dailydialog"]["ppl"], round(r["decode_tok_s"], 1)] for n, r in rows.items()])
    goals = []
    for n, r in rows.items():
        if not n.startswith("--size-mib"):
            continue
        for g, q in rows.items():  # every GGUF within 5% of the program's size
            if g.startswith("llama.cpp") and abs(q["bytes"] / r["bytes"] - 1) <= 0.05:
                k, lim = r["wikitext2"]["mean_kld"], 1.5 * q["wikitext2"]["mean_kld"]
                goals.append([f"{n} vs {g}: mean KLD <= 1.5x {q['wikitext2']['mean_kld']:.4f}", round(k, 4),
                              round(lim, 4), "yes" if k <= lim else "NO"])
                d, dl = r["decode_tok_s"], 0.8 * q["decode_tok_s"]
                goals.append([f"{n} vs {g}: decode >= 0.8x {q['decode_tok_s']:.1f} tok/s", round(d, 1), round(dl, 1),
                              "yes" if d >= dl else "NO"])
    plans = "; ".join(f"{n}: {r['plan']['tensor_types'] and _counts(r['plan']['tensor_types'])}"
                      for n, r in rows.items() if "plan" in r)
    md = (f"SmolLM2-135M-Instruct against the fp32 reference (torch), {THREADS} thread: WikiText-2 "
          f"{args.program_chunks} chunks x {N_CTX}, DailyDialog {args.program_dialogues} dialogues; the programs "
          f"one token at a time through `forward` (ExecuTorch's runtime, the .ptd loaded beside the .pte), the GGUFs by "
          f"llama.cpp. Decode: median of {args.rounds} interleaved rounds of {args.tokens} tokens. Export of the "
          f"programs (one sensitivity pass, AWQ search, a lowering per budget): {export_s:.0f} s"
          + "".join(f"; {n}: QAT {r['qat']['steps']} steps toward its plan, {r['qat']['wall_s']:.0f} s on the "
                    f"{r['qat']['device'].upper()} (2 threads), distillation KL {r['qat']['kl_first']} -> "
                    f"{r['qat']['kl_last']}" for n, r in rows.items() if "qat" in r)
          + ".\n\n" + table
          + "\n\n" + md_table(["goal (issue 12)", "value", "limit", "met"], goals)
          + f"\n\nPlans (module types): {plans}\n")
    bench.write({"export_s": export_s, "rows": rows, "speeds": speeds}, md)


def _counts(types: dict) -> str:
    return ", ".join(f"{t} x{n}" for t, n in sorted({t: list(types.values()).count(t) for t in types.values()}.items()))


if __name__ == "__main__":
    main()
