"""Memory estimate (targets/memory.py, the fit check before loading) vs the measured peak RSS, for SmolLM2-135M
Q8_0 and Q4_K_M (llama.cpp) and 8da4w (ExecuTorch) at n_ctx 512, 2048 and 8192. Each case runs in a fresh
process: VmRSS before the engine opens (the interpreter and libraries: not the engine's), then the context
filled to n_ctx - 32 tokens in the engine's batches and 16 tokens decoded, then VmHWM again (VmRSS before: VmHWM would hold the imports' transient peaks). The engine's
measured memory is the difference. Goal: the estimate within 15% of it.

    .venv/bin/python benchmarks/bench_serve_memory.py [--gguf-dir DIR] [--pte-dir N=DIR ...] [--quants q8_0,q4_k_m] [--keep]

8da4w programs have their context fixed at export: pass `--pte-dir 512=OUT` for each (made with
`edgechat convert --format pte --quant 8da4w --max-seq-len 512 -o OUT --no-eval`)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import PYTHON, RESULTS, Bench, artifact, cached_convert, md_table

CTXS = (512, 2048, 8192)
TEXT = "Once upon a time, a small robot lived by the sea and asked every passing ship about the weather. "


def status_mib(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key}")


def worker(path: str, n_ctx: int) -> dict:
    import runtimes
    from edgechat.app.api import open_engine
    from edgechat.app.fit import fit_for

    name = runtimes.engine_for_path(Path(path))
    runtimes.engine_class(name)  # import the engine's libraries before the baseline: they are not the model's
    if name == "executorch":
        from runtimes.pte_engine import runtime
        runtime()
    fit = fit_for(path, name, n_ctx)
    base = status_mib("VmRSS")  # resident now (VmHWM holds the imports' transient peaks)
    e = open_engine(path, n_ctx=n_ctx, threads=2)
    ids = e.tokenize(TEXT * (e.n_ctx // 8), add_bos=e.add_bos)[: e.n_ctx - 32]
    logits = e.forward(ids, 0)
    for i in range(16):
        logits = e.forward([int(logits.argmax())], len(ids) + i)
    peak = status_mib("VmHWM")
    return {"engine": name, "n_ctx": e.n_ctx, "filled": len(ids) + 16, "baseline_mib": base, "peak_mib": peak,
            "measured_mib": peak - base, "estimate": {k: v if k in ("engine", "n_ctx") else v / 2**20
                                                     for k, v in fit.estimate.to_dict().items()}}


def row(r: dict) -> list:
    e = r["estimate"]
    return [r["quant"], r["engine"], r["n_ctx"], f"{e['weights']:.1f}", f"{e['kv_cache']:.1f}", f"{e['compute']:.1f}",
            f"{e['runtime']:.1f}", f"{e['total']:.1f}", f"{r['measured_mib']:.1f}", f"{r['ratio']:.3f}",
            f"{r['baseline_mib']:.0f}", f"{r['peak_mib']:.0f}", r.get("run", "")]


def write(bench: Bench, results: list[dict]) -> None:
    """After every case, so a run cut short keeps what it measured."""
    order = {"q8_0": 0, "q4_k_m": 1, "8da4w": 2}
    results = sorted(results, key=lambda r: (order.get(r["quant"], 9), r["n_ctx"]))
    worst = max(abs(r["ratio"] - 1) for r in results)
    md = ("Estimate (MiB) of the engine's resident memory vs the peak RSS it added (VmHWM after filling the context "
          "minus VmRSS before opening the engine, libraries already imported), one fresh process per case. RSS "
          "does not depend on the machine's load; `run` is when the case was measured (--keep carries cases of an "
          "earlier run over).\n\n"
          + md_table(["quant", "engine", "n_ctx", "weights", "KV", "compute", "runtime", "estimate", "measured",
                      "est./meas.", "baseline RSS", "peak RSS", "run"], [row(r) for r in results])
          + f"\n\nWorst error: {100 * worst:.1f}% over {len(results)} cases (goal: within 15%).\n"
          "The compute and runtime terms were calibrated on llama.cpp Q4_K_M runs on this host; Q8_0 and 8da4w "
          "are checks of the same formula.\n")
    bench.write({"cases": results, "worst_error": worst}, md)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pte-dir", action="append", default=[], help="N=DIR: an 8da4w output with max_seq_len N")
    ap.add_argument("--gguf-dir", help="an edgechat output directory with q8_0 and q4_k_m GGUFs of the embedded "
                    "SmolLM2 (default: converted into benchmarks/.cache)")
    ap.add_argument("--quants", default="q8_0,q4_k_m", help="GGUF quants to measure (comma-separated; '' for none)")
    ap.add_argument("--keep", action="store_true", help="keep the cases of the results file this run does not measure")
    ap.add_argument("--worker", nargs=2)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    bench = Bench("bench_serve_memory")
    quants = [q for q in args.quants.split(",") if q]
    out = (Path(args.gguf_dir) if args.gguf_dir else cached_convert(["q8_0", "q4_k_m"])) if quants else None
    cases = [(q, str(artifact(out, q)), n) for q in quants for n in CTXS]
    for spec in args.pte_dir:
        n, _, d = spec.partition("=")
        pte = next(Path(d).glob("*.pte"))
        cases.append(("8da4w", str(pte), int(n)))
    results = []
    if args.keep and (RESULTS / "bench_serve_memory.json").exists():
        measuring = {(q, n) for q, _, n in cases}
        old = json.loads((RESULTS / "bench_serve_memory.json").read_text())
        results = [{**r, "run": r.get("run") or old["started"]} for r in old["cases"]
                   if (r["quant"], r["n_ctx"]) not in measuring]
    for quant, path, n in cases:
        proc = subprocess.run([PYTHON, __file__, "--worker", path, str(n)], capture_output=True, text=True, check=True)
        r = {"quant": quant, "path": path, **json.loads(proc.stdout.strip().splitlines()[-1]), "run": bench.started}
        r["ratio"] = r["estimate"]["total"] / r["measured_mib"]
        results.append(r)
        print(row(r), file=sys.stderr)
        write(bench, results)


if __name__ == "__main__":
    main()
