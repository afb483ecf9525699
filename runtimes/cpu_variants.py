"""Which of llama.cpp's CPU backend variants this host runs: run-time dispatch, made safe.

edgechat's llama.cpp build (Makefile: GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS) carries one CPU backend per
x86 micro-architecture (x64 ... haswell, skylakex, icelake, zen4, sapphirerapids) or per Arm level, each a
libggml-cpu-NAME.so beside libggml. ggml scores each variant by the instructions CPUID reports (0: the CPU
lacks one), but a CPU can report instructions its VM or OS will not run (AMX on a VM without the kernel's
permission: a protection fault on the first batch). So a variant is chosen only after a child process has
run the model with it; a crash, a signal or a hang there rules it out and the next best is tried. What was
learned is cached per host and build ($EDGECHAT_CACHE_DIR/cpu-variants-KEY.json), per set of tensor types.
A variant built with AMX is chosen only once a probe has run one of the types ggml's AMX kernels take (an F32
model never executes a tile instruction, so its probe proves nothing), and a later model with types the
process's variant has not run yet is probed with it first: a crash there becomes an error, not a dead process.

$EDGECHAT_CPU_VARIANT=NAME forces a variant (e.g. x64, the most basic one); one that needs instructions this
CPU lacks is refused."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgechat.core.errors import EdgechatError
from edgechat.core.files import cache_dir, write_text_atomic

ENV = "EDGECHAT_CPU_VARIANT"
PREFIX = "libggml-cpu-"
PROBE_TIMEOUT_S = 180
# ggml's feature names -> /proc/cpuinfo flags (what the CPU says it has); the rest (OPENMP, REPACK, ...) are
# build options, not instructions
CPUINFO_FLAG = {"SSE3": "pni", "SSSE3": "ssse3", "SSE42": "sse4_2", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c",
                "FMA": "fma", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f",
                "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
                "AMX_TILE": "amx_tile", "AMX_INT8": "amx_int8", "AMX_BF16": "amx_bf16",
                "NEON": "asimd", "ARM_FMA": "asimd", "DOTPROD": "asimddp", "MATMUL_INT8": "i8mm", "SVE": "sve",
                "SVE2": "sve2", "SME": "sme", "FP16_VA": "asimdhp"}

IMPLIED = {"SSE3", "SSSE3", "SSE42", "AVX", "F16C", "FMA", "BMI2", "ARM_FMA"}  # come with AVX2 / NEON
# the only types ggml's AMX kernels run (ggml-cpu/amx/common.h qtype_has_amx_kernels); on a VM that reports AMX
# but will not run it, the first of these dies with SIGILL on a tile load
AMX_TYPES = {"Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"}
AMX_UNPROVEN = "its AMX kernels have not run here yet (no model with their types probed)"


@dataclass
class Choice:
    variant: str  # "zen4", "haswell", ...; "built-in" for a build with one CPU backend linked in
    path: str | None  # the variant's library; None when built in
    how: str  # "probed", "cached", "forced" or "linked"
    score: int = 0  # ggml's own ranking (0: the CPU lacks an instruction it needs)
    features: list[str] = field(default_factory=list)  # the instructions the loaded backend uses
    rejected: dict = field(default_factory=dict)  # better-scored variants ruled out on this host, and why

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """e.g. "zen4 (AVX2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16)": the instructions that set it apart."""
        if not self.features:  # not loaded or probed yet
            return f"{self.variant} ({self.how})"
        isa = [f for f in self.features if f in CPUINFO_FLAG and f not in IMPLIED]
        return f"{self.variant} ({' '.join(isa) or 'no SIMD'})"


def lib_dir() -> Path:
    """llama-cpp-python's library folder, found without importing it (inspect stays fast)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        raise EdgechatError("llama-cpp-python is not installed: run `make install`")
    return Path(spec.origin).parent / "lib"


def variants(lib_dir: Path) -> dict[str, Path]:
    return {p.name[len(PREFIX):-3]: p for p in sorted(lib_dir.glob(f"{PREFIX}*.so"))}


def host_key(libs: dict[str, Path]) -> str:
    """This CPU (model and flags) and this build (the variant files' names and sizes): what a probe depends on."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    lines = sorted({ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                    if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")})
    build = [f"{n}:{p.stat().st_size}" for n, p in libs.items()]
    return hashlib.sha256("\n".join(lines + build).encode()).hexdigest()[:16]


def _child(args: list[str], timeout: float) -> tuple[int | str, dict]:
    """Run `python -m runtimes.cpu_probe ARGS`; (exit status or 'hang', its JSON answer)."""
    try:
        p = subprocess.run([sys.executable, "-m", "runtimes.cpu_probe", *args], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, ENV: ""})
    except subprocess.TimeoutExpired:
        return "hang", {}
    try:
        answer = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
    except (json.JSONDecodeError, IndexError):
        answer = {}
    return p.returncode, answer


def failure(status) -> str:
    if status == "hang":
        return f"no answer in {PROBE_TIMEOUT_S} s"
    if isinstance(status, int) and status < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


class Cache:
    def __init__(self, libs: dict[str, Path]):
        self.path = cache_dir() / f"cpu-variants-{host_key(libs)}.json"
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("variants", {})

    def entry(self, name: str) -> dict:
        return self.data["variants"].setdefault(name, {"ok_types": [], "failed": None})

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


def scores(libs: dict[str, Path], cache: Cache) -> dict[str, int]:
    """ggml's score of each variant on this CPU, computed in a child (loading a variant runs its code)."""
    if set(cache.data.get("scores", {})) != set(libs):
        status, answer = _child(["scores", *map(str, libs.values())], timeout=60)
        if status != 0:
            raise EdgechatError(f"could not rank llama.cpp's CPU variants on this host ({failure(status)})")
        cache.data["scores"] = answer
        cache.save()
    return cache.data["scores"]


def tensor_types(header) -> set[str]:
    """The ggml types of a GGUF header's tensors: what a probe has run (edgechat.core.gguf_file.read_header)."""
    return {t for _, t in header.tensors.values()}


def for_model(model: Path, types: set[str], probe: bool = False) -> Choice:
    """The variant this host runs the GGUF `model` (its tensors of `types`) with, without loading llama.cpp here
    (what inspect shows: without `probe`, what is known so far, or the best-ranked variant not yet tried)."""
    libs_at = lib_dir()
    if not variants(libs_at):
        return Choice("built-in", None, "linked")
    return choose(libs_at, model, types, probe=probe)


def basic(libs: dict[str, Path], score: dict[str, int]) -> str:
    return min((n for n in libs if score.get(n, 0) > 0), key=lambda n: score[n])


def unproven(entry: dict) -> bool:
    """A variant built with AMX that no probe on this host has run an AMX-kernel type with."""
    return any(f.startswith("AMX") for f in entry.get("features", [])) and not set(entry["ok_types"]) & AMX_TYPES


def _basic_runs(libs, score, name: str, model: Path) -> bool:
    """Whether the most basic variant, if it is not `name`, runs `model` (so a crash of `name` on it is the
    variant's fault, not the file's)."""
    base = basic(libs, score)
    if base == name:
        return False
    status, answer = _child(["run", str(libs[base]), str(model)], timeout=PROBE_TIMEOUT_S)
    return status == 0 and bool(answer.get("ok"))


def choose(lib_dir: Path, model: Path | None, types: set[str], probe: bool = True) -> Choice:
    """The best variant that this host runs `model` with (types: the ggml types of its tensors)."""
    libs = variants(lib_dir)
    cache = Cache(libs)
    score = scores(libs, cache)
    forced = os.environ.get(ENV, "").strip()
    if forced:
        if forced not in libs:
            raise EdgechatError(f"{ENV}={forced}: no such llama.cpp CPU variant; this build has "
                                f"{', '.join(libs)}")
        if not score.get(forced):
            raise EdgechatError(f"{ENV}={forced}: that variant needs instructions this CPU does not have")
        return Choice(forced, str(libs[forced]), "forced", score[forced])
    rejected, most_basic = {}, basic(libs, score)
    for name in sorted((n for n in libs if score.get(n, 0) > 0), key=lambda n: -score[n]):
        e = cache.entry(name)
        if e["failed"]:
            rejected[name] = e["failed"]
            continue
        if e["ok_types"] and (model is None or types <= set(e["ok_types"])):
            if not unproven(e):
                return Choice(name, str(libs[name]), "cached", score[name], e.get("features", []), rejected)
            rejected[name] = AMX_UNPROVEN  # this model has no AMX types either: a later one might
            continue
        if model is None:
            continue
        if not probe:
            return Choice(name, str(libs[name]), "not yet probed", score[name], rejected=rejected)
        status, answer = _child(["run", str(libs[name]), str(model)], timeout=PROBE_TIMEOUT_S)
        if status == 0 and answer.get("ok"):
            e["ok_types"] = sorted(set(e["ok_types"]) | types)
            e["features"] = answer.get("features", [])
            cache.save()
            if unproven(e):
                rejected[name] = AMX_UNPROVEN
                continue
            return Choice(name, str(libs[name]), "probed", score[name], e["features"], rejected)
        if status == 0 or name == most_basic:
            # llama.cpp refused the file (exit 0, not ok) or even the most basic variant failed: the model is
            # at fault, not the variant; opening it in this process gives llama.cpp's own error
            return Choice(name, str(libs[name]), "unprobed: " + (answer.get("error") or failure(status)),
                          score[name], rejected=rejected)
        if not _basic_runs(libs, score, name, model):  # the file breaks every variant: keep this one's record clean
            return Choice(name, str(libs[name]), f"unprobed: {failure(status)} on every variant", score[name],
                          rejected=rejected)
        e["failed"] = f"{failure(status)} running {model.name}"
        cache.save()
        rejected[name] = e["failed"]
    if model is None:
        raise EdgechatError("no llama.cpp CPU variant is known to run on this host yet: open a model first")
    raise EdgechatError(f"none of llama.cpp's CPU variants runs {model.name} on this host: "
                        + "; ".join(f"{k}: {v}" for k, v in rejected.items()))


def confirm(lib_dir: Path, choice: Choice, model: Path, types: set[str]) -> None:
    """Check, in a child the first time these types come, that the variant this process already loaded runs
    `model` too. ggml cannot swap a loaded backend out, so one that crashes on it is refused with an error
    (and remembered: the next process picks another variant) instead of killing this process."""
    libs = variants(lib_dir)
    cache = Cache(libs)
    e = cache.entry(choice.variant)
    if types <= set(e["ok_types"]):
        return
    status, answer = _child(["run", str(libs[choice.variant]), str(model)], timeout=PROBE_TIMEOUT_S)
    if status == 0:  # it ran, or llama.cpp refused the file (opening it here gives llama.cpp's own error)
        if answer.get("ok"):
            e["ok_types"] = sorted(set(e["ok_types"]) | types)
            cache.save()
        return
    if not _basic_runs(libs, scores(libs, cache), choice.variant, model):
        return  # the file breaks every variant: llama.cpp's own error (or crash) is the answer
    e["failed"] = f"{failure(status)} running {model.name}"
    cache.save()
    raise EdgechatError(f"llama.cpp's {choice.variant} CPU variant, loaded in this process for an earlier model, "
                        f"was {e['failed']} on this host; open {model.name} in a new process (it will pick "
                        f"another variant) or set {ENV} to one that runs it")
