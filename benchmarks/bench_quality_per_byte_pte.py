"""The .pte half of bench_quality_per_byte on SmolLM2-135M-Instruct: 8da4w (group 32, 4-bit embedding and head) and
each lever of issue #12's point 3 alone, then the best combination, against the GGUF files of the same size
(within 5%): mean KLD / top-1 / PPL vs the fp32 reference on WikiText-2 and chat-formatted DailyDialog, file size,
decode tokens/s.

Each variant is scored on its quantized export module run eagerly by torchao (the same quantized weights and
dynamic int8 activations the program holds), which needs no lowering; the default and the best combination are
also exported, and their programs scored by ExecuTorch, timed for decode against llama.cpp on the same-size GGUF
(rounds interleaved, medians), and their file sizes measured. Levers:
  (a) 8da8w (8-bit weights, the same dynamic int8 activations) and 4-bit weights with fp32 activations: how much
      of 8da4w's error is the activations and how much the 4-bit weights;
  (b) HQQ scale-only parameters; (c) the per-module plan at a size budget (8-bit where the sensitivity pass ranks
      modules highest); (d) AWQ scales folded into the norms; (e) QAT, N steps distilled from fp32.

    .venv/bin/python benchmarks/bench_quality_per_byte_pte.py [--chunks 6] [--dialogues 6] [--qat-steps 20]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import N_CTX, CachedReference, eval_datasets  # noqa: E402
from bench_quality_per_byte import THREADS, chart  # noqa: E402
from common import CACHE, RESULTS, Bench, library_hash, loadavg, md_table, median, rotate  # noqa: E402

SEQ = 512
PROMPT = "Tell me a long story about a robot who learns to paint."


class EagerProgram:
    """An engine over the quantized export module, run eagerly: tokenizer and chat format from the reference."""

    def __init__(self, module, ref):
        from converters.pte_modules import ExportModel

        self.runner, self.ref = ExportModel(module, SEQ, last_only=False), ref
        self.add_bos, self.chat_format = ref.add_bos, ref.chat_format

    def tokenize(self, text, add_bos):
        return self.ref.tokenize(text, add_bos)

    def logits_all(self, ids):
        import torch

        from converters.pte_mixed import quiet_native

        with torch.inference_mode(), quiet_native():
            return self.runner(torch.tensor([ids]), torch.tensor([0]))[0].float().numpy()


def weight_only_4bit(module, group: int):
    """4-bit weights (the 8da4w grid) with fp32 activations: torchao's weight-only config on every linear."""
    import torch
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    quantize_(module, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group)))
    return module


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=6, help="WikiText-2 chunks of 512 tokens")
    ap.add_argument("--dialogues", type=int, default=6, help="DailyDialog test dialogues")
    ap.add_argument("--qat-steps", type=int, default=20)
    ap.add_argument("--budget-mib", type=float, default=100.57, help="the plan's size: llama.cpp Q4_K_M's file")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--gguf-dir", type=Path, default=CACHE / "qpb-edgechat-074d06f60c07",
                    help="bench_quality_per_byte's edgechat output (its mixed-precision GGUFs)")
    ap.add_argument("--skip-export", action="store_true", help="eager scores only")
    ap.add_argument("--ref-dir", type=Path, help="reuse this directory of cached reference logits")
    ap.add_argument("--export-default", action="store_true", help="also export and time the default 8da4w program "
                    "(bench_pte_vs_llamacpp times it on a quiet machine)")
    ap.add_argument("--report-only", action="store_true", help="write the results from --log's variants only")
    ap.add_argument("--combo-only", action="store_true", help="plan only with the levers that helped alone")
    ap.add_argument("--log", type=Path, help="the per-variant results file to resume from")
    args = ap.parse_args()
    bench = Bench("bench_quality_per_byte_pte")

    if args.report_only:  # the results files from what the log holds, nothing more run
        log = args.log or CACHE / f"qpb-pte-{library_hash()}.json"
        return report(args, bench, json.loads(log.read_text()), {}, "-", None)
    import torch

    from converters import mixed_precision as mp
    from converters import pte_mixed as pm
    from converters.pte_budget import check_budgets, plan_budgets
    from converters.pte_export import budget_options, export_pte_file, module_plan, resolve_options
    from converters.pte_levers import calibration_for, prepare_module
    from edgechat.app.evaluate import evaluate
    from edgechat.core.sources import load_model
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from runtimes.pte_engine import PteEngine
    from runtimes.torch_engine import TorchEngine

    torch.set_num_threads(THREADS)
    model = load_model(None)
    ref_dir = args.ref_dir or Path(tempfile.mkdtemp(prefix="edgechat-qpb-pte-"))
    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), ref_dir)
    datasets = eval_datasets(args.dialogues)
    log = args.log or CACHE / f"qpb-pte-{library_hash()}.json"
    done = json.loads(log.read_text()) if log.exists() else {}

    def score(name, engine, extra=None):
        if name in done:
            return done[name]
        t = time.perf_counter()
        q = {d: evaluate(engine, ref, data, n_ctx=N_CTX, max_chunks=args.chunks).as_dict() for d, data in datasets.items()}
        done[name] = {**q, "eval_s": round(time.perf_counter() - t, 1), **(extra or {})}
        log.write_text(json.dumps(done))
        w = q["wikitext2"]
        print(f"{name:40s} wiki kld {w['mean_kld']:.4f} top1 {w['top1_agreement']:.4f} ppl {w['ppl']:.2f} | dd kld "
              f"{q['dailydialog']['mean_kld']:.4f}  load {loadavg()}", file=sys.stderr, flush=True)
        return done[name]

    base = resolve_options(model, "8da4w", {"max_seq_len": SEQ})
    calib = calibration_for(model)

    def eager(name, opts, plan=None, module=None, levers=None, transform=None):
        if name in done:
            return done[name]
        t = time.perf_counter()
        if module is None:
            module, levers = prepare_module(model, opts, calib)
        module = copy.deepcopy(module)
        opts = replace(opts, plan=plan) if plan else opts
        size = None
        if transform:
            module = transform(module)
        else:
            chosen = module_plan(module, opts)
            planned = pm.planned_modules(module)
            size = pm.fixed_bytes(module, planned, SEQ) + sum(pm.module_bytes(m, chosen[m.name]) for m in planned
                                                              if m.name in chosen)
            module = pm.apply_plan(module, chosen, opts.hqq)
        prep_s = time.perf_counter() - t
        return score(name, EagerProgram(module, ref), {"prepare_s": round(prep_s, 1), "levers": levers or {},
                                                       "plan_bytes": size})

    eager("8da4w (default: g32, 4-bit embedding and head)", base)
    eager("(a) 8da8w (8-bit weights, int8 activations)", resolve_options(model, "8da8w", {"max_seq_len": SEQ}))
    eager("(a) 4-bit weights g32, fp32 activations", base,
          transform=lambda m: weight_only_4bit(pm.apply_plan(m, {"model.embed_tokens": "4w-g32"}, False), 32))
    eager("(b) 8da4w + HQQ", replace(base, hqq=True))
    eager("(d) 8da4w + AWQ", replace(base, awq=True))
    if args.qat_steps:
        eager(f"(e) 8da4w + QAT {args.qat_steps} steps", replace(base, qat_steps=args.qat_steps))

    # (c) and the combinations: one sensitivity pass per lever set, the plan at the budget
    budget = {"size_mib": args.budget_mib}
    plans = {}
    default_kld = done["8da4w (default: g32, 4-bit embedding and head)"]["wikitext2"]["mean_kld"]
    helpful = {k: True for k, name in (("awq", "(d) 8da4w + AWQ"), ("hqq", "(b) 8da4w + HQQ"))
               if done[name]["wikitext2"]["mean_kld"] < default_kld}  # the levers that helped alone join the plan
    combos = [("", {})] + ([(" + " + " + ".join(k.upper() for k in helpful), helpful)] if helpful else [])
    if args.combo_only and helpful:
        combos = combos[1:]
    for tag, lever in combos:
        name = f"(c) plan {args.budget_mib:g} MiB{tag}"
        opts = budget_options(model, {"max_seq_len": SEQ, **lever})
        allowed, fixed = check_budgets(model, opts, [budget])
        t = time.perf_counter()
        module, levers = prepare_module(model, opts, calib)
        (_b, plan, record), = plan_budgets(model, module, opts, [budget], allowed, fixed, calib, lambda *a, **k: None)
        plans[name] = (opts, plan, module, levers, record, round(time.perf_counter() - t, 1))
        eager(name, opts, plan=plan, module=module, levers=levers)
        done[name]["plan_bytes"] = record["predicted_file_bytes"]
        done[name]["sensitivity_s"] = plans[name][5]
        done[name]["plan_counts"] = {c: list(plan.values()).count(c) for c in set(plan.values())}
        log.write_text(json.dumps(done))

    # programs: the default and the best plan, exported, scored by ExecuTorch, timed against llama.cpp
    ggufs = {"llama.cpp Q4_0": CACHE / "qpb-llama.cpp" / "q4_0.gguf", "llama.cpp Q4_K_M": CACHE / "qpb-llama.cpp" / "q4_k_m.gguf",
             "edgechat mixed-87.48mib (GGUF)": args.gguf_dir / "smollm2-135m-instruct-mixed-87.48mib.gguf",
             "edgechat mixed-100.57mib (GGUF)": args.gguf_dir / "smollm2-135m-instruct-mixed-100.57mib.gguf"}
    for name, path in ggufs.items():
        eng = LlamaCppEngine(path, n_ctx=N_CTX, threads=THREADS, logits_all=True)
        try:
            score(name, eng, {"bytes": path.stat().st_size})
        finally:
            eng.close()
    best = min(plans, key=lambda n: done[n]["wikitext2"]["mean_kld"])
    files = {}
    if not args.skip_export:
        out = CACHE / f"qpb-pte-files-{library_hash()}"
        out.mkdir(parents=True, exist_ok=True)
        model.tokenizer.save(out)  # the engine reads the tokenizer and template beside the program
        (out / "chat_template.jinja").write_text(model.chat_template)
        programs = {"8da4w default (.pte)": (base, None, None)} if args.export_default else {}
        for name, (opts, plan, module) in {**programs, f"{best} (.pte)": plans[best][:3]}.items():
            path = out / (name.split(" ")[0].strip("()") + ("-plan" if plan else "") + ".pte")
            if not path.exists():
                t = time.perf_counter()
                art = export_pte_file(model, path, replace(opts, quant="mixed", plan=plan) if plan else opts,
                                      module=copy.deepcopy(module) if module is not None else None,
                                      levers=plans[best][3] if plan else None)
                (path.with_suffix(".json")).write_text(json.dumps({**art, "wall_s": round(time.perf_counter() - t, 1)}))
            files[name] = path
            eager_name = "8da4w (default: g32, 4-bit embedding and head)" if plan is None else best
            done[name] = {**done[eager_name], "bytes": path.stat().st_size, "eager_row": eager_name,
                          "export": json.loads(path.with_suffix(".json").read_text()),
                          "program_vs_eager": program_vs_eager(path, opts if plan is None else replace(opts, plan=plan),
                                                               module, model, ref, prepare_module, pm, module_plan)}
            log.write_text(json.dumps(done))
    speeds = decode_speeds({**files, **ggufs}, args.rounds, args.tokens) if files else {}
    ref.close()
    report(args, bench, done, speeds, best, budget)


def report(args, bench, done, speeds, best, budget):
    rows = []
    for name, q in done.items():
        w, d = q["wikitext2"], q["dailydialog"]
        size = q.get("bytes") or q.get("plan_bytes")
        rows.append({"name": name, "bytes": size, "mib": size / 2**20 if size else None,
                     "wiki_kld": w["mean_kld"], "wiki_top1": w["top1_agreement"], "wiki_ppl": w["ppl"],
                     "dd_kld": d["mean_kld"], "dd_top1": d["top1_agreement"], "dd_ppl": d["ppl"],
                     "decode_tok_s": median(speeds[name]) if name in speeds else None,
                     "decode_runs": speeds.get(name), "how": "ExecuTorch" if name.endswith("(.pte)") else
                     "llama.cpp" if name.startswith(("llama.cpp", "edgechat mixed")) else "torchao eager",
                     **{k: q[k] for k in ("plan_counts", "sensitivity_s", "levers", "export", "prepare_s") if k in q}})
    by = {r["name"]: r for r in rows}
    goals = {}
    for pte_name, gguf_name in ((f"{best} (.pte)", "edgechat mixed-100.57mib (GGUF)"),
                                ("8da4w default (.pte)", "edgechat mixed-87.48mib (GGUF)")):
        if pte_name in by:
            p, g = by[pte_name], by[gguf_name]
            ratio = p["bytes"] / g["bytes"]
            goals[f"{pte_name}: mean KLD <= 1.5x {gguf_name}'s {g['wiki_kld']:.4f} (size ratio {ratio:.3f})"] = {
                "value": p["wiki_kld"], "limit": 1.5 * g["wiki_kld"], "met": p["wiki_kld"] <= 1.5 * g["wiki_kld"]}
            if p["decode_tok_s"] and g["decode_tok_s"]:
                goals[f"{pte_name}: decode >= 0.8x {gguf_name}'s {g['decode_tok_s']:.1f} tok/s"] = {
                    "value": p["decode_tok_s"], "limit": 0.8 * g["decode_tok_s"],
                    "met": p["decode_tok_s"] >= 0.8 * g["decode_tok_s"]}
    png = RESULTS / "bench_quality_per_byte.png"
    gguf_rows = json.loads((RESULTS / "bench_quality_per_byte.json").read_text())["rows"]
    chart(gguf_rows, png, pte=[r for r in rows if r["mib"] and r["how"] != "llama.cpp"])
    doc = {"threads": THREADS, "n_ctx": N_CTX, "chunks": args.chunks, "dialogues": args.dialogues,
           "qat_steps": args.qat_steps, "budget": budget, "best_plan": best, "rows": rows, "goals": goals,
           "chart": png.name, "loadavg_end": loadavg()}
    md = (f"SmolLM2-135M-Instruct against the fp32 reference (torch), {THREADS} thread(s). WikiText-2: {args.chunks} "
          f"chunks x {N_CTX} tokens; DailyDialog: assistant turns of {args.dialogues} test dialogues. 'how': torchao "
          f"eager = the quantized export module run by torch (no lowering; size = the plan's predicted file), "
          f"ExecuTorch = the written program, llama.cpp = the GGUF. Decode: median of {args.rounds} interleaved rounds "
          f"of {args.tokens} tokens.\n\n"
          + md_table(["artifact", "how", "MiB", "WikiText-2 KLD", "top-1", "PPL", "DailyDialog KLD", "top-1", "PPL",
                      "decode tok/s"],
                     [[r["name"], r["how"], r["mib"] or "-", r["wiki_kld"], r["wiki_top1"], r["wiki_ppl"], r["dd_kld"],
                       r["dd_top1"], r["dd_ppl"], r["decode_tok_s"] or "-"] for r in rows])
          + "\n\n" + md_table(["goal", "value", "limit", "met"],
                              [[k, v["value"], v["limit"], "yes" if v["met"] else "NO"] for k, v in goals.items()])
          + "\n\nPlans: " + "; ".join(f"{r['name']}: {r['plan_counts']} (sensitivity pass + levers {r['sensitivity_s']} s)"
                                     for r in rows if "plan_counts" in r)
          + f"\n\n![chart]({png.name})\n")
    bench.write(doc, md)


def program_vs_eager(path, opts, module, model, ref, prepare_module, pm, module_plan) -> dict:
    """The written program against the eager module it came from, on one 256-token WikiText-2 prefill: the
    quality rows of a program are its eager module's (scoring a program steps one token at a time without the
    extra forward_all method, 10x the eager time on this machine), so this says how close the two are."""
    import numpy as np
    import torch

    from bench_quality import DATA
    from runtimes.pte_engine import PteEngine

    if module is None:
        module, _ = prepare_module(model, opts)
    module = pm.apply_plan(copy.deepcopy(module), module_plan(module, opts), opts.hqq)
    text = (DATA / "wikitext2" / "wiki.test.raw").read_text()[:20000]
    ids = ref.tokenize(text, add_bos=ref.add_bos)[:256]
    eager = EagerProgram(module, ref).logits_all(ids)
    pte = PteEngine(path, n_ctx=SEQ, threads=THREADS)
    try:
        got = np.asarray(pte.forward(ids, 0), dtype=np.float32)  # the last position's logits
    finally:
        pte.close()
    a, b = torch.log_softmax(torch.tensor(got), -1), torch.log_softmax(torch.tensor(eager[-1]), -1)
    return {"tokens": len(ids), "max_abs_logit_diff": float((torch.tensor(got) - torch.tensor(eager[-1])).abs().max()),
            "kld_program_vs_eager": float((b.exp() * (b - a)).sum()), "same_argmax": int(a.argmax()) == int(b.argmax())}


def decode_speeds(files: dict, rounds: int, tokens: int) -> dict:
    import edgechat

    speeds = {k: [] for k in files}
    for r in range(rounds):
        for name in rotate(list(files), r):
            chat = edgechat.load(files[name], threads=THREADS, max_tokens=tokens, n_ctx=SEQ)
            try:
                chat.complete("Once upon a time", max_tokens=4)
                chat.reset()
                speeds[name].append(chat.send(PROMPT, max_tokens=tokens).stats.decode_tok_s)
            finally:
                chat.engine.close()
    return speeds


if __name__ == "__main__":
    main()
