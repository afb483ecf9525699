"""Quality per byte on SmolLM2-135M-Instruct: llama.cpp's own Q4_0 and Q4_K_M (its convert_hf_to_gguf.py, then
its quantizer with llama-quantize's defaults: no importance matrix) against edgechat's default Q4_K_M (importance
matrix on chat-formatted calibration text) and edgechat's mixed-precision plans (--bpw 4.6: 4.5 is below the
smallest file, F32 norms and all; 5.0, the llama.cpp
Q4_K_M file's bits, and --size-mib at each llama.cpp file's size), side by side: file size, effective bits per
weight, mean KLD / top-1 / PPL vs the fp32 reference (torch engine) on WikiText-2 and on chat-formatted
DailyDialog, and decode tokens/s (rounds interleaved, medians). Writes the JSON, markdown and a PNG chart.

    .venv/bin/python benchmarks/bench_quality_per_byte.py [--chunks 40] [--dialogues 30] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert_time import llama_cpp_script  # noqa: E402
from bench_quality import N_CTX, CachedReference, eval_datasets  # noqa: E402
from common import CACHE, EDGECHAT, PYTHON, RESULTS, Bench, library_hash, loadavg, md_table, median, rotate  # noqa: E402
from quality_chart import chart  # noqa: E402

THREADS = 1  # on this shared 2-core machine a second torch/ggml thread waits on a busy core (measured 15x slower)
PROMPT = "Tell me a long story about a robot who learns to paint."


def llama_cpp_files(out: Path) -> dict[str, Path]:
    """llama.cpp's own pipeline: convert_hf_to_gguf.py (F32), then its quantizer's defaults."""
    from converters.gguf_quantize import quantize_gguf

    files = {"llama.cpp Q4_0": out / "q4_0.gguf", "llama.cpp Q4_K_M": out / "q4_k_m.gguf"}
    if all(f.exists() for f in files.values()):
        return files
    out.mkdir(parents=True, exist_ok=True)
    hf = out / "hf"  # the embedded model as an HF checkpoint (bench_convert_time's cache lock now clashes with
    if not (hf / "config.json").exists():  # convert's own OUTDIR lock, which has the same file name)
        shutil.rmtree(hf, ignore_errors=True)
        subprocess.run([EDGECHAT, "convert", "-o", str(hf), "--format", "hf", "--no-eval"], check=True,
                       capture_output=True)
    f32 = out / "f32.gguf"
    subprocess.run([PYTHON, str(llama_cpp_script()), str(hf), "--outfile", str(f32), "--outtype", "f32"],
                   check=True, capture_output=True)
    for (_name, path), quant in zip(files.items(), ("q4_0", "q4_k_m")):
        quantize_gguf(f32, path, quant, threads=2)
    f32.unlink()
    return files


def edgechat_files(out: Path, budgets: list[dict]) -> tuple[dict[str, Path], dict]:
    """One `convert`: default Q4_K_M (importance matrix on) and every budget's plan from one sensitivity pass."""
    from edgechat.app.pipeline import ConvertOptions, convert
    from edgechat.reports.progress import Steps

    if not (out / "edgechat.json").exists():
        if out.exists():
            shutil.rmtree(out)
        convert(None, out, ConvertOptions(quants=["q4_k_m"], budgets=budgets, evaluate=False, threads=THREADS),
                Steps(enabled=True))
    manifest = json.loads((out / "edgechat.json").read_text())
    files = {}
    for a in manifest["artifacts"]:
        label = "edgechat Q4_K_M (imatrix)" if a["quant"] == "q4_k_m" else f"edgechat {a['quant']}"
        files[label] = out / a["file"]
    return files, manifest


def decode_speeds(files: dict[str, Path], rounds: int, tokens: int, threads: int = THREADS) -> dict[str, list[float]]:
    """Decode tokens/s of the same prompt, artifacts (GGUF or .pte) in rotating order each round."""
    import edgechat

    speeds = {k: [] for k in files}
    for r in range(rounds):
        for name in rotate(list(files), r):
            chat = edgechat.load(files[name], threads=threads, max_tokens=tokens, n_ctx=512)
            try:
                chat.complete("Once upon a time", max_tokens=4)  # warm-up
                chat.reset()
                speeds[name].append(chat.send(PROMPT, max_tokens=tokens).stats.decode_tok_s)
            finally:
                chat.engine.close()
    return speeds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=40, help="WikiText-2 chunks of 512 tokens")
    ap.add_argument("--dialogues", type=int, default=30, help="DailyDialog test dialogues")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved decode rounds")
    ap.add_argument("--tokens", type=int, default=64, help="tokens decoded per round")
    ap.add_argument("--convert-dir", type=Path, help="reuse this edgechat output directory (made by an earlier run)")
    ap.add_argument("--skip", action="append", default=[], help="leave out this artifact label (repeatable)")
    args = ap.parse_args()
    bench = Bench("bench_quality_per_byte")
    from edgechat.app.evaluate import evaluate
    from edgechat.core.gguf_sizes import size_report
    from runtimes.llama_cpp_engine import LlamaCppEngine

    t = time.perf_counter()
    theirs = llama_cpp_files(CACHE / "qpb-llama.cpp")
    q4km, q40 = size_report(theirs["llama.cpp Q4_K_M"]), size_report(theirs["llama.cpp Q4_0"])
    budgets = [{"bpw": 4.6}, {"bpw": 5.0}, {"bpw": q4km["bpw"]},
               {"size_mib": round(q40["file_bytes"] / 2**20, 2)}, {"size_mib": round(q4km["file_bytes"] / 2**20, 2)}]
    ours, manifest = edgechat_files(args.convert_dir or CACHE / f"qpb-edgechat-{library_hash()}", budgets)
    convert_s = time.perf_counter() - t
    files = {k: v for k, v in {**theirs, **ours}.items() if k not in args.skip}
    datasets = eval_datasets(args.dialogues)
    import tempfile

    from edgechat.core.sources import load_model
    from runtimes.torch_engine import TorchEngine

    model = load_model(None)  # the fp32 reference, its logits cached once for every artifact, on THREADS too
    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), Path(tempfile.mkdtemp(prefix="edgechat-bench-qpb-")))
    quality = {}
    try:
        for dname, data in datasets.items():
            for name, path in files.items():
                engine = LlamaCppEngine(path, n_ctx=N_CTX, threads=THREADS, logits_all=True)
                try:
                    quality.setdefault(name, {})[dname] = evaluate(engine, ref, data, n_ctx=N_CTX,
                                                                   max_chunks=args.chunks).as_dict()
                finally:
                    engine.close()
                q = quality[name][dname]
                print(f"{dname:12s} {name:34s} kld {q['mean_kld']:.5f} top1 {q['top1_agreement']:.4f} "
                      f"ppl {q['ppl']:.3f}", file=sys.stderr)
    finally:
        ref.close()
    speeds = decode_speeds(files, args.rounds, args.tokens)
    rows = []
    for name, path in files.items():
        rep = size_report(path)
        w, d = quality[name]["wikitext2"], quality[name]["dailydialog"]
        rows.append({"name": name, "file": path.name, "bytes": rep["file_bytes"], "mib": rep["file_bytes"] / 2**20,
                     "bpw": rep["bpw"], "types": {k: v["share"] for k, v in rep["types"].items()},
                     "wiki_kld": w["mean_kld"], "wiki_top1": w["top1_agreement"], "wiki_ppl": w["ppl"],
                     "dd_kld": d["mean_kld"], "dd_top1": d["top1_agreement"], "dd_ppl": d["ppl"],
                     "decode_tok_s": median(speeds[name]), "decode_runs": speeds[name]})
    by = {r["name"]: r for r in rows}
    ll_km, ll_40 = by["llama.cpp Q4_K_M"], by["llama.cpp Q4_0"]
    at_km = by[f"edgechat mixed-{budgets[4]['size_mib']:g}mib"]
    at_40 = by[f"edgechat mixed-{budgets[3]['size_mib']:g}mib"]
    goals = {
        f"at llama.cpp Q4_K_M's size, mean KLD <= half of its {ll_km['wiki_kld']:.4f} (WikiText-2)":
            {"value": at_km["wiki_kld"], "limit": ll_km["wiki_kld"] / 2, "met": at_km["wiki_kld"] <= ll_km["wiki_kld"] / 2},
        "... and <= 0.029 (the issue's figure)": {"value": at_km["wiki_kld"], "limit": 0.029, "met": at_km["wiki_kld"] <= 0.029},
        f"at llama.cpp Q4_0's size, mean KLD <= half of its {ll_40['wiki_kld']:.4f} (WikiText-2)":
            {"value": at_40["wiki_kld"], "limit": ll_40["wiki_kld"] / 2, "met": at_40["wiki_kld"] <= ll_40["wiki_kld"] / 2},
        "... and <= 0.15 (the issue's figure)": {"value": at_40["wiki_kld"], "limit": 0.15, "met": at_40["wiki_kld"] <= 0.15},
    }
    png = RESULTS / "bench_quality_per_byte.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(rows, png)
    plans = {a["quant"]: {"budget": a["budget"], "predicted_kld": a["plan"]["predicted_kld"],
                          "method": a["plan"]["method"], "calibration": a["plan"]["calibration"]}
             for a in manifest["artifacts"] if "plan" in a}
    doc = {"threads": THREADS, "n_ctx": N_CTX, "chunks": args.chunks, "dialogues": args.dialogues,
           "rounds": args.rounds, "tokens": args.tokens, "budgets": budgets, "rows": rows, "goals": goals,
           "plans": plans, "convert_s": round(convert_s, 1), "edgechat_timings_s": manifest.get("timings_s"),
           "chart": png.name, "loadavg_after_eval": loadavg()}
    w0 = quality[ll_km["name"]]["wikitext2"]
    md = (f"SmolLM2-135M-Instruct, every file run by llama.cpp ({THREADS} thread, F16 KV cache) against the fp32 "
          f"reference (torch). WikiText-2: {w0['sequences']} chunks x {N_CTX} tokens; DailyDialog: assistant turns of "
          f"{quality[ll_km['name']]['dailydialog']['sequences']} test dialogues. Decode: median of {args.rounds} "
          f"interleaved rounds of {args.tokens} tokens. bpw = tensor data bits / weights.\n\n"
          + md_table(["artifact", "MiB", "bpw", "WikiText-2 KLD", "top-1", "PPL", "DailyDialog KLD", "top-1", "PPL",
                      "decode tok/s"],
                     [[r["name"], r["mib"], r["bpw"], r["wiki_kld"], r["wiki_top1"], r["wiki_ppl"], r["dd_kld"],
                       r["dd_top1"], r["dd_ppl"], r["decode_tok_s"]] for r in rows])
          + "\n\n" + md_table(["goal", "value", "limit", "met"],
                              [[k, v["value"], v["limit"], "yes" if v["met"] else "NO"] for k, v in goals.items()])
          + f"\n\nPlans (one sensitivity pass: {next(iter(plans.values()))['method'] if plans else '-'}, "
            f"calibration {next(iter(plans.values()))['calibration'] if plans else '-'}); edgechat convert steps (s): "
            f"{manifest.get('timings_s')}\n\n![chart]({png.name})\n")
    bench.write(doc, md)


if __name__ == "__main__":
    main()
