"""llama.cpp's portable build (one AVX2 CPU backend linked in: the old `make`) vs edgechat's dispatched build
(every CPU variant; the best one this host runs, chosen at load), on SmolLM2-135M-Instruct Q8_0, Q4_0 and
Q4_K_M: prefill of a 512-token prompt and decode tokens/s, with the dispatched build forced to its haswell
(AVX2) variant beside them (the same instructions as the portable build: what dispatching itself costs), and
the torch fp32 engine and the 8da4w .pte as the other engines. Every measurement runs in a fresh process, the
sides interleaved round by round in rotated order. Goal on an AVX-512/AMX host: prefill >= 1.5x the portable
build, decode not slower, llama.cpp's prefill faster than the torch fp32 engine's.

    .venv/bin/python benchmarks/bench_cpu_dispatch.py [--rounds 3] [--pte PATH]

The portable build is llama-cpp-python 0.3.36 built with CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF",
installed with `pip install --no-deps --target benchmarks/.cache/llama-portable WHEEL` (--portable DIR)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import (CACHE, PYTHON, ROOT, THREADS, Bench, artifact, cached_convert, md_table, median, ratio,
                    rotate, wait_quiet)

QUANTS = ["q8_0", "q4_0", "q4_k_m"]
PROMPT_TOKENS, DECODE_TOKENS, PREFILLS = 512, 64, 3
TEXT = "The lighthouse keeper wrote in his log every night, noting the wind, the ships and the birds. "


def worker(kind: str, path: str) -> dict:
    """One measurement: open the engine, prefill once to warm up, then PREFILLS timed, then decode greedily."""
    if kind == "torch":
        from runtimes.torch_engine import TorchEngine

        e = TorchEngine.open(path, n_ctx=1024, threads=THREADS)
    else:
        import runtimes

        e = runtimes.open_engine(runtimes.engine_for_path(Path(path)), Path(path), n_ctx=1024, threads=THREADS)
    ids = e.tokenize(TEXT * 40, add_bos=e.add_bos)[:PROMPT_TOKENS]
    e.forward(ids, 0)  # warm: first-touch of the weights, the kernels' repacking
    times = []
    for _ in range(PREFILLS):  # a 512-token prefill is about a second here: the median of a few
        e.reset()
        t = time.perf_counter()
        logits = e.forward(ids, 0)
        times.append(time.perf_counter() - t)
    prefill = sorted(times)[len(times) // 2]
    t = time.perf_counter()
    for i in range(DECODE_TOKENS):
        logits = e.forward([int(logits.argmax())], len(ids) + i)
    decode = time.perf_counter() - t
    d = e.describe()
    return {"prefill_tok_s": PROMPT_TOKENS / prefill, "decode_tok_s": DECODE_TOKENS / decode,
            "variant": (d.get("cpu_backend") or {}).get("variant"), "threads": d.get("threads")}


def measure(kind: str, path: Path, env: dict) -> dict:
    p = subprocess.run([PYTHON, __file__, "--worker", kind, str(path)], capture_output=True, text=True, timeout=900,
                       env={**os.environ, **env}, cwd=ROOT)
    if p.returncode:
        raise RuntimeError(f"{kind} {path.name}: {p.stderr[-1500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        k, _, v = line.partition(":")
        info.setdefault(k.strip(), v.strip())
    return f"{info.get('model name')} (vendor {info.get('vendor_id')}, family {info.get('cpu family')}, " \
           f"model {info.get('model')}, stepping {info.get('stepping')})"


def pte_program(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    out = CACHE / "dispatch-pte"
    if not (out / "edgechat.json").exists():
        subprocess.run([str(ROOT / ".venv/bin/edgechat"), "convert", "--format", "pte", "--quant", "8da4w",
                        "--max-seq-len", "1024", "--no-eval", "-o", str(out)], check=True, cwd=ROOT)
    return next(out.glob("*.pte"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--portable", default=str(CACHE / "llama-portable"))
    ap.add_argument("--pte", help="an 8da4w SmolLM2 .pte with max_seq_len >= 576 (default: exported here once)")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    bench = Bench("bench_cpu_dispatch")
    out = cached_convert(["q8_0", "q4_0", "q4_k_m"])
    pte = pte_program(args.pte)
    from edgechat.core.sources import default_model_path

    hf = default_model_path()
    builds = {"portable": {"PYTHONPATH": args.portable}, "dispatched": {},
              "dispatched-haswell": {"EDGECHAT_CPU_VARIANT": "haswell"}}
    sides = [(b, q) for q in QUANTS for b in builds] + [("executorch", "8da4w"), ("torch", "fp32")]
    runs: dict = {f"{b}/{q}": [] for b, q in sides}
    for r in range(args.rounds):
        for b, q in rotate(sides, r):
            quiet = wait_quiet(timeout=20)
            if b == "torch":
                m = measure("torch", hf, {})
            elif b == "executorch":
                m = measure("pte", pte, {})
            else:
                m = measure("llama", artifact(out, q), builds[b])
            runs[f"{b}/{q}"].append({**m, "round": r, **quiet})
            print(f"round {r} {b}/{q}: prefill {m['prefill_tok_s']:.0f} decode {m['decode_tok_s']:.1f} "
                  f"({m['variant']})", file=sys.stderr)
    med = {k: {"prefill_tok_s": median(x["prefill_tok_s"] for x in v), "decode_tok_s": median(x["decode_tok_s"] for x in v),
               "variant": v[0]["variant"], "threads": v[0]["threads"]} for k, v in runs.items()}
    torch_prefill = med["torch/fp32"]["prefill_tok_s"]
    rows, summary = [], {}
    for q in QUANTS:
        p, d, h = med[f"portable/{q}"], med[f"dispatched/{q}"], med[f"dispatched-haswell/{q}"]
        # per-round ratios (the same round's portable and dispatched runs), then their median
        pre = median(ratio(a["prefill_tok_s"], b["prefill_tok_s"]) for a, b in zip(runs[f"dispatched/{q}"], runs[f"portable/{q}"]))
        dec = median(ratio(a["decode_tok_s"], b["decode_tok_s"]) for a, b in zip(runs[f"dispatched/{q}"], runs[f"portable/{q}"]))
        summary[q] = {"prefill_ratio": pre, "decode_ratio": dec, "prefill_vs_torch": ratio(d["prefill_tok_s"], torch_prefill),
                      "goal_prefill_1.5x": pre is not None and pre >= 1.5, "goal_decode_not_slower": dec is not None and dec >= 0.97}
        rows.append([q, p["prefill_tok_s"], h["prefill_tok_s"], d["prefill_tok_s"], pre, p["decode_tok_s"], h["decode_tok_s"],
                     d["decode_tok_s"], dec, ratio(d["prefill_tok_s"], torch_prefill)])
    other = [[k, v["prefill_tok_s"], v["decode_tok_s"], v["threads"]] for k, v in med.items() if k in ("torch/fp32", "executorch/8da4w")]
    variant = med[f"dispatched/{QUANTS[0]}"]["variant"]
    md = (f"CPU: {cpu_name()}; {THREADS} threads; dispatched build's variant here: **{variant}**. "
          f"{args.rounds} interleaved rounds, a fresh process per measurement, medians; prefill = one {PROMPT_TOKENS}-token "
          f"prompt, median of {PREFILLS} after a warm-up one, decode = {DECODE_TOKENS} greedy tokens after it.\n\n"
          + md_table(["quant", "prefill portable", "prefill haswell", f"prefill {variant}", "prefill ratio",
                      "decode portable", "decode haswell", f"decode {variant}", "decode ratio", "prefill vs torch"], rows)
          + "\n\nOther engines (same prompt, same threads):\n\n"
          + md_table(["engine", "prefill tok/s", "decode tok/s", "threads"], other)
          + "\n\nRatios: dispatched / portable, per round, median. Goal: prefill >= 1.5x, decode not slower "
            "(>= 0.97x), llama.cpp prefill > torch fp32 prefill.\n")
    bench.write({"cpu": cpu_name(), "variant": variant, "rounds": args.rounds, "runs": runs, "medians": med,
                 "summary": summary}, md)


if __name__ == "__main__":
    main()
