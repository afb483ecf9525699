"""Shared helpers for the benchmarks: machine facts and load (from host.py), medians and ratios, the memory-copy
bandwidth of this machine, cached conversions, and writing results as JSON + a markdown table.

Every benchmark records the load average at its start and end, the machine, and the exact command, because
another process on these 2-core machines multiplies latencies several times: compare the ratios measured
inside one run (compared things interleaved), not absolute figures across runs."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
RESULTS = BENCH_DIR / "results"
CACHE = BENCH_DIR / ".cache"  # git-ignored (benchmarks/.gitignore)
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
EDGECHAT = str(VENV_BIN / "edgechat")
DATA = ROOT.parent / "shared" / "data"
THREADS = 2

if str(ROOT) not in sys.path:  # `python benchmarks/NAME.py` puts benchmarks/ first, not the repo root
    sys.path.insert(0, str(ROOT))
if str(BENCH_DIR) not in sys.path:  # imported from elsewhere (a worker process, a test)
    sys.path.insert(0, str(BENCH_DIR))
from host import cpu_busy_cores, loadavg, machine, rss_mb, wait_quiet  # noqa: E402,F401 (the benchmarks take them from here)


# -- statistics ---------------------------------------------------------------------------------------
def median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def ratio(a, b) -> float | None:
    return None if a is None or not b else a / b


def summary(xs) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": median(xs), "min": min(xs), "max": max(xs), "values": [round(x, 6) for x in xs]}


def rotate(items: list, r: int) -> list:
    """Round r's order: the list rotated by r, so each item takes each position equally often."""
    k = r % len(items)
    return items[k:] + items[:k]


def interleaved(ways: dict, rounds: int) -> tuple[dict, dict]:
    """Each way (name -> callable) run once a round, in rotate()'s order: the wall seconds of every run per way,
    and each way's last result."""
    times, results = {k: [] for k in ways}, {}
    for r in range(rounds):
        for k in rotate(list(ways), r):
            t = time.perf_counter()
            results[k] = ways[k]()
            times[k].append(time.perf_counter() - t)
    return times, results


# -- memory bandwidth ---------------------------------------------------------------------------------
def memcpy_bandwidth(mib: int = 512, repeats: int = 7) -> dict:
    """numpy copy of a `mib` MiB array into another (pages touched first): bytes copied per second, and the
    memory traffic that implies (read + write = 2x). One thread, as numpy's copy is single-threaded."""
    import numpy as np

    n = mib * 2**20
    src = np.ones(n, dtype=np.uint8)
    dst = np.zeros(n, dtype=np.uint8)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    t = median(times)
    copy = n / t / 1e9
    return {"array_mib": mib, "repeats": repeats, "copy_gb_s": round(copy, 2), "read_plus_write_gb_s": round(2 * copy, 2),
            "best_copy_gb_s": round(n / min(times) / 1e9, 2)}


# -- conversions (cached) -----------------------------------------------------------------------------
# the sources that decide what a GGUF / HF conversion writes (a cache key; --fresh rebuilds regardless)
CONVERT_SOURCES = ["converters/__init__.py", "converters/gguf_*.py", "converters/imatrix.py", "converters/hf_writer.py",
                   "edgechat/core/*.py", "edgechat/core/archs/*.py", "edgechat/app/pipeline.py"]


def library_hash() -> str:
    """Hash of the conversion sources, so a cached artifact is rebuilt when the converter code changes."""
    h = hashlib.sha256()
    for pattern in CONVERT_SOURCES:
        for p in sorted(ROOT.glob(pattern)):
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


@contextmanager
def cache_lock(name: str):
    """An exclusive lock per cache entry, so concurrent benchmarks do not build the same entry twice at once.
    Entries are never deleted automatically (another benchmark may be reading one): see clean_cache()."""
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def clean_cache() -> list[str]:
    """Delete cache entries built from other library sources than the current ones (run it by hand, when no
    benchmark is running: `python benchmarks/common.py --clean-cache`)."""
    import shutil

    current, removed = library_hash(), []
    for p in list(CACHE.glob("convert/*")) + list(CACHE.glob("hf-*")):
        if p.is_dir() and not p.name.endswith(current):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def cached_convert(quants: list[str], imatrix: bool = False, source=None, fresh: bool = False) -> Path:
    """Output directory of `edgechat.app.pipeline.convert(source, ..., quants, imatrix, evaluate=False)`,
    under benchmarks/.cache, keyed by the options and the library sources."""
    import shutil

    key = f"{'default' if source is None else hashlib.sha256(str(source).encode()).hexdigest()[:8]}-" \
          f"{'_'.join(quants)}{'-imat' if imatrix else ''}-{library_hash()}"
    out = CACHE / "convert" / key
    with cache_lock(key):
        if (out / "edgechat.json").exists() and not fresh:
            return out
        if out.exists():
            shutil.rmtree(out)
        from edgechat.app.pipeline import ConvertOptions, convert
        from edgechat.reports.progress import Steps

        t = time.perf_counter()
        convert(source, out, ConvertOptions(formats=["gguf"], quants=list(quants), imatrix=imatrix, evaluate=False,
                                            threads=THREADS), Steps(enabled=False))
        print(f"[cache] converted {key} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return out


def artifact(out_dir: Path, quant: str) -> Path:
    manifest = json.loads((out_dir / "edgechat.json").read_text())
    for a in manifest["artifacts"]:
        if a.get("quant") == quant:
            return out_dir / a["file"]
    raise KeyError(f"{out_dir} has no {quant} artifact")


# -- results ------------------------------------------------------------------------------------------
def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(x):
        if x is None:
            return "-"
        if isinstance(x, float):
            return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"
        return str(x)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


class Bench:
    """Records the command, machine and load average around a benchmark and writes NAME.json + NAME.md."""

    def __init__(self, name: str):
        self.name = name
        exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
        self.command = " ".join(shlex.quote(a) for a in [exe, *sys.argv])
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.t0 = time.perf_counter()
        self.load_start = loadavg()
        self.machine = machine()
        print(f"[{name}] start, load average {self.load_start}", file=sys.stderr)

    def write(self, results: dict, markdown: str) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        load_end = loadavg()
        doc = {
            "benchmark": self.name,
            "command": f"cd {ROOT} && {self.command}",
            "started": self.started,
            "wall_s": round(time.perf_counter() - self.t0, 1),
            "loadavg_start": self.load_start,
            "loadavg_end": load_end,
            "machine": self.machine,
            **results,
        }
        (RESULTS / f"{self.name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        m = self.machine
        header = (f"# {self.name}\n\n"
                  f"- command: `{doc['command']}`\n"
                  f"- started {self.started}, ran {doc['wall_s']} s\n"
                  f"- load average (1/5/15 min): start {self.load_start}, end {load_end}\n"
                  f"- machine: {m['nproc']} CPUs ({m['cpu_model']}; {' '.join(m['cpu_flags'])}), "
                  f"{m['mem_total_gib']} GiB, git {str(m['git']['commit'])[:10]} ({m['git']['dirty_files']} files dirty)\n"
                  f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}\n\n")
        (RESULTS / f"{self.name}.md").write_text(header + markdown.rstrip() + "\n")
        print(f"[{self.name}] wrote {RESULTS / self.name}.json/.md, load average {load_end}", file=sys.stderr)
        return RESULTS / f"{self.name}.json"


def add_interleave_args(ap, rounds: int, tokens: int) -> None:
    """The options of the benchmarks that interleave compared engines turn by turn."""
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--tokens", type=int, default=tokens)
    ap.add_argument("--chunk", type=int, default=16, help="tokens per turn in the interleaved measurement")
    ap.add_argument("--max-busy", type=float, default=0.3, help="cores other processes may keep busy for a quiet round")
    ap.add_argument("--quiet-timeout", type=float, default=60.0, help="longest wait for a quiet machine per round (s)")
    ap.add_argument("--fresh", action="store_true", help="reconvert instead of using benchmarks/.cache")


if __name__ == "__main__":
    if "--clean-cache" in sys.argv:
        print("removed:", clean_cache() or "nothing")
    elif "--memcpy" in sys.argv:
        print(memcpy_bandwidth())
    else:
        print(json.dumps({"machine": machine(), "loadavg": loadavg(), "library_hash": library_hash()}, indent=2))
