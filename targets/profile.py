"""Device profiles: TOML files under targets/profiles/ (or a path, or $EDGECHAT_TARGETS_PATH), validated key by
key into frozen dataclasses. A malformed profile is refused with its file, the key and the reason."""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from targets.errors import ProfileError, TargetError

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
GB = 1e9
# engine -> the backends it has, per device kind ("cpu" is llama.cpp's own CPU backend)
BACKENDS = {"llama.cpp": ("cpu", "metal", "vulkan", "opencl", "cuda", "hexagon"),
            "executorch": ("xnnpack", "vulkan", "qnn", "coreml", "mps")}
KINDS = ("sbc", "devkit", "phone", "laptop", "host")


@dataclass(frozen=True)
class CPU:
    name: str
    cores: int
    threads: int  # threads an app should use (llama.cpp: the big cores)
    isa: tuple[str, ...]
    fp32_gflops: float  # all `threads` cores, what a good SGEMM reaches
    int8_gops: float  # all `threads` cores, int8 dot-product kernels (quantized matmul), ops/s / 1e9
    bandwidth_gbs: float  # DRAM read bandwidth the CPU cluster reaches (often below the memory's peak)
    dot_gbs: float = 0.0  # GB/s of quantized weights the decode dot-product kernels get through (data in cache)
    op_overhead_us: float = 2.0  # per graph node per token: thread hand-off between ops
    token_overhead_us: float = 300.0  # per token: graph build, sampling, detokenization


@dataclass(frozen=True)
class Memory:
    total_gb: float
    app_budget_gb: float  # what one app may keep resident before the OS kills or swaps it
    bandwidth_gbs: float  # peak of the memory bus
    type: str = ""


@dataclass(frozen=True)
class Power:
    idle_w: float  # whole device, idle
    cpu_active_w: float  # whole device, `threads` cores busy
    assumed: bool = False  # true where the figures are generic assumptions, not published for this device

    def per_core_w(self, cores: int) -> float:
        """Active power above idle per busy core: the estimate multiplies it by process CPU time."""
        return max(self.cpu_active_w - self.idle_w, 0.0) / max(cores, 1)


@dataclass(frozen=True)
class Accelerator:
    name: str
    kind: str  # "gpu" or "npu"
    memory_budget_gb: float  # what the driver lets one app place there
    bandwidth_gbs: float
    int8_gops: float  # matmul throughput on quantized weights, what the backends reach (not the peak)
    fp16_gflops: float
    active_w: float  # whole device while this accelerator runs the model
    backends: dict = field(default_factory=dict)  # engine -> tuple of backend names that reach it
    quants: dict = field(default_factory=dict)  # engine -> quants its kernels take (absent: all)
    shared_memory: bool = True  # unified memory: its budget also counts against the app budget
    op_overhead_us: float = 10.0  # per graph node per token: kernel launch
    sync_overhead_ms: float = 0.3  # per hand-off between it and the CPU, per token

    def reached_by(self, engine: str) -> tuple[str, ...]:
        return tuple(self.backends.get(engine, ()))

    def takes(self, engine: str, quant: str) -> bool:
        allowed = self.quants.get(engine)
        return allowed is None or quant in allowed


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    kind: str
    cpu: CPU
    memory: Memory
    power: Power
    accelerators: tuple[Accelerator, ...] = ()
    path: str = ""
    measured: dict = field(default_factory=dict)  # host: what was measured at run time, and how

    def to_dict(self) -> dict:
        return asdict(self)

    def accelerator(self, name: str) -> Accelerator:
        for a in self.accelerators:
            if a.name == name:
                return a
        raise TargetError(f"target {self.name} has no accelerator {name!r}")


# -- validation ---------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, path):
        self.path = path

    def fail(self, key, reason):
        raise ProfileError(self.path, key, reason)

    def table(self, data, key, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(data, dict):
            self.fail(key, f"must be a table, got {type(data).__name__}")
        for k in data:
            if k not in allowed:
                self.fail(f"{key}.{k}" if key else k, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in sorted(required):
            if k not in data:
                self.fail(f"{key}.{k}" if key else k, "missing")
        return data

    def number(self, data, key, name, minimum=0.0, default=None, strict=True, integer=False) -> float:
        full = f"{key}.{name}"
        if name not in data:
            if default is None:
                self.fail(full, "missing")
            return default
        v = data[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            self.fail(full, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if v < minimum or (strict and v == minimum):
            self.fail(full, f"must be {'>' if strict else '>='} {minimum:g}, got {v!r}")
        return v

    def string(self, data, key, name, choices=None, default=None) -> str:
        full = f"{key}.{name}" if key else name
        v = data.get(name, default)
        if not isinstance(v, str) or not v:
            self.fail(full, f"must be a non-empty string, got {v!r}")
        if choices and v not in choices:
            self.fail(full, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def strings(self, data, key, name, choices=None, what="value") -> tuple[str, ...]:
        v = data.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.fail(f"{key}.{name}", f"must be a list of strings, got {v!r}")
        for x in v:
            if choices and x not in choices:
                self.fail(f"{key}.{name}", f"unknown {what} {x!r} (one of {', '.join(choices)})")
        return tuple(v)


def _cpu(c: _Checker, d: dict, mem_bw: float) -> CPU:
    c.table(d, "cpu", {"name", "cores", "threads", "isa", "fp32_gflops", "int8_gops", "bandwidth_gbs", "dot_gbs",
                       "op_overhead_us", "token_overhead_us"},
            {"cores", "threads", "fp32_gflops", "int8_gops", "dot_gbs"})
    cores = int(c.number(d, "cpu", "cores", integer=True))
    threads = int(c.number(d, "cpu", "threads", integer=True))
    if threads > cores:
        c.fail("cpu.threads", f"must be at most cpu.cores ({cores}), got {threads}")
    bw = c.number(d, "cpu", "bandwidth_gbs", default=mem_bw)
    if bw > mem_bw:
        c.fail("cpu.bandwidth_gbs", f"must be at most memory.bandwidth_gbs ({mem_bw:g}), got {bw:g}")
    return CPU(name=c.string(d, "cpu", "name", default="cpu"), cores=cores, threads=threads,
               isa=c.strings(d, "cpu", "isa"), fp32_gflops=c.number(d, "cpu", "fp32_gflops"),
               int8_gops=c.number(d, "cpu", "int8_gops"), bandwidth_gbs=bw, dot_gbs=c.number(d, "cpu", "dot_gbs"),
               op_overhead_us=c.number(d, "cpu", "op_overhead_us", default=2.0, strict=False),
               token_overhead_us=c.number(d, "cpu", "token_overhead_us", default=300.0, strict=False))


def _memory(c: _Checker, d: dict) -> Memory:
    c.table(d, "memory", {"total_gb", "app_budget_gb", "bandwidth_gbs", "type"},
            {"total_gb", "app_budget_gb", "bandwidth_gbs"})
    total = c.number(d, "memory", "total_gb")
    budget = c.number(d, "memory", "app_budget_gb")
    if budget > total:
        c.fail("memory.app_budget_gb", f"must be at most memory.total_gb ({total:g}), got {budget:g}")
    return Memory(total, budget, c.number(d, "memory", "bandwidth_gbs"), d.get("type", ""))


def _power(c: _Checker, d: dict) -> Power:
    c.table(d, "power", {"idle_w", "cpu_active_w", "assumed"}, {"idle_w", "cpu_active_w"})
    idle = c.number(d, "power", "idle_w", strict=False)
    active = c.number(d, "power", "cpu_active_w")
    if active < idle:
        c.fail("power.cpu_active_w", f"must be at least power.idle_w ({idle:g}), got {active:g}")
    assumed = d.get("assumed", False)
    if not isinstance(assumed, bool):
        c.fail("power.assumed", f"must be true or false, got {assumed!r}")
    return Power(idle, active, assumed)


def _accelerator(c: _Checker, d: dict, i: int, memory: Memory) -> Accelerator:
    key = f"accelerator[{i}]"
    c.table(d, key, {"name", "kind", "memory_budget_gb", "bandwidth_gbs", "int8_gops", "fp16_gflops", "active_w",
                     "backends", "quants", "shared_memory", "op_overhead_us", "sync_overhead_ms"},
            {"name", "kind", "memory_budget_gb", "bandwidth_gbs", "int8_gops", "fp16_gflops", "active_w"})
    backends = c.table(d.get("backends", {}), f"{key}.backends", set(BACKENDS), set())
    quants = c.table(d.get("quants", {}), f"{key}.quants", set(BACKENDS), set())
    shared = d.get("shared_memory", True)
    if not isinstance(shared, bool):
        c.fail(f"{key}.shared_memory", f"must be true or false, got {shared!r}")
    budget = c.number(d, key, "memory_budget_gb", strict=False)
    if shared and budget > memory.app_budget_gb:
        c.fail(f"{key}.memory_budget_gb", f"shared memory: must be at most memory.app_budget_gb "
                                          f"({memory.app_budget_gb:g}), got {budget:g}")
    return Accelerator(
        name=c.string(d, key, "name"), kind=c.string(d, key, "kind", choices=("gpu", "npu")),
        memory_budget_gb=budget, bandwidth_gbs=c.number(d, key, "bandwidth_gbs"),
        int8_gops=c.number(d, key, "int8_gops"), fp16_gflops=c.number(d, key, "fp16_gflops"),
        active_w=c.number(d, key, "active_w"),
        backends={e: c.strings(backends, f"{key}.backends", e, BACKENDS[e], f"{e} backend") for e in backends},
        quants={e: c.strings(quants, f"{key}.quants", e) for e in quants}, shared_memory=shared,
        op_overhead_us=c.number(d, key, "op_overhead_us", default=10.0, strict=False),
        sync_overhead_ms=c.number(d, key, "sync_overhead_ms", default=0.3, strict=False))


def parse_profile(data: dict, path) -> Profile:
    c = _Checker(path)
    c.table(data, "", {"name", "description", "kind", "cpu", "memory", "power", "accelerator"},
            {"name", "description", "kind", "cpu", "memory", "power"})
    memory = _memory(c, data["memory"])
    accs = data.get("accelerator", [])
    if not isinstance(accs, list):
        c.fail("accelerator", "must be an array of tables ([[accelerator]])")
    accelerators = tuple(_accelerator(c, a, i, memory) for i, a in enumerate(accs))
    names = [a.name for a in accelerators]
    if len(set(names)) != len(names):
        c.fail("accelerator", f"duplicate accelerator names: {names}")
    return Profile(name=c.string(data, "", "name"), description=c.string(data, "", "description"),
                   kind=c.string(data, "", "kind", choices=KINDS), cpu=_cpu(c, data["cpu"], memory.bandwidth_gbs),
                   memory=memory, power=_power(c, data["power"]), accelerators=accelerators, path=str(path))


def read_profile_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(path, None, f"not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ProfileError(path, None, f"not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ProfileError(path, None, f"cannot read: {e.strerror or e}") from None
    profile = parse_profile(data, path)
    if profile.name != Path(path).stem:
        raise ProfileError(path, "name", f"must match the file name {Path(path).stem!r}, got {profile.name!r}")
    return profile
