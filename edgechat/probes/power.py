"""Power readers: a registry of the ways a platform reports energy or power, each built on a root path (or a
command runner, or an NVML module) so tests can point it at fixtures shaped like the real source.

Counter readers give cumulative joules (RAPL energy_uj, NVML's millijoule counter); sampler readers give
instantaneous watts (power_supply current x voltage, the Pi 5 PMIC's rails, powermetrics), integrated over
a reply by edgechat.probes.energy. `detect()` returns the first reader that works here, with every other's reason."""
from __future__ import annotations

import plistlib
import re
import subprocess
import threading
from pathlib import Path
from typing import Callable

READERS: dict[str, type] = {}


def register_reader(name: str):
    def wrap(cls):
        cls.name = name
        READERS[name] = cls
        return cls
    return wrap


class ReaderUnavailable(Exception):
    """Why a reader cannot work on this machine (no such tree, no permission, no tool)."""


class PowerReader:
    name = "reader"
    kind = "counter"  # "counter": energy_j(); "sampler": power_w()
    detail = ""  # which zones, rails or devices it reads

    def energy_j(self) -> float:
        raise NotImplementedError

    def power_w(self) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.detail})" if self.detail else self.name


def run_command(args: list[str], timeout: float = 5.0) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise ReaderUnavailable(f"{args[0]}: {e}") from None
    if out.returncode != 0:
        raise ReaderUnavailable(f"{' '.join(args)} exited {out.returncode}: {out.stderr.strip()[:200]}")
    return out.stdout


def read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError:
        raise ReaderUnavailable(f"{path}: permission denied (root only since CVE-2020-8694)") from None
    except (OSError, ValueError) as e:
        raise ReaderUnavailable(f"{path}: {e}") from None


@register_reader("rapl")
class RaplReader(PowerReader):
    """Linux powercap (Intel RAPL, and AMD's on recent kernels): package zones, plus DRAM subzones, in uJ."""
    kind = "counter"

    def __init__(self, root: str | Path = "/sys/class/powercap"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ReaderUnavailable(f"{self.root} is absent (no RAPL powercap driver)")
        zones = []
        for z in sorted(self.root.glob("*-rapl:*")):
            name = (z / "name").read_text().strip() if (z / "name").exists() else ""
            top = z.name.count(":") == 1
            if (top and name.startswith("package")) or (not top and name == "dram"):
                zones.append((z, name))
        if not zones:
            raise ReaderUnavailable(f"{self.root} has no package or dram RAPL zone")
        self.zones = [(z, name, read_int(z / "max_energy_range_uj") if (z / "max_energy_range_uj").exists()
                       else 2**32) for z, name in zones]
        self._last = [read_int(z / "energy_uj") for z, _, _ in self.zones]
        self._total = 0
        self._lock = threading.Lock()  # meters in several threads may share one reader
        self.detail = "+".join(name for _, name, _ in self.zones)

    def energy_j(self) -> float:
        """Cumulative joules since this reader was made, across counter wrap-arounds."""
        with self._lock:
            for i, (z, _, wrap) in enumerate(self.zones):
                now = read_int(z / "energy_uj")
                delta = now - self._last[i]
                self._total += delta if delta >= 0 else delta + wrap + 1
                self._last[i] = now
            return self._total / 1e6


@register_reader("nvml")
class NvmlReader(PowerReader):
    """NVIDIA GPUs through NVML (pynvml's API): the total-energy counter (mJ, Volta and later)."""
    kind = "counter"

    def __init__(self, nvml=None):
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                raise ReaderUnavailable("pynvml is not installed (no NVIDIA GPU tooling)") from None
        self.nvml = nvml
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            for h in self.handles:
                nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except Exception as e:  # NVMLError and its many subclasses
            raise ReaderUnavailable(f"NVML: {e}") from None
        if not self.handles:
            raise ReaderUnavailable("NVML sees no GPU")
        self.detail = f"{len(self.handles)} GPU{'s' if len(self.handles) > 1 else ''}"

    def energy_j(self) -> float:
        return sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles) / 1e3


@register_reader("power_supply")
class PowerSupplyReader(PowerReader):
    """Linux/Android battery: power_now (uW), else current_now (uA) x voltage_now (uV). Only while
    discharging: on a charger the battery's current is not what the device draws."""
    kind = "sampler"

    def __init__(self, root: str | Path = "/sys/class/power_supply"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ReaderUnavailable(f"{self.root} is absent")
        batteries = [d for d in sorted(self.root.iterdir())
                     if (d / "type").exists() and (d / "type").read_text().strip() == "Battery"]
        if not batteries:
            raise ReaderUnavailable(f"{self.root} has no battery")
        self.battery = batteries[0]
        status = (self.battery / "status").read_text().strip() if (self.battery / "status").exists() else ""
        if status not in ("Discharging", ""):
            raise ReaderUnavailable(f"{self.battery.name} is {status.lower()}: unplug the charger to measure")
        has_power = (self.battery / "power_now").exists()
        if not has_power and not ((self.battery / "current_now").exists() and (self.battery / "voltage_now").exists()):
            raise ReaderUnavailable(f"{self.battery} has neither power_now nor current_now and voltage_now")
        self.detail = f"{self.battery.name} {'power_now' if has_power else 'current_now x voltage_now'}"
        self.power_w()

    def power_w(self) -> float:
        b = self.battery
        if (b / "power_now").exists():
            return abs(read_int(b / "power_now")) / 1e6
        # Android kernels differ in the sign of current_now (negative when discharging on many)
        return abs(read_int(b / "current_now")) * read_int(b / "voltage_now") / 1e12


PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-0-9.]+)[AV]\s*$")


@register_reader("rpi_pmic")
class RpiPmicReader(PowerReader):
    """Raspberry Pi 5 PMIC: `vcgencmd pmic_read_adc` gives each rail's current (X_A) and voltage (X_V);
    power is the sum of their products over the rails that have both."""
    kind = "sampler"

    def __init__(self, run: Callable[[], str] | None = None):
        self.run = run or (lambda: run_command(["vcgencmd", "pmic_read_adc"]))
        rails = self.rails()
        if not rails:
            raise ReaderUnavailable("vcgencmd pmic_read_adc printed no rail with both current and voltage")
        self.detail = f"{len(rails)} PMIC rails"

    def rails(self) -> dict[str, float]:
        amps, volts = {}, {}
        for line in self.run().splitlines():
            m = PMIC_LINE.match(line)
            if m:
                (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
        return {r: amps[r] * volts[r] for r in amps if r in volts}

    def power_w(self) -> float:
        return sum(self.rails().values())


@register_reader("powermetrics")
class PowermetricsReader(PowerReader):
    """macOS `powermetrics --samplers cpu_power,gpu_power` (root): the plist's processor.combined_power (mW),
    or, from text output, the "Combined Power (CPU + GPU + ANE)" line (older: CPU + GPU + ANE lines)."""
    kind = "sampler"
    ARGS = ["powermetrics", "--samplers", "cpu_power,gpu_power", "-i", "200", "-n", "1", "-f", "plist"]

    def __init__(self, run: Callable[[], str | bytes] | None = None):
        self.run = run or (lambda: subprocess.run(self.ARGS, capture_output=True, timeout=5).stdout)
        try:
            self.power_w()
        except ReaderUnavailable:
            raise
        except Exception as e:
            raise ReaderUnavailable(f"powermetrics: {e}") from None
        self.detail = "CPU+GPU+ANE"

    def power_w(self) -> float:
        out = self.run()
        if isinstance(out, str):
            out = out.encode()
        return parse_powermetrics(out)


def parse_powermetrics(out: bytes) -> float:
    """Watts from one powermetrics sample, plist (NUL-separated documents) or text."""
    docs = [d.strip() for d in out.split(b"\0") if d.strip()]
    if docs and docs[-1].startswith(b"<?xml"):
        p = plistlib.loads(docs[-1]).get("processor", {})
        if "combined_power" in p:
            return p["combined_power"] / 1e3
        return sum(p.get(k, 0.0) for k in ("cpu_power", "gpu_power", "ane_power")) / 1e3
    text = out.decode(errors="replace")
    m = re.search(r"Combined Power \(CPU \+ GPU \+ ANE\):\s*([0-9.]+)\s*mW", text)
    if m:
        return float(m.group(1)) / 1e3
    parts = {}  # the first of each (the GPU section repeats "GPU Power")
    for unit, mw in re.findall(r"^(CPU|GPU|ANE) Power:\s*([0-9.]+)\s*mW", text, re.M):
        parts.setdefault(unit, float(mw))
    if not parts:
        raise ReaderUnavailable("powermetrics printed no power figure (it needs root: sudo)")
    return sum(parts.values()) / 1e3


def integrate(samples: list[tuple[float, float]]) -> float:
    """Joules from (seconds, watts) samples, trapezoid rule."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:]))


def detect(order: tuple[str, ...] = ("rapl", "nvml", "rpi_pmic", "powermetrics", "power_supply"),
           **kwargs_by_name) -> tuple[PowerReader | None, dict[str, str]]:
    """The first reader that works; reasons for the others. kwargs_by_name: e.g. rapl={"root": ...}."""
    reasons = {}
    for name in order:
        try:
            return READERS[name](**kwargs_by_name.get(name, {})), reasons
        except ReaderUnavailable as e:
            reasons[name] = str(e)
    return None, reasons
