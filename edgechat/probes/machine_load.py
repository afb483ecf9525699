"""How busy the machine was during a measurement: the load average at the start and end, and (Linux) the CPU
time other processes took, sampled from /proc/stat minus our own processes' /proc/PID/stat."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BUSY_CORES = 0.25  # other processes using more than this many cores on average: warn


def _total_busy_ticks() -> int | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    v = [int(x) for x in fields]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal; guest is inside user


def _pid_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


class LoadMonitor:
    """Use as a context manager; `pids` may grow while it runs (worker processes)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.pids: set[int] = {os.getpid()}
        self.others: list[float] = []  # cores used by other processes, per interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="edgechat-load")
        self._ours: dict[int, int] = {}

    def _ours_delta(self) -> int:
        delta = 0
        for pid in list(self.pids):
            now = _pid_ticks(pid)  # a process added while running counts from its start (0)
            delta += max(now - self._ours.get(pid, 0), 0)
            self._ours[pid] = now
        return delta

    def _run(self):
        last_total, last_t = _total_busy_ticks(), time.perf_counter()
        self._ours_delta()
        while not self._stop.wait(self.interval):
            total, t = _total_busy_ticks(), time.perf_counter()
            if total is None or last_total is None:
                return
            others = (total - last_total - self._ours_delta()) / TICK / (t - last_t)
            self.others.append(max(others, 0.0))
            last_total, last_t = total, t

    def add_pid(self, pid: int) -> None:
        self._ours.setdefault(pid, 0)
        self.pids.add(pid)

    def __enter__(self):
        self.loadavg_start = [round(x, 2) for x in os.getloadavg()]
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.loadavg_end = [round(x, 2) for x in os.getloadavg()]

    def summary(self) -> dict:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        mean = sum(self.others) / len(self.others) if self.others else None
        busy = (mean is not None and mean > BUSY_CORES) or (mean is None and self.loadavg_start[0] > cores / 2)
        out = {"cores": cores, "loadavg_start": self.loadavg_start, "loadavg_end": self.loadavg_end,
               "other_cpu_cores_mean": None if mean is None else round(mean, 3),
               "other_cpu_cores_max": round(max(self.others), 3) if self.others else None,
               "samples": len(self.others), "busy": bool(busy), "warning": None}
        if busy:
            used = (f"other processes used {mean:.2f} of {cores} cores on average" if mean is not None
                    else f"the load average was {self.loadavg_start[0]:.2f} on {cores} cores")
            out["warning"] = (f"the machine was busy during the run: {used} (load average {self.loadavg_start[0]:.2f} "
                              f"-> {self.loadavg_end[0]:.2f}); speeds are lower and noisier than on a quiet machine")
        return out


def wait_for_quiet(max_wait_s: float, threshold_cores: float = BUSY_CORES, window_s: float = 5.0) -> dict:
    """Block until other processes use under `threshold_cores` over a `window_s` window, or `max_wait_s`
    passes. Returns what was seen: {"quiet": bool, "waited_s", "other_cpu_cores"}."""
    t0 = time.perf_counter()
    others = None
    while True:
        mon = LoadMonitor(interval=window_s)
        with mon:
            time.sleep(window_s + 0.2)
        others = mon.summary()["other_cpu_cores_mean"]
        waited = time.perf_counter() - t0
        if others is None or others < threshold_cores or waited >= max_wait_s:
            return {"quiet": others is not None and others < threshold_cores, "waited_s": round(waited, 1),
                    "other_cpu_cores": others}
