"""Energy of one reply: measured by a power reader where one works, else estimated from the process's CPU
time and the target profile's power figures, and always labelled with which (`energy_source`).

The meter touches nothing per token: a counter is read at the start and end of a reply; a sampler reader
is polled by a background thread (every `interval` seconds) only while a reply runs."""
from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass

from edgechat.core.errors import EdgechatError
from edgechat.probes.power import PowerReader, ReaderUnavailable, detect, integrate


@dataclass
class Reading:
    energy_j: float | None
    source: str
    cpu_s: float
    wall_s: float
    span_s: float = 0.0  # the time the power samples cover (sampler readers)
    samples: int = 0


class _Sampler(threading.Thread):
    MAX_S = 3600.0  # a reply abandoned mid-stream never calls end(): stop polling by ourselves

    def __init__(self, reader: PowerReader, interval: float, clock):
        super().__init__(daemon=True, name="edgechat-power")
        self.reader, self.interval, self.clock = reader, interval, clock
        self.samples: list[tuple[float, float]] = []
        self.error: str | None = None
        self._halt = threading.Event()

    def sample(self):
        try:
            self.samples.append((self.clock(), self.reader.power_w()))
        except ReaderUnavailable as e:
            self.error = str(e)

    def run(self):
        t0 = time.monotonic()
        while not self._halt.wait(self.interval) and time.monotonic() - t0 < self.MAX_S:
            self.sample()

    def finish(self) -> list[tuple[float, float]]:
        self._halt.set()
        self.join()
        self.sample()
        return self.samples


class EnergyMeter:
    """begin() before a reply, end(token) after it. reader=None: estimate from CPU time."""

    def __init__(self, reader: PowerReader | None, watts_per_core: float, profile_name: str,
                 assumed: bool = False, interval: float = 0.1, clock=time.perf_counter):
        self.reader = reader
        self.watts_per_core = watts_per_core
        self.interval = interval
        self.clock = clock
        figures = "assumed figures" if assumed else "its power figures"
        self.estimate_label = (f"estimated: process CPU time x {watts_per_core:.2f} W/core "
                               f"({profile_name} profile, {figures})")

    @property
    def source(self) -> str:
        return f"measured: {self.reader.describe()}" if self.reader else self.estimate_label

    def begin(self):
        cpu, wall = time.process_time(), time.perf_counter()
        if self.reader is None:
            return cpu, wall, None
        if self.reader.kind == "counter":
            return cpu, wall, self.reader.energy_j()
        sampler = _Sampler(self.reader, self.interval, self.clock)
        sampler.sample()
        sampler.start()
        return cpu, wall, sampler

    def end(self, token) -> Reading:
        cpu0, wall0, state = token
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        estimate = Reading(cpu_s * self.watts_per_core, self.estimate_label, cpu_s, wall_s)
        if state is None:
            return estimate
        try:
            if isinstance(state, _Sampler):
                samples = state.finish()
                if state.error or len(samples) < 2:
                    raise ReaderUnavailable(state.error or "too few samples")
                return Reading(integrate(samples), self.source, cpu_s, wall_s, samples[-1][0] - samples[0][0],
                               len(samples))
            joules = self.reader.energy_j() - state
        except ReaderUnavailable as e:  # the reader failed mid-run: say so, and fall back to the estimate
            estimate.source += f" ({self.reader.name} failed: {e})"
            return estimate
        return Reading(joules, self.source, cpu_s, wall_s, wall_s, 2)


def meter_for(target: str = "host", power: str = "auto") -> EnergyMeter:
    """power: "auto" (first reader that works, else the estimate), "estimate", or a reader's name."""
    from targets import TargetError, load_profile

    try:
        profile = load_profile(target, measure=False)
    except TargetError as e:
        raise EdgechatError(str(e)) from None
    w = profile.power.per_core_w(profile.cpu.threads)
    reader = None
    if power == "auto":
        reader = auto_reader()
    elif power != "estimate":
        from edgechat.probes.power import READERS

        if power not in READERS:
            raise EdgechatError(f"unknown power reader {power!r}: choose auto, estimate or one of {', '.join(READERS)}")
        reader, reasons = detect(order=(power,))
        if reader is None:
            raise EdgechatError(f"power reader {power} does not work here: {reasons[power]}")
    return EnergyMeter(reader, w, profile.name, profile.power.assumed)


@functools.lru_cache(maxsize=1)
def auto_reader() -> PowerReader | None:
    """The first reader that works on this machine, looked for once per process (readers keep cumulative
    counts, so meters can share one)."""
    return detect()[0]


def environment_meter() -> EnergyMeter:
    """The default meter: $EDGECHAT_POWER (auto | estimate | a reader name) on the host profile."""
    return meter_for("host", os.environ.get("EDGECHAT_POWER", "auto"))
