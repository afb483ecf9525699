"""The `host` profile, built at run time from this machine: cores, ISA flags, RAM, measured bandwidth and
compute. Assumptions it cannot measure (power) come from profiles/host.toml and are labelled as such."""
from __future__ import annotations

import functools
import os
import threading
import time
import tomllib
from pathlib import Path

from targets.profile import PROFILES_DIR, Profile, parse_profile

ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
             "asimd", "asimddp", "i8mm", "sve", "fphp", "asimdhp", "bf16")


def read_cpuinfo(root: Path) -> tuple[str, tuple[str, ...]]:
    names, flags = {}, set()
    try:
        text = (root / "proc/cpuinfo").read_text()
    except OSError:
        return "unknown", ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key in ("model name", "hardware", "cpu model", "model") and not value.isdigit():
            names.setdefault(key, value)  # x86's "model" is a number; the Pi's "Model" names the board
    name = next((names[k] for k in ("model name", "model", "hardware", "cpu model") if k in names), "unknown")
    return name, tuple(f for f in ISA_FLAGS if f in flags)


def usable_cpus() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def physical_cores(root: Path = Path("/"), cpus: set[int] | None = None) -> int:
    """Cores (not hyper-threads) among the CPUs this process may use: the default thread count of every engine.
    llama.cpp's and XNNPACK's threads meet at a barrier per op, so two threads on one core's siblings make
    each op wait for the slower sibling; one thread per physical core is llama.cpp's own advice."""
    cpus = usable_cpus() if cpus is None else cpus
    cores, cpu = set(), None
    try:
        text = (root / "proc/cpuinfo").read_text()
    except OSError:
        return max(len(cpus), 1)
    ids: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            cpu = int(value)
            ids[cpu] = {}
        elif cpu is not None and key in ("physical id", "core id"):
            ids[cpu][key] = value
    for c in cpus:
        if c in ids and "core id" in ids[c]:
            cores.add((ids[c].get("physical id", "0"), ids[c]["core id"]))
        else:  # no topology (aarch64 boards, some VMs): count the CPU itself
            cores.add(("cpu", str(c)))
    return max(len(cores), 1)


def read_mhz(root: Path, default: float) -> float:
    """The core clock: cpufreq's maximum where the kernel exposes it, else /proc/cpuinfo's "cpu MHz"."""
    try:
        return int((root / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
    except (OSError, ValueError):
        pass
    try:
        for line in (root / "proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":")[1])
    except (OSError, ValueError, IndexError):
        pass
    return default


def read_meminfo(root: Path) -> dict[str, float]:
    """MemTotal and MemAvailable in GB (1e9 bytes)."""
    out = {}
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(rest.split()[0]) * 1024 / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return out


def measure_bandwidth(threads: int, mib: int = 256, repeats: int = 5) -> float:
    """Read bandwidth, GB/s: each thread reduces its slice of a `mib` MiB int64 array (numpy releases the GIL)."""
    import numpy as np

    a = np.ones(mib * 2**20 // 8, dtype=np.int64)
    chunks = np.array_split(a, threads)
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=np.max, args=(c,)) for c in chunks]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def measure_fp32_gflops(n: int = 1024, repeats: int = 3) -> float:
    import numpy as np

    x = np.random.default_rng(0).random((n, n), dtype=np.float32)
    x @ x  # warm the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x @ x
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def host_settings() -> dict:
    return tomllib.loads((PROFILES_DIR / "host.toml").read_text())["host"]


def int8_factor(isa: tuple[str, ...], factors: dict) -> float:
    return max([factors[f] for f in isa if f in factors] or [1.0])


def dot_bytes_per_cycle(isa: tuple[str, ...], table: dict) -> float:
    return max([table[f] for f in isa if f in table] or [table["default"]])


@functools.lru_cache(maxsize=8)
def host_profile(measure: bool = True, root: str = "/", threads: int | None = None) -> Profile:
    """This machine; `threads` (default: every core this process may use) is what bandwidth and compute
    are measured with and what the planner assumes an engine runs."""
    r = Path(root)
    s = host_settings()
    cores = len(usable_cpus())
    threads = min(threads or physical_cores(r), cores)
    name, isa = read_cpuinfo(r)
    mem = read_meminfo(r)
    total = mem.get("MemTotal", 8.0)
    budget = min(total, mem.get("MemAvailable", total) * s["app_budget_fraction"])
    mhz = read_mhz(r, s["default_mhz"])
    dot = dot_bytes_per_cycle(isa, s["dot_bytes_per_cycle"]) * mhz / 1e3 * threads
    measured: dict = {"loadavg": [round(x, 2) for x in os.getloadavg()]} if measure else {}
    if measure:
        bw, gflops = measure_bandwidth(threads), measure_fp32_gflops() * threads / cores
        measured["bandwidth_gbs"] = {"value": round(bw, 2), "method": f"numpy max over 256 MiB int64, {threads} "
                                                                      "threads, best of 5"}
        measured["fp32_gflops"] = {"value": round(gflops, 1), "method": "numpy float32 matmul 1024^3 (all cores), "
                                                                        f"best of 3, x {threads}/{cores}"}
    else:
        bw, gflops = s["default_bandwidth_gbs"], s["default_fp32_gflops"]
        measured["note"] = "not measured: bandwidth and compute are defaults"
    data = {
        "name": "host", "description": f"{s['description']}: {name}", "kind": "host",
        "cpu": {"name": name, "cores": cores, "threads": threads, "isa": list(isa), "fp32_gflops": gflops,
                "int8_gops": gflops * int8_factor(isa, s["int8_factor"]), "bandwidth_gbs": bw, "dot_gbs": dot,
                "op_overhead_us": s["op_overhead_us"] + s["op_overhead_per_extra_thread_us"] * (threads - 1),
                "token_overhead_us": s["token_overhead_us"]},
        "memory": {"total_gb": total, "app_budget_gb": budget, "bandwidth_gbs": bw, "type": "measured"},
        "power": {"idle_w": s["idle_w"], "cpu_active_w": s["idle_w"] + s["watts_per_core"] * threads, "assumed": True},
    }
    profile = parse_profile(data, PROFILES_DIR / "host.toml")
    measured["clock_mhz"] = mhz
    return Profile(**{**profile.__dict__, "measured": measured})
