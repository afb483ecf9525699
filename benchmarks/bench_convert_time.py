"""Conversion time, Hugging Face checkpoint -> Q4_K_M GGUF: edgechat vs llama.cpp's own tools.

  edgechat   `edgechat convert HFDIR -o OUT --quant q4_k_m --no-eval --threads 2` (a subprocess: load, F32 GGUF,
             llama.cpp's quantizer, manifest)
  llama.cpp  `python convert_hf_to_gguf.py HFDIR --outfile F32 --outtype f32` (a subprocess, the script and its
             gguf-py from the llama-cpp-python 0.3.36 sdist, i.e. the llama.cpp that this llama_cpp build vendors),
             then llama_model_quantize(F32 -> Q4_K_M, 2 threads) in this process (what llama-quantize calls;
             run in-process, so that side pays no interpreter start-up for that step)

The checkpoint is the embedded SmolLM2-135M-Instruct written by `edgechat convert -o HFDIR --format hf --no-eval`.
Rounds are interleaved (order alternates), medians reported. Then the two Q4_K_M files are compared tensor by
tensor (types, and values dequantized with gguf-py), and so are the two F32 intermediates.

    .venv/bin/python benchmarks/bench_convert_time.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CACHE, EDGECHAT, PYTHON, THREADS, Bench, cache_lock, cpu_busy_cores, library_hash,  # noqa: E402
                    md_table, median, ratio, rotate, summary, wait_quiet)

LLAMA_CPP_PYTHON = "0.3.36"
SDIST_DIR = Path("/tmp/edgechat-bench-sdist")  # the downloaded sdist stays out of the repo


def llama_cpp_script() -> Path:
    """convert_hf_to_gguf.py (with its conversion/ package and gguf-py) from the llama-cpp-python sdist."""
    root = SDIST_DIR / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    script = root / "convert_hf_to_gguf.py"
    if script.exists() and (root / "conversion").is_dir() and (root / "gguf-py").is_dir():
        return script
    SDIST_DIR.mkdir(parents=True, exist_ok=True)
    tgz = SDIST_DIR / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not tgz.exists():
        subprocess.run([str(Path(PYTHON).parent / "pip"), "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(SDIST_DIR)], check=True)
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    wanted = (prefix + "convert_hf_to_gguf.py", prefix + "conversion/", prefix + "gguf-py/")
    with tarfile.open(tgz) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(wanted)]
        tf.extractall(SDIST_DIR, members=members, filter="data")
    return script


def hf_checkpoint() -> tuple[Path, float | None]:
    out = CACHE / f"hf-default-{library_hash()}"
    with cache_lock(out.name):
        if (out / "config.json").exists():
            return out, None
        if out.exists():
            shutil.rmtree(out)
        t = time.perf_counter()
        subprocess.run([EDGECHAT, "convert", "-o", str(out), "--format", "hf", "--no-eval"], check=True,
                       stdout=subprocess.DEVNULL)
        return out, time.perf_counter() - t


def run_edgechat(hf: Path, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    p = subprocess.run([EDGECHAT, "convert", str(hf), "-o", str(out), "--quant", "q4_k_m", "--no-eval",
                        "--threads", str(THREADS), "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"edgechat convert failed:\n{p.stderr[-2000:]}")
    import json

    manifest = json.loads(p.stdout)
    q = out / manifest["artifacts"][0]["file"]
    return {"total_s": wall, "steps_s": manifest.get("timings_s"), "file": q}


def run_llama_cpp(script: Path, hf: Path, out: Path) -> dict:
    from converters.gguf_quantize import quantize_gguf

    out.mkdir(parents=True, exist_ok=True)
    f32, q = out / "model-f32.gguf", out / "model-q4_k_m.gguf"
    for f in (f32, q):
        f.unlink(missing_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run([PYTHON, str(script), str(hf), "--outfile", str(f32), "--outtype", "f32"],
                       capture_output=True, text=True)
    t1 = time.perf_counter()
    if p.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{p.stderr[-3000:]}")
    quantize_gguf(f32, q, "q4_k_m", threads=THREADS)
    t2 = time.perf_counter()
    return {"total_s": t2 - t0, "convert_s": t1 - t0, "quantize_s": t2 - t1, "file": q, "f32": f32, "log": p.stderr}


def compare_gguf(a: Path, b: Path) -> dict:
    """Tensor by tensor: same names, shapes and types; values dequantized; metadata keys that differ."""
    import gguf
    from gguf.quants import dequantize

    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    ta, tb = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
    out = {"only_in_a": sorted(set(ta) - set(tb)), "only_in_b": sorted(set(tb) - set(ta)), "tensors": {}}
    worst, n_identical, type_diff = 0.0, 0, []
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        rec = {"type_a": x.tensor_type.name, "type_b": y.tensor_type.name,
               "shape_a": [int(s) for s in x.shape], "shape_b": [int(s) for s in y.shape]}
        same_bytes = x.tensor_type == y.tensor_type and np.array_equal(np.asarray(x.data).view(np.uint8),
                                                                          np.asarray(y.data).view(np.uint8))
        rec["identical_bytes"] = bool(same_bytes)
        n_identical += same_bytes
        if x.tensor_type != y.tensor_type:
            type_diff.append(name)
        if same_bytes:
            rec["max_abs_diff"] = 0.0
        else:
            da = dequantize(x.data, x.tensor_type).astype(np.float64).ravel()
            db = dequantize(y.data, y.tensor_type).astype(np.float64).ravel()
            if da.size != db.size:
                rec["max_abs_diff"] = None
            else:
                d = np.abs(da - db)
                rec["max_abs_diff"] = float(d.max())
                rec["rel_rms_diff"] = float(np.sqrt((d ** 2).mean() / max((da ** 2).mean(), 1e-30)))
                worst = max(worst, rec["max_abs_diff"])
        out["tensors"][name] = rec
    skip = ("general.name", "general.basename", "general.size_label", "general.file_type", "general.quantization_version")
    keys_a = {k for k in ra.fields if not k.startswith("GGUF.")}
    keys_b = {k for k in rb.fields if not k.startswith("GGUF.")}
    differing = []
    for k in sorted(keys_a & keys_b):
        try:
            va, vb = ra.fields[k].contents(), rb.fields[k].contents()
        except Exception:  # noqa: BLE001
            continue
        if va != vb:
            differing.append(k if k in skip else f"{k}: {str(va)[:60]!r} vs {str(vb)[:60]!r}")
    out.update(n_common=len(set(ta) & set(tb)), n_identical_bytes=int(n_identical), tensors_with_type_diff=type_diff,
               max_abs_diff=worst, metadata_only_in_a=sorted(keys_a - keys_b), metadata_only_in_b=sorted(keys_b - keys_a),
               metadata_differing=differing)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-busy", type=float, default=0.3, help="cores other processes may keep busy for a quiet round")
    ap.add_argument("--quiet-timeout", type=float, default=30.0, help="longest wait for a quiet machine per round (s)")
    args = ap.parse_args()
    bench = Bench("bench_convert_time")

    script = llama_cpp_script()
    hf, hf_s = hf_checkpoint()
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="edgechat-bench-convert-"))
    sides = {
        "edgechat": lambda: run_edgechat(hf, work / "edgechat"),
        "llama.cpp": lambda: run_llama_cpp(script, hf, work / "llama.cpp"),
    }
    runs = {k: [] for k in sides}
    load = []
    for r in range(args.rounds):
        q = wait_quiet(args.max_busy, args.quiet_timeout)
        for k in rotate(list(sides), r):
            runs[k].append(sides[k]())
        q["busy_cores_after"] = cpu_busy_cores(1.0)
        load.append(q)
        print(f"round {r + 1}/{args.rounds} (others busy {q['busy_cores_before']}/{q['busy_cores_after']} cores): "
              + ", ".join(f"{k} {runs[k][-1]['total_s']:.1f}s" for k in sides), file=sys.stderr)

    ec, lc = runs["edgechat"][-1], runs["llama.cpp"][-1]
    q_cmp = compare_gguf(ec["file"], lc["file"])
    # the F32 intermediates: edgechat deletes its own, so write one from the same checkpoint (outside the timing)
    ec_f32_dir = work / "edgechat-f32"
    if ec_f32_dir.exists():
        shutil.rmtree(ec_f32_dir)
    subprocess.run([EDGECHAT, "convert", str(hf), "-o", str(ec_f32_dir), "--quant", "f32", "--no-eval"], check=True,
                   stdout=subprocess.DEVNULL)
    f32_cmp = compare_gguf(next(ec_f32_dir.glob("*-f32.gguf")), lc["f32"])

    tok_lines = [ln for ln in lc["log"].splitlines() if any(s in ln.lower() for s in ("pre-token", "chkhsh", "tokenizer", "warning"))]
    import gguf

    pre = gguf.GGUFReader(lc["f32"]).fields.get("tokenizer.ggml.pre")
    med = {k: median(x["total_s"] for x in v) for k, v in runs.items()}
    per_round = [a["total_s"] / b["total_s"] for a, b in zip(runs["edgechat"], runs["llama.cpp"])]
    speed = median(per_round)  # edgechat time / llama.cpp time: <= 1 means edgechat is not slower
    results = {
        "hf_checkpoint": str(hf), "hf_checkpoint_write_s": hf_s,
        "llama_cpp_script": str(script), "gguf_py": "the sdist's vendor/llama.cpp/gguf-py (the script's default)",
        "rounds": args.rounds, "threads": THREADS,
        "edgechat_s": summary([x["total_s"] for x in runs["edgechat"]]),
        "edgechat_steps_s_last_round": ec["steps_s"],
        "llama_cpp_s": summary([x["total_s"] for x in runs["llama.cpp"]]),
        "llama_cpp_convert_script_s": summary([x["convert_s"] for x in runs["llama.cpp"]]),
        "llama_cpp_quantize_s": summary([x["quantize_s"] for x in runs["llama.cpp"]]),
        "time_ratio_edgechat_over_llama_cpp": summary(per_round),
        "ratio_of_medians": ratio(med["edgechat"], med["llama.cpp"]),
        "goal": "edgechat not slower than llama.cpp (time ratio <= 1)",
        "goal_met": speed <= 1.0,
        "machine_load_per_round": load,
        "file_bytes": {"edgechat": ec["file"].stat().st_size, "llama.cpp": lc["file"].stat().st_size},
        "q4_k_m_comparison": q_cmp,
        "f32_comparison": f32_cmp,
        "llama_cpp_tokenizer": {"tokenizer.ggml.pre": pre.contents() if pre else None, "log_lines": tok_lines},
    }
    type_rows = sorted({(t["type_a"], t["type_b"]) for t in q_cmp["tensors"].values()})
    from collections import Counter

    type_counts = Counter(t["type_a"] for t in q_cmp["tensors"].values())
    results["q4_k_m_tensor_types_edgechat"] = dict(type_counts)
    md = (f"SmolLM2-135M-Instruct as a Hugging Face checkpoint (fp32 safetensors, written by `edgechat convert --format "
          f"hf`) -> Q4_K_M GGUF, {THREADS} threads, {args.rounds} interleaved rounds, medians.\n\n"
          + md_table(["side", "median s", "min s", "max s", "breakdown (median)"], [
              ["edgechat convert", med["edgechat"], results["edgechat_s"]["min"], results["edgechat_s"]["max"],
               ", ".join(f"{k.split(' (')[0].split(' /')[0]} {v:.1f}" for k, v in (ec["steps_s"] or {}).items())
               + f", rest (start-up, imports, quantize, manifest) {ec['total_s'] - sum((ec['steps_s'] or {}).values()):.1f}"
               + " (last round's manifest timings_s, s)"],
              ["llama.cpp convert_hf_to_gguf.py + quantize", med["llama.cpp"], results["llama_cpp_s"]["min"],
               results["llama_cpp_s"]["max"], f"script {results['llama_cpp_convert_script_s']['median']:.1f} s, "
                                              f"quantize {results['llama_cpp_quantize_s']['median']:.1f} s"]])
          + f"\n\nTime ratio edgechat / llama.cpp (median of per-round ratios): **{speed:.3f}** "
            f"(min {min(per_round):.3f}, max {max(per_round):.3f}); goal edgechat not slower: "
            f"**{'met' if results['goal_met'] else 'NOT met'}**. Other processes' load per round (cores busy, "
            f"before/after): {', '.join(str(q['busy_cores_before']) + '/' + str(q['busy_cores_after']) for q in load)}.\n\n"
          + "Output equivalence (edgechat vs llama.cpp):\n\n"
          + md_table(["file", "tensors compared", "identical bytes", "tensors with different type", "max abs diff (dequantized)",
                      "metadata keys differing"], [
              ["Q4_K_M", q_cmp["n_common"], q_cmp["n_identical_bytes"], len(q_cmp["tensors_with_type_diff"]),
               q_cmp["max_abs_diff"], len(q_cmp["metadata_differing"])],
              ["F32 intermediate", f32_cmp["n_common"], f32_cmp["n_identical_bytes"], len(f32_cmp["tensors_with_type_diff"]),
               f32_cmp["max_abs_diff"], len(f32_cmp["metadata_differing"])]])
          + f"\n\nQ4_K_M tensor types (edgechat/llama.cpp): {', '.join(f'{a}/{b}' for a, b in type_rows)}; tensors per "
            f"type in edgechat's: {', '.join(f'{k} {v}' for k, v in sorted(type_counts.items()))} (llama.cpp falls back "
            f"from K-quants to Q5_0/Q8_0 for rows of 576, which are not a multiple of 256). "
            f"Tensors only in one file: {q_cmp['only_in_a'] + q_cmp['only_in_b'] or 'none'}. "
            f"Metadata keys differing: {q_cmp['metadata_differing'] or 'none'}; only in edgechat's: "
            f"{q_cmp['metadata_only_in_a'] or 'none'}; only in llama.cpp's: {q_cmp['metadata_only_in_b'] or 'none'}.\n\n"
            f"llama.cpp's converter and edgechat's tokenizer: it wrote tokenizer.ggml.pre = "
            f"`{results['llama_cpp_tokenizer']['tokenizer.ggml.pre']}` (its pre-tokenizer hash check "
            f"{'recognised the tokenizer' if pre else 'failed'}). Converter warnings: "
            f"{'; '.join(ln.strip() for ln in tok_lines if 'WARNING' in ln) or 'none'}.\n")
    bench.write(results, md)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
