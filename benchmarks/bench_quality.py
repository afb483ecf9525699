"""Quality of SmolLM2-135M GGUF quants against the fp32 reference (the embedded Q4_1 GGUF dequantized, run by
the torch engine): perplexity, mean KL divergence and top-1 agreement, through edgechat.app.evaluate.evaluate.

Artifacts: Q8_0, Q4_0, Q4_K_M, Q4_K_M with an importance matrix (edgechat's default calibration: chit-chat
dialogues), and, as a check of the method, the source Q4_1 GGUF itself under llama.cpp (the same weights as the
reference, so its KLD is llama.cpp-vs-torch numerics and the F16 KV cache; its perplexity should reproduce the
llama.cpp figures in ../shared/data/README.md).
Data: WikiText-2 test (40 chunks of 512 tokens, scored like llama.cpp's perplexity tool) and DailyDialog test
(assistant turns of 30 dialogues through the chat template).

The reference logits of each sequence are computed once and reused for every artifact (a disk cache under
/tmp, deleted at the end); evaluate() itself is unchanged.

    .venv/bin/python benchmarks/bench_quality.py [--chunks 40] [--dialogues 30]
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, THREADS, Bench, artifact, cached_convert, md_table  # noqa: E402

N_CTX = 512
GOALS = {"q8_0": 0.002, "q4_k_m": 0.05}  # mean KLD vs fp32
README_REF = {"wiki.test.raw": 22.58, "dialogues_test.txt": 31.1}  # SmolLM2 Q4_1 under llama.cpp (data README)


class CachedReference:
    """Wraps the reference engine: logits_all(ids) is computed once per distinct ids and kept on disk."""

    def __init__(self, engine, cache_dir: Path):
        self.engine = engine
        self.dir = cache_dir
        self.computed = self.reused = 0
        self.compute_s = 0.0

    def __getattr__(self, name):  # tokenize, chat_template, ... from the wrapped engine
        return getattr(self.engine, name)

    def logits_all(self, ids):
        f = self.dir / (hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:24] + ".npy")
        if f.exists():
            self.reused += 1
            return np.load(f)
        t = time.perf_counter()
        out = self.engine.logits_all(ids)
        self.compute_s += time.perf_counter() - t
        self.computed += 1
        np.save(f, out)
        return out

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def default_reference(prefix: str):
    """The fp32 reference both quality benchmarks score against: the embedded model on the torch engine, its
    logits cached in a fresh temporary directory (ref.close() deletes it). Returns (model, ref)."""
    from edgechat.core.sources import load_model
    from runtimes.torch_engine import TorchEngine

    model = load_model(None)
    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), Path(tempfile.mkdtemp(prefix=prefix)))
    return model, ref


def eval_datasets(dialogues: int) -> dict:
    """The two texts of the quality tables: WikiText-2 test and DailyDialog test."""
    from edgechat.core.data import read_eval_data

    return {"wikitext2": read_eval_data(DATA / "wikitext2" / "wiki.test.raw"),
            "dailydialog": read_eval_data(DATA / "dailydialog" / "dialogues_test.txt", max_dialogues=dialogues)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=40, help="WikiText-2 chunks of 512 tokens")
    ap.add_argument("--dialogues", type=int, default=30, help="DailyDialog test dialogues")
    ap.add_argument("--diag-chunks", type=int, default=5,
                    help="WikiText-2 chunks for the KV-cache/kernel diagnostic (F32 GGUF, F32 vs F16 KV); 0: skip")
    ap.add_argument("--fresh", action="store_true", help="reconvert instead of using benchmarks/.cache")
    args = ap.parse_args()
    bench = Bench("bench_quality")

    from edgechat.app.evaluate import evaluate
    from edgechat.core.sources import default_model_path
    from runtimes.llama_cpp_engine import LlamaCppEngine

    t = time.perf_counter()
    plain = cached_convert(["q8_0", "q4_0", "q4_k_m"], fresh=args.fresh)
    imat = cached_convert(["q4_k_m"], imatrix=True, fresh=args.fresh)
    f32 = artifact(cached_convert(["f32"], fresh=args.fresh), "f32") if args.diag_chunks else None
    convert_s = time.perf_counter() - t
    arts = {
        "Q8_0": artifact(plain, "q8_0"),
        "Q4_0": artifact(plain, "q4_0"),
        "Q4_K_M": artifact(plain, "q4_k_m"),
        "Q4_K_M imatrix": artifact(imat, "q4_k_m"),
        "Q4_1 source (llama.cpp)": default_model_path(),
    }
    datasets = eval_datasets(args.dialogues)
    model, ref = default_reference("edgechat-bench-reflogits-")
    results, times = {}, {}
    try:
        for dname, data in datasets.items():
            for aname, path in arts.items():
                t = time.perf_counter()
                engine = LlamaCppEngine(path, n_ctx=N_CTX, threads=THREADS, logits_all=True)
                try:
                    q = evaluate(engine, ref, data, n_ctx=N_CTX, max_chunks=args.chunks).as_dict()
                finally:
                    engine.close()
                times[f"{dname}/{aname}"] = round(time.perf_counter() - t, 1)
                results.setdefault(aname, {})[dname] = q
                print(f"{dname:12s} {aname:24s} ppl {q['ppl']:.3f} (ref {q['ref_ppl']:.3f}) kld {q['mean_kld']:.5f} "
                      f"top1 {q['top1_agreement']:.4f}  [{times[f'{dname}/{aname}']}s]", file=sys.stderr)
        # Diagnostic: how much of the KLD is llama.cpp's numerics rather than the weights? The same first chunks
        # (their reference logits are cached) through an F32 GGUF and Q8_0/Q4_1, with an F32 and an F16 KV cache.
        diag = {}
        if args.diag_chunks:
            wiki = datasets["wikitext2"]
            for aname, path in (("F32 GGUF", f32), ("Q8_0", arts["Q8_0"]), ("Q4_1 source (llama.cpp)", arts["Q4_1 source (llama.cpp)"])):
                for kv in ("f32", "f16"):
                    engine = LlamaCppEngine(path, n_ctx=N_CTX, threads=THREADS, kv_type=kv, logits_all=True)
                    try:
                        q = evaluate(engine, ref, wiki, n_ctx=N_CTX, max_chunks=args.diag_chunks).as_dict()
                    finally:
                        engine.close()
                    diag[f"{aname}, {kv.upper()} KV"] = q
                    print(f"diag {aname:24s} kv {kv}: kld {q['mean_kld']:.6f} top1 {q['top1_agreement']:.4f}", file=sys.stderr)
    finally:
        ref.close()

    goals = {}
    for quant, limit in GOALS.items():
        name = quant.upper()
        for dname in datasets:
            kld = results[name][dname]["mean_kld"]
            goals[f"{name} mean KLD <= {limit} ({dname})"] = {"value": kld, "met": kld <= limit}
    ref_ppl = {d: results["Q8_0"][d]["ref_ppl"] for d in datasets}
    files = {a: {"file": p.name, "bytes": p.stat().st_size} for a, p in arts.items()}
    doc = {
        "n_ctx": N_CTX, "chunks": args.chunks, "dialogues": args.dialogues, "threads": THREADS,
        "reference": "torch fp32 engine on the embedded SmolLM2-135M-Instruct (Q4_1 GGUF dequantized)",
        "artifacts": files, "quality": results, "goals": goals,
        "fp32_reference_ppl": ref_ppl,
        "readme_llama_cpp_q4_1_ppl": {"wikitext2": README_REF["wiki.test.raw"], "dailydialog": README_REF["dialogues_test.txt"]},
        "reference_logits": {"computed": ref.computed, "reused": ref.reused, "compute_s": round(ref.compute_s, 1)},
        "convert_s": round(convert_s, 1), "eval_s": times,
        "diagnostic_wikitext2_first_chunks": {"chunks": args.diag_chunks, "results": diag},
    }
    rows = []
    for aname in arts:
        w, d = results[aname]["wikitext2"], results[aname]["dailydialog"]
        rows.append([aname, files[aname]["bytes"] / 2**20, w["ppl"], w["mean_kld"], w["top1_agreement"],
                     d["ppl"], d["mean_kld"], d["top1_agreement"]])
    w0, d0 = results["Q8_0"]["wikitext2"], results["Q8_0"]["dailydialog"]
    rows.append(["fp32 reference (torch)", 4 * model.config.param_count() / 2**20, w0["ref_ppl"], 0.0, 1.0,
                 d0["ref_ppl"], 0.0, 1.0])
    md = (f"SmolLM2-135M-Instruct quants vs the fp32 reference (torch engine), llama.cpp engine with logits for every "
          f"position, {THREADS} threads, F16 KV cache. WikiText-2: {w0['sequences']} chunks x {N_CTX} tokens, "
          f"{w0['tokens_scored']} tokens scored (second half of each chunk). DailyDialog: assistant turns of "
          f"{d0['sequences']} test dialogues, {d0['tokens_scored']} tokens scored.\n\n"
          + md_table(["artifact", "MiB", "WikiText-2 PPL", "WikiText-2 mean KLD", "WikiText-2 top-1",
                      "DailyDialog PPL", "DailyDialog mean KLD", "DailyDialog top-1"], rows)
          + "\n\n" + md_table(["goal", "value", "met"], [[k, v["value"], "yes" if v["met"] else "NO"] for k, v in goals.items()])
          + f"\n\nfp32 reference perplexity measured here: WikiText-2 {ref_ppl['wikitext2']:.2f}, DailyDialog "
            f"{ref_ppl['dailydialog']:.2f}; the data README's llama.cpp figures for the Q4_1 source: WikiText-2 "
            f"{README_REF['wiki.test.raw']} (40x512), DailyDialog {README_REF['dialogues_test.txt']} (30 dialogues). "
            f"The 'Q4_1 source (llama.cpp)' row runs that same GGUF through edgechat's llama.cpp engine.\n")
    if diag:
        md += (f"\nDiagnostic (first {args.diag_chunks} WikiText-2 chunks, same reference): how much KLD llama.cpp's "
               f"numerics and KV cache type add, with an F32 GGUF (no weight quantization) as the floor.\n\n"
               + md_table(["artifact, KV cache", "PPL", "mean KLD", "KLD p99", "top-1"],
                          [[k, v["ppl"], v["mean_kld"], v["kld_p99"], v["top1_agreement"]] for k, v in diag.items()]) + "\n")
    bench.write(doc, md)


if __name__ == "__main__":
    main()
