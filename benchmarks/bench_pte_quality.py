"""Quality of SmolLM2-135M-Instruct as 8da4w and 8da8w .pte programs against the fp32 reference (the embedded
Q4_1 GGUF dequantized, run by the torch engine): perplexity, mean KL divergence and top-1 agreement through
edgechat.app.evaluate.evaluate, on the same text and settings as benchmarks/bench_quality.py's GGUF table
(WikiText-2 test, 40 chunks of 512 tokens scored like llama.cpp's perplexity tool; DailyDialog test, the
assistant turns of 30 dialogues through the chat template).

The programs are the ones the other bench_pte_* benchmarks run (max_seq_len 1024, no extra method), so the
engine scores every position with one `forward` decode step per token, the path a chat takes. With
--eval-method they are exported with the extra `forward_all` method instead (logits at every position, at
prefill speed, for a second lowering at export).

    .venv/bin/python benchmarks/bench_pte_quality.py [--chunks 40] [--dialogues 30] [--eval-method]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pte_common import cached_pte, export_info  # noqa: E402
from bench_quality import default_reference, eval_datasets  # noqa: E402  (reference logits computed once per sequence)
from common import THREADS, Bench, md_table  # noqa: E402

N_CTX = 512
# name: (quant, extra export options, row label)
VARIANTS = {"8da8w": ("8da8w", {}, "8da8w .pte"), "8da4w": ("8da4w", {}, "8da4w .pte"),
            "8da4w-head8w": ("8da4w", {"head_quant": "8w"}, "8da4w .pte, 8-bit head")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=40, help="WikiText-2 chunks of 512 tokens")
    ap.add_argument("--dialogues", type=int, default=30, help="DailyDialog test dialogues")
    ap.add_argument("--eval-method", action="store_true", help="export with forward_all and score with it")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    bench = Bench("bench_pte_quality")

    from edgechat.app.evaluate import evaluate
    from runtimes.pte_engine import PteEngine

    t = time.perf_counter()
    extra = {"eval_method": True} if args.eval_method else {}
    paths = {v: cached_pte(q, fresh=args.fresh, **extra, **more) for v, (q, more, _) in VARIANTS.items()}
    export_s = time.perf_counter() - t
    datasets = eval_datasets(args.dialogues)
    model, ref = default_reference("edgechat-bench-pte-reflogits-")
    results, times = {}, {}
    try:
        for dname, data in datasets.items():
            for quant, path in paths.items():
                t = time.perf_counter()
                engine = PteEngine(path, n_ctx=N_CTX, threads=THREADS)
                q = evaluate(engine, ref, data, n_ctx=N_CTX, max_chunks=args.chunks).as_dict()
                engine.close()
                times[f"{dname}/{quant}"] = round(time.perf_counter() - t, 1)
                results.setdefault(quant, {})[dname] = q
                print(f"{dname:12s} {quant:6s} ppl {q['ppl']:.3f} (ref {q['ref_ppl']:.3f}) kld {q['mean_kld']:.5f} "
                      f"top1 {q['top1_agreement']:.4f}  [{times[f'{dname}/{quant}']}s]", file=sys.stderr)
    finally:
        ref.close()

    rows = []
    for quant, path in paths.items():
        w, d = results[quant]["wikitext2"], results[quant]["dailydialog"]
        info = export_info(path)
        rows.append([VARIANTS[quant][2], f"group {info['group_size'] or 'per-channel'}, embedding "
                     f"{info['embedding_quant']}, head {info['head_quant'] or '-'}",
                     path.stat().st_size / 2**20, w["ppl"], w["mean_kld"], w["top1_agreement"],
                     d["ppl"], d["mean_kld"], d["top1_agreement"]])
    w0, d0 = results["8da4w"]["wikitext2"], results["8da4w"]["dailydialog"]
    rows.append(["fp32 reference (torch)", "-", 4 * model.config.param_count() / 2**20, w0["ref_ppl"], 0.0, 1.0,
                 d0["ref_ppl"], 0.0, 1.0])
    how = "`forward_all`" if args.eval_method else "one `forward` decode step per position"
    md = (f"SmolLM2-135M-Instruct .pte programs vs the fp32 reference (torch engine), ExecuTorch engine "
          f"({how}), {THREADS} threads. WikiText-2: {w0['sequences']} chunks x {N_CTX} tokens, "
          f"{w0['tokens_scored']} tokens scored (second half of each chunk). DailyDialog: assistant turns of "
          f"{d0['sequences']} test dialogues, {d0['tokens_scored']} tokens scored. The GGUF rows for the same "
          f"text are in bench_quality.md.\n\n"
          + md_table(["artifact", "options", "MiB", "WikiText-2 PPL", "WikiText-2 mean KLD", "WikiText-2 top-1",
                      "DailyDialog PPL", "DailyDialog mean KLD", "DailyDialog top-1"], rows) + "\n")
    bench.write({"n_ctx": N_CTX, "chunks": args.chunks, "dialogues": args.dialogues, "threads": THREADS,
                 "reference": "torch fp32 engine on the embedded SmolLM2-135M-Instruct (Q4_1 GGUF dequantized)",
                 "artifacts": {q: export_info(p) for q, p in paths.items()}, "quality": results,
                 "scoring": how, "export_s": round(export_s, 1), "eval_s": times}, md)
    print(md)


if __name__ == "__main__":
    main()
