"""The .pte half of bench_quality_per_byte on SmolLM2-135M-Instruct: 8da4w (group 32, 4-bit embedding and head) and
each lever of issue #12's point 3 alone, then the best combination, against the GGUF files of the same size
(within 5%): mean KLD / top-1 / PPL vs the fp32 reference on WikiText-2 and chat-formatted DailyDialog, file size,
decode tokens/s.

Each variant is scored on its quantized export module run eagerly by torchao (the same quantized weights and
dynamic int8 activations the program holds; cheap, --chunks/--dialogues), which needs no lowering. The per-module
plan (c) comes from one sensitivity pass per lever set, planned at every --budget-mib (default: llama.cpp Q4_0's
and Q4_K_M's file sizes), the levers that helped alone switched on first, then the plan alone. The default 8da4w
and each budget's best plan are then exported to real programs (with forward_all, logits at every position), scored
by ExecuTorch's runtime on --program-chunks/--program-dialogues (the issue's 40 x 512 and 30), as are the GGUFs
of the same sizes by llama.cpp, and timed for decode against them (rounds interleaved, medians); the goal table
pairs each program with every GGUF within 5% of its file size. Levers:
  (a) 8da8w (8-bit weights, the same dynamic int8 activations) and 4-bit weights with fp32 activations: how much
      of 8da4w's error is the activations and how much the 4-bit weights;
  (b) HQQ scale-only parameters; (c) the per-module plan at a size budget (8-bit where the sensitivity pass ranks
      modules highest); (d) AWQ scales folded into the norms; (e) QAT, N steps distilled from fp32.

    .venv/bin/python benchmarks/bench_quality_per_byte_pte.py [--chunks 6] [--program-chunks 40] [--qat-steps 20]
    ... --log FILE (resume: every scored row is kept there) --ref-dir DIR (reference logits kept for a rerun)
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
from bench_quality_per_byte import THREADS, decode_speeds  # noqa: E402
from common import CACHE, RESULTS, Bench, library_hash, loadavg  # noqa: E402
from qpb_pte_report import report  # noqa: E402
from quality_chart import draw, later_points  # noqa: E402

SEQ = 512
DEFAULT = "8da4w (min/max scales: g32, 4-bit embedding and head)"  # the levers start from plain 8da4w (HQQ is
PROGRAM_DEFAULT = "8da4w min/max (.pte)"  # the default since bench_pte_hqq measured it)


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

        from edgechat.core.native_io import quiet_stderr

        with torch.inference_mode(), quiet_stderr():
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
    ap.add_argument("--chunks", type=int, default=6, help="WikiText-2 chunks of 512 tokens for the eager variants")
    ap.add_argument("--dialogues", type=int, default=6, help="DailyDialog test dialogues for the eager variants")
    ap.add_argument("--program-chunks", type=int, default=40, help="WikiText-2 chunks for the programs and GGUFs")
    ap.add_argument("--program-dialogues", type=int, default=30, help="DailyDialog dialogues for programs and GGUFs")
    ap.add_argument("--qat-steps", type=int, default=0)
    ap.add_argument("--budget-mib", type=float, action="append",
                    help="a plan's size (repeatable; default: llama.cpp Q4_0's and Q4_K_M's files, 87.48 and 100.57)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--source", help="another model for a smoke run (printed, results files untouched; default: "
                    "the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--gguf-dir", type=Path, default=CACHE / "qpb-edgechat-074d06f60c07",
                    help="bench_quality_per_byte's edgechat output (its mixed-precision GGUFs)")
    ap.add_argument("--llama-dir", type=Path, default=CACHE / "qpb-llama.cpp", help="llama.cpp's own q4_0/q4_k_m.gguf")
    ap.add_argument("--out", type=Path, help="where the programs go (default benchmarks/.cache/qpb-pte-files-HASH)")
    ap.add_argument("--skip-export", action="store_true", help="eager scores only")
    ap.add_argument("--ref-dir", type=Path, help="reuse this directory of cached reference logits (kept at the end)")
    ap.add_argument("--report-only", action="store_true", help="write the results from --log's variants only")
    ap.add_argument("--combo-only", action="store_true", help="plan only with the levers that helped alone")
    ap.add_argument("--log", type=Path, help="the per-variant results file to resume from")
    ap.add_argument("--chart-only", action="store_true", help="redraw bench_quality_per_byte.png from the committed "
                    "results, with the points later benchmarks measured (bench_sensitivity_calib*, bench_pte_qat_program, "
                    "bench_pte_tied_program*)")
    args = ap.parse_args()
    args.budget_mib = args.budget_mib or [87.48, 100.57]
    bench = Bench("bench_quality_per_byte_pte")
    log = args.log or CACHE / f"qpb-pte-{library_hash()}.json"
    if args.chart_only:  # the chart from the committed results, nothing run
        rows = json.loads((RESULTS / "bench_quality_per_byte_pte.json").read_text())["rows"]
        return print(f"wrote {draw(rows, later_points())}")
    if args.report_only:  # the results files from what the log holds, nothing more run
        done = json.loads(log.read_text())
        return report(args, bench, done, done.get("_speeds", {}))
    import torch

    from converters import pte_mixed as pm
    from converters.gguf_export import budget_name, slug
    from converters.pte_budget import check_budgets, plan_budgets
    from converters.pte_export import export_pte_file, module_plan
    from converters.pte_levers import calibration_for, prepare_module
    from converters.pte_options import budget_options, resolve_options
    from edgechat.app.evaluate import evaluate
    from edgechat.core.sources import load_model
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from runtimes.pte_engine import PteEngine
    from runtimes.torch_engine import TorchEngine

    torch.set_num_threads(THREADS)
    model = load_model(args.source)
    ref_dir = args.ref_dir or Path(tempfile.mkdtemp(prefix="edgechat-qpb-pte-"))
    ref_dir.mkdir(parents=True, exist_ok=True)
    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), ref_dir)
    eager_data, program_data = eval_datasets(args.dialogues), eval_datasets(args.program_dialogues)
    done = json.loads(log.read_text()) if log.exists() else {}

    def score(name, engine, extra=None, program=False):
        if name in done:
            return done[name]
        t = time.perf_counter()
        chunks, datasets = (args.program_chunks, program_data) if program else (args.chunks, eager_data)
        q = {d: evaluate(engine, ref, data, n_ctx=N_CTX, max_chunks=chunks).as_dict() for d, data in datasets.items()}
        done[name] = {**q, "eval_s": round(time.perf_counter() - t, 1), **(extra or {})}
        log.write_text(json.dumps(done))
        w = q["wikitext2"]
        print(f"{name:40s} wiki kld {w['mean_kld']:.4f} top1 {w['top1_agreement']:.4f} ppl {w['ppl']:.2f} | dd kld "
              f"{q['dailydialog']['mean_kld']:.4f}  load {loadavg()}", file=sys.stderr, flush=True)
        return done[name]

    base = resolve_options(model, "8da4w", {"max_seq_len": SEQ, "hqq": False})
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

    eager(DEFAULT, base)
    eager("(a) 8da8w (8-bit weights, int8 activations)", resolve_options(model, "8da8w", {"max_seq_len": SEQ}))
    eager("(a) 4-bit weights g32, fp32 activations", base,
          transform=lambda m: weight_only_4bit(pm.apply_plan(m, {"model.embed_tokens": "4w-g32"}, False), 32))
    eager("(b) 8da4w + HQQ", replace(base, hqq=True))
    eager("(d) 8da4w + AWQ", replace(base, awq=True))
    if args.qat_steps:
        eager(f"(e) 8da4w + QAT {args.qat_steps} steps", replace(base, qat_steps=args.qat_steps))

    # (c) and the combinations: one sensitivity pass per lever set gives the plan at every budget; the
    # combination of the levers that helped alone first (it is the one exported), then the plan alone
    budgets = [{"size_mib": b} for b in args.budget_mib]
    helpful = {k: True for k, name in (("hqq", "(b) 8da4w + HQQ"), ("awq", "(d) 8da4w + AWQ"))
               if done[name]["wikitext2"]["mean_kld"] < done[DEFAULT]["wikitext2"]["mean_kld"]}
    combos = ([(" + " + " + ".join(k.upper() for k in helpful), helpful)] if helpful else []) + [("", {})]
    if args.combo_only and helpful:
        combos = combos[:1]
    plans = {}  # name -> (opts, plan, module, levers)
    for tag, lever in combos:
        names = [f"(c) plan {b['size_mib']:g} MiB{tag}" for b in budgets]
        opts = budget_options(model, {"max_seq_len": SEQ, **lever})
        allowed, fixed = check_budgets(model, opts, budgets)
        t = time.perf_counter()
        module, levers = prepare_module(model, opts, calib)
        if all("plan" in done.get(n, {}) for n in names):  # a resumed run: the plans the log already holds
            for name in names:
                plans[name] = (opts, done[name]["plan"], module, levers)
            continue
        results = plan_budgets(model, module, opts, budgets, allowed, fixed, calib, lambda *a, **k: None)
        sens_s = round(time.perf_counter() - t, 1)
        for name, (_b, plan, record) in zip(names, results):
            plans[name] = (opts, plan, module, levers)
            done.pop(name, None)  # scored again: this plan may differ from a logged one
            eager(name, opts, plan=plan, module=module, levers=levers)
            done[name].update(plan_bytes=record["predicted_file_bytes"], sensitivity_s=sens_s,
                              predicted_kld=record.get("predicted_kld"), plan=plan,
                              plan_counts={c: list(plan.values()).count(c) for c in sorted(set(plan.values()))})
            log.write_text(json.dumps(done))

    # GGUFs at each size, and the programs: the default and each budget's best plan, exported with forward_all
    # (logits at every position) so ExecuTorch's runtime scores them at prefill speed, then timed for decode
    ggufs = {"llama.cpp Q4_0": args.llama_dir / "q4_0.gguf", "llama.cpp Q4_K_M": args.llama_dir / "q4_k_m.gguf",
             **{f"edgechat {budget_name(b)} (GGUF)": args.gguf_dir / f"{slug(model.name)}-{budget_name(b)}.gguf"
                for b in budgets}}
    for name, path in ggufs.items():
        eng = LlamaCppEngine(path, n_ctx=N_CTX, threads=THREADS, logits_all=True)
        try:
            score(name, eng, {"bytes": path.stat().st_size}, program=True)
        finally:
            eng.close()
    best = {b["size_mib"]: min((n for n in plans if n.startswith(f"(c) plan {b['size_mib']:g} MiB")),
                               key=lambda n: done[n]["wikitext2"]["mean_kld"]) for b in budgets}
    files = {}
    if not args.skip_export:
        out = args.out or CACHE / f"qpb-pte-files-{library_hash()}"
        out.mkdir(parents=True, exist_ok=True)
        model.tokenizer.save(out)  # the engine reads the tokenizer and template beside the program
        if model.chat_template:
            (out / "chat_template.jinja").write_text(model.chat_template)
        programs = {**{f"{n} (.pte)": (*plans[n], n) for n in best.values()},  # the plans first: the default's
                    PROGRAM_DEFAULT: (base, None, None, None, DEFAULT)}  # program was scored by bench_pte_quality
        for name, (opts, plan, module, levers, eager_name) in programs.items():
            path = out / f"{'8da4w' if plan is None else slug(eager_name.replace('(c) ', ''))}.pte"
            if not path.exists():
                t = time.perf_counter()
                art = export_pte_file(model, path, replace(opts, quant="mixed", plan=plan, eval_method=True) if plan
                                      else replace(opts, eval_method=True),
                                      module=copy.deepcopy(module) if module is not None else None, levers=levers)
                path.with_suffix(".json").write_text(json.dumps({**art, "wall_s": round(time.perf_counter() - t, 1)}))
            files[name] = path
            eng = PteEngine(path, n_ctx=SEQ, threads=THREADS, logits_all=True)
            try:
                score(name, eng, {"bytes": path.stat().st_size, "eager_row": eager_name, "program": pte_types(path),
                                  "export": json.loads(path.with_suffix(".json").read_text())}, program=True)
            finally:
                eng.close()
    if files:
        done["_speeds"] = decode_speeds({**files, **ggufs}, args.rounds, args.tokens)
        done["_speeds_load"] = loadavg()
        log.write_text(json.dumps(done))
    if not args.ref_dir:
        ref.close()
    report(args, bench, done, done.get("_speeds", {}))


def pte_types(path: Path) -> dict:
    """The weight types the written program holds (read back from its XNNPACK delegates)."""
    from converters.pte_program import program_layout, type_counts

    return type_counts(program_layout(path))


if __name__ == "__main__":
    main()
