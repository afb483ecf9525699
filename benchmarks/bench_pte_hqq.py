"""HQQ as the 8da4w default (issue 12, point 3): SmolLM2-135M-Instruct's default 8da4w .pte (group 32, 4-bit
embedding and head), now made with HQQ scale-only parameters (ExecuTorch's own default), against the same
program with plain min/max scales (`--no-hqq`, the default before) and llama.cpp's own Q4_0 of about the same
size. Each is scored against the fp32 reference (torch) by its own runtime, ExecuTorch through the program's
forward_all method, on WikiText-2 (--chunks x 512) and DailyDialog's assistant turns (--dialogues), and timed
for decode in interleaved rounds (medians). The programs are cached in benchmarks/.cache/pte-hqq/.

--qat-steps N adds the default 8da4w after N steps of quantization-aware training (`convert --qat-steps N`:
converters.pte_qat, distilled from fp32, then exported with the grid it trained under), scored the same way;
its training and export time are recorded.

    .venv/bin/python benchmarks/bench_pte_hqq.py [--chunks 40] [--dialogues 30] [--rounds 5] [--threads 2]
                                               [--qat-steps 100] [--name NAME]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import N_CTX, CachedReference, eval_datasets  # noqa: E402
from bench_quality_per_byte import decode_speeds, llama_cpp_files  # noqa: E402
from bench_quality_per_byte_pte import SEQ  # noqa: E402
from common import CACHE, Bench, md_table, median  # noqa: E402

KLD_GOAL = 1.5  # the issue's: a .pte's mean KLD at most 1.5x the GGUF's of the same size


def export(model, path: Path, hqq: bool, qat_steps: int = 0) -> dict:
    from converters.pte_export import export_pte_file
    from converters.pte_options import resolve_options

    extra = {"max_seq_len": SEQ, **({} if hqq else {"hqq": False}), **({"qat_steps": qat_steps} if qat_steps else {})}
    opts = resolve_options(model, "8da4w", extra)
    assert opts.hqq == (hqq and not qat_steps), "the 8da4w default should be HQQ, and QAT's the grid it trained"
    if not path.exists():
        t = time.perf_counter()
        art = export_pte_file(model, path, replace(opts, eval_method=True))
        path.with_suffix(".json").write_text(json.dumps({**art, "wall_s": round(time.perf_counter() - t, 1)}))
    return json.loads(path.with_suffix(".json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--dialogues", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    ap.add_argument("--llama-dir", type=Path, default=CACHE / "qpb-llama.cpp", help="llama.cpp's own q4_0.gguf "
                    "(made by bench_quality_per_byte's llama_cpp_files when absent)")
    ap.add_argument("--qat-steps", type=int, default=0, help="also the default 8da4w after this many QAT steps")
    ap.add_argument("--name", default="bench_pte_hqq", help="results file stem")
    args = ap.parse_args()
    if args.qat_steps < 0:
        ap.error("--qat-steps must be >= 0")
    THREADS = args.threads  # noqa: N806

    import torch

    from edgechat.app.evaluate import evaluate
    from edgechat.core.sources import load_model
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from runtimes.pte_engine import PteEngine
    from runtimes.torch_engine import TorchEngine

    torch.set_num_threads(THREADS)
    bench = Bench(args.name)
    model = load_model(None)
    home = CACHE / "pte-hqq"
    home.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save(home)  # the engine reads the tokenizer and template beside the program
    (home / "chat_template.jinja").write_text(model.chat_template)
    files = {"8da4w min/max (--no-hqq, the old default)": home / "8da4w-minmax.pte",
             "8da4w HQQ (the default)": home / "8da4w-hqq.pte"}
    if args.qat_steps:
        files[f"8da4w + QAT {args.qat_steps} steps"] = home / f"8da4w-qat{args.qat_steps}.pte"
    exports = {k: export(model, p, hqq="HQQ" in k, qat_steps=args.qat_steps if "QAT" in k else 0)
               for k, p in files.items()}
    files["llama.cpp Q4_0"] = llama_cpp_files(args.llama_dir)["llama.cpp Q4_0"]  # made once, then reused

    ref = CachedReference(TorchEngine(model, n_ctx=N_CTX, threads=THREADS), Path(tempfile.mkdtemp(prefix="ec-hqq-")))
    data = eval_datasets(args.dialogues)
    quality = {}
    for name, path in files.items():
        eng = (PteEngine(path, n_ctx=SEQ, threads=THREADS, logits_all=True) if path.suffix == ".pte"
               else LlamaCppEngine(path, n_ctx=N_CTX, threads=THREADS, logits_all=True))
        try:
            quality[name] = {d: evaluate(eng, ref, x, n_ctx=N_CTX, max_chunks=args.chunks).as_dict()
                             for d, x in data.items()}
        finally:
            eng.close()
        print(f"{name}: {quality[name]['wikitext2']['mean_kld']:.4f}", file=sys.stderr, flush=True)
    speeds = decode_speeds(files, args.rounds, args.tokens, THREADS)

    rows = []
    for name, path in files.items():
        w, d = quality[name]["wikitext2"], quality[name]["dailydialog"]
        rows.append([name, round(path.stat().st_size / 2**20, 2), w["mean_kld"], w["top1_agreement"], w["ppl"],
                     d["mean_kld"], d["top1_agreement"], d["ppl"], median(speeds[name]),
                     exports.get(name, {}).get("wall_s", "-")])
    q4 = quality["llama.cpp Q4_0"]["wikitext2"]["mean_kld"]
    goals = [[name, quality[name]["wikitext2"]["mean_kld"], round(KLD_GOAL * q4, 4),
              "yes" if quality[name]["wikitext2"]["mean_kld"] <= KLD_GOAL * q4 else "no",
              round(median(speeds[name]) / median(speeds["llama.cpp Q4_0"]), 3)] for name in exports]
    md = (f"SmolLM2-135M-Instruct against the fp32 reference (torch), {THREADS} threads: WikiText-2 {args.chunks} x "
          f"512 tokens and the assistant turns of {args.dialogues} DailyDialog test dialogues, each file scored by "
          f"its own runtime (the programs through forward_all). Decode: median of {args.rounds} interleaved rounds of "
          f"{args.tokens} tokens. Export wall s: the program written with forward_all (once; cached).\n\n"
          + md_table(["artifact", "MiB", "WikiText-2 KLD", "top-1", "PPL", "DailyDialog KLD", "top-1", "PPL",
                      "decode tok/s", "export s"], rows)
          + "\n\n" + md_table(["program", "WikiText-2 KLD", f"limit ({KLD_GOAL}x Q4_0's)", "met",
                               "decode / Q4_0's"], goals) + "\n")
    bench.write({"quality": quality, "decode": speeds, "exports": exports,
                 "files": {k: {"name": p.name, "bytes": p.stat().st_size} for k, p in files.items()}}, md)


if __name__ == "__main__":
    main()
