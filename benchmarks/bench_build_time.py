"""Build time of llama-cpp-python 0.3.36 from source on this machine: the portable build (one AVX2 CPU backend,
the old Makefile's flags) vs the dispatched one (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS: 14 x86 variants,
the Makefile's flags now), each from a clean build directory with pip's build isolation, as `make` does,
alternated round by round. Also the wheel's size and its CPU variant libraries.

    .venv/bin/python benchmarks/bench_build_time.py [--rounds 1]"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from common import PYTHON, ROOT, Bench, loadavg, md_table, median, ratio, rotate

VERSION = "0.3.36"
PORTABLE = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"


def makefile_args() -> str:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return " ".join(re.search(r"^LLAMA_CMAKE_ARGS := (.*)$", text, re.M).group(1).split())


def build(cmake_args: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        load0, t = loadavg(), time.perf_counter()
        p = subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python",
                            "-w", d, f"llama-cpp-python=={VERSION}"], capture_output=True, text=True,
                           env={**os.environ, "CMAKE_ARGS": cmake_args})
        wall = time.perf_counter() - t
        if p.returncode:
            raise RuntimeError(p.stderr[-2000:])
        wheel = next(Path(d).glob("*.whl"))
        names = zipfile.ZipFile(wheel).namelist()
        variants = sorted(n.split("libggml-cpu-")[1][:-3] for n in names if "libggml-cpu-" in n and n.endswith(".so"))
        return {"wall_s": round(wall, 1), "loadavg_start": load0, "loadavg_end": loadavg(),
                "wheel_mib": round(wheel.stat().st_size / 2**20, 1), "cpu_variants": variants}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    bench = Bench("bench_build_time")
    sides = {"portable": PORTABLE, "dispatched": makefile_args()}
    runs = {k: [] for k in sides}
    for r in range(args.rounds):
        for name in rotate(list(sides), r):
            res = build(sides[name])
            runs[name].append(res)
            print(f"round {r} {name}: {res['wall_s']} s", file=sys.stderr)
    med = {k: median(x["wall_s"] for x in v) for k, v in runs.items()}
    rows = [[k, sides[k], med[k], runs[k][0]["wheel_mib"], len(runs[k][0]["cpu_variants"]) or "1 (linked in)",
             "; ".join(str(x["loadavg_start"]) for x in runs[k])] for k in sides]
    md = (md_table(["build", "CMAKE_ARGS", "wall s (median)", "wheel MiB", "CPU backends", "load average at start"], rows)
          + f"\n\nDispatched / portable build time: {ratio(med['dispatched'], med['portable']):.2f}x "
            f"({os.cpu_count()} cores; pip's isolated build environment each time, as `make` on a clean machine).\n"
            f"Variants: {', '.join(runs['dispatched'][0]['cpu_variants'])}.\n")
    bench.write({"sides": sides, "runs": runs, "median_wall_s": med,
                 "ratio": ratio(med["dispatched"], med["portable"])}, md)


if __name__ == "__main__":
    main()
