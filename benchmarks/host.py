"""What this machine is (CPU model and flags, memory, kernel, package versions, the git state) and how busy it
is (load average, cores other processes keep busy, waiting for quiet, this process's resident memory): the
facts every benchmark records beside its figures (benchmarks/common.py's Bench writes them)."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx")))
    except OSError:
        pass
    return []


def mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("edgechat", "torch", "llama-cpp-python", "gguf", "transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None, "dirty_files": len(git("status", "--porcelain").splitlines())}


def machine() -> dict:
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "mem_total_gib": mem_total_gib(),
        "kernel": platform.release(),
        "versions": versions(),
        "git": git_state(),
    }


def _cpu_times() -> tuple[int, int]:
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(v[:8]), v[3] + v[4]  # total (user..steal), idle + iowait


def cpu_busy_cores(interval: float = 1.0) -> float | None:
    """Cores busy on the whole machine over `interval` seconds (from /proc/stat): run it while the benchmark
    itself is idle and it measures the other processes."""
    try:
        t0, i0 = _cpu_times()
        time.sleep(interval)
        t1, i1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return round((os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1)), 2)


def wait_quiet(max_busy: float = 0.3, timeout: float = 60.0, interval: float = 1.0) -> dict:
    """Wait (at most `timeout` s) until other processes keep fewer than `max_busy` cores busy. Other processes
    multiply latencies here (llama.cpp's threads meet at barriers, so one descheduled thread stalls the rest):
    record what was seen rather than trust a round blindly."""
    t = time.perf_counter()
    busy = cpu_busy_cores(interval)
    while busy is not None and busy > max_busy and time.perf_counter() - t < timeout:
        busy = cpu_busy_cores(interval)
    return {"waited_s": round(time.perf_counter() - t, 1), "busy_cores_before": busy,
            "quiet": busy is not None and busy <= max_busy}


def rss_mb() -> dict:
    """Current (VmRSS) and peak (VmHWM) resident set of this process, MiB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return {"rss_mb": out.get("VmRSS"), "peak_rss_mb": out.get("VmHWM")}
