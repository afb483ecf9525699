"""llama.cpp's CPU variants: the one loaded is one this CPU has the instructions for, the most basic one gives
the same answers, a variant that crashes is ruled out by the child-process probe, bad choices are refused."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgechat.core.errors import EdgechatError
from edgechat.core.gguf_file import read_header
from runtimes import cpu_variants

PROMPT = "Once upon a time, there was a little"
GREEDY = 16
# the same fixed-prompt logits and greedy ids, in whatever process runs it
RUN = """
import json, sys
import numpy as np
from runtimes.llama_cpp_engine import LlamaCppEngine
e = LlamaCppEngine(sys.argv[1], n_ctx=128, threads=2)
ids = e.tokenize(%r, add_bos=e.add_bos)
logits = e.forward(ids, 0)
first, out = logits.copy(), []
for i in range(%d):
    out.append(int(logits.argmax()))
    logits = e.forward([out[-1]], len(ids) + i)
print(json.dumps({"logits": first.tolist(), "greedy": out, "backend": e.describe()["cpu_backend"]}))
""" % (PROMPT, GREEDY)


def cpuinfo_flags() -> set[str]:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            flags.update(line.split(":", 1)[1].split())
    return flags


def run(model: Path, **env) -> dict:
    p = subprocess.run([sys.executable, "-c", RUN, str(model)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def best(stories_f32_gguf):
    return run(stories_f32_gguf)


def test_the_loaded_variant_uses_only_instructions_this_cpu_has(best):
    b = best["backend"]
    assert b["variant"] != "built-in", "llama-cpp-python was not built with GGML_BACKEND_DL (see the Makefile)"
    isa = [f for f in b["features"] if f in cpu_variants.CPUINFO_FLAG]
    assert "SSE3" in isa or "NEON" in isa, b  # the features were read from the loaded backend itself
    missing = [f for f in isa if cpu_variants.CPUINFO_FLAG[f] not in cpuinfo_flags()]
    assert not missing, f"{b['variant']} uses {missing}, which /proc/cpuinfo does not list"
    assert b["label"].startswith(b["variant"] + " (")


def test_the_best_ranked_variant_that_runs_is_chosen(best):
    b = best["backend"]
    scores = cpu_variants.Cache(cpu_variants.variants(cpu_variants.lib_dir())).data["scores"]
    usable = {n: s for n, s in scores.items() if s > 0 and n not in b["rejected"]}
    assert b["score"] == max(usable.values()), (b, scores)


def test_the_most_basic_variant_gives_the_same_greedy_ids_and_logits(best, stories_f32_gguf):
    basic = run(stories_f32_gguf, **{cpu_variants.ENV: "x64"})
    assert basic["backend"]["variant"] == "x64" and basic["backend"]["how"] == "forced"
    assert basic["greedy"] == best["greedy"]
    diff = np.abs(np.array(basic["logits"]) - np.array(best["logits"])).max()
    assert diff < 1e-3, f"F32 logits differ by {diff} between x64 and {best['backend']['variant']}"


def test_forcing_an_unknown_variant_is_refused(stories_f32_gguf, monkeypatch):
    monkeypatch.setenv(cpu_variants.ENV, "pentium")
    with pytest.raises(EdgechatError, match=r"^EDGECHAT_CPU_VARIANT=pentium: no such llama.cpp CPU variant; "
                                            r"this build has .*x64"):
        cpu_variants.for_model(stories_f32_gguf, cpu_variants.tensor_types(read_header(stories_f32_gguf)))


def test_forcing_a_variant_the_cpu_cannot_run_is_refused(stories_f32_gguf, monkeypatch):
    libs = cpu_variants.variants(cpu_variants.lib_dir())
    scores = cpu_variants.scores(libs, cpu_variants.Cache(libs))
    lacking = sorted(n for n, s in scores.items() if s == 0)
    if not lacking:
        pytest.skip("this CPU runs every variant of the build")
    monkeypatch.setenv(cpu_variants.ENV, lacking[0])
    with pytest.raises(EdgechatError) as e:
        cpu_variants.for_model(stories_f32_gguf, cpu_variants.tensor_types(read_header(stories_f32_gguf)))
    assert str(e.value) == f"EDGECHAT_CPU_VARIANT={lacking[0]}: that variant needs instructions this CPU does not have"


FAULTY = r"""
int ggml_backend_score(void) { return 1 << 30; }      /* ranks above every real variant */
void *ggml_backend_init(void) { __builtin_trap(); }    /* and dies (SIGILL) as soon as ggml loads it */
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build the faulting variant")
def test_a_variant_that_crashes_is_ruled_out_and_remembered(stories_f32_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECHAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(cpu_variants.ENV, raising=False)
    libs = tmp_path / "lib"
    libs.mkdir()
    real = cpu_variants.variants(cpu_variants.lib_dir())
    for name in ("x64", "sse42"):
        (libs / real[name].name).symlink_to(real[name])
    (tmp_path / "faulty.c").write_text(FAULTY)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(libs / "libggml-cpu-faulty.so"), str(tmp_path / "faulty.c")],
                   check=True)
    types = {"F32"}
    first = cpu_variants.choose(libs, stories_f32_gguf, types)
    assert (first.variant, first.how) == ("sse42", "probed")
    assert first.rejected == {"faulty": "killed by SIGILL running stories-f32.gguf"}
    again = cpu_variants.choose(libs, stories_f32_gguf, types)
    assert (again.variant, again.how, again.rejected) == ("sse42", "cached", first.rejected)


class FakeProbes:
    """Stands in for the probe child: ggml's scores, and per (variant, model file) an exit status and answer."""

    def __init__(self, scores: dict[str, int], runs: dict[tuple[str, str], tuple]):
        self.scores, self.runs, self.calls = scores, runs, []

    def __call__(self, args, timeout):
        if args[0] == "scores":
            return 0, self.scores
        variant, model = Path(args[1]).name[len(cpu_variants.PREFIX):-3], Path(args[2]).name
        self.calls.append((variant, model))
        return self.runs[(variant, model)]


@pytest.fixture
def fake_libs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECHAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(cpu_variants.ENV, raising=False)
    libs = tmp_path / "lib"
    libs.mkdir()
    for name in ("amx", "avx512", "x64"):
        (libs / f"{cpu_variants.PREFIX}{name}.so").write_bytes(b"")
    return libs


AMX_OK = (0, {"ok": True, "features": ["AVX2", "AVX512", "AMX_INT8"]})
PLAIN_OK = (0, {"ok": True, "features": ["AVX2", "AVX512"]})
SIGILL = (-4, {})


def test_an_amx_variant_probed_only_on_f32_is_passed_over_until_an_amx_type_runs(fake_libs, tmp_path, monkeypatch):
    # what a VM that reports AMX but faults on a tile load did to the suite: the F32 probe passed, the next
    # model (Q8_0, AMX kernels) killed the process
    probes = FakeProbes({"amx": 100, "avx512": 10, "x64": 1},
                        {("amx", "f32.gguf"): AMX_OK, ("avx512", "f32.gguf"): PLAIN_OK, ("amx", "q8.gguf"): AMX_OK})
    monkeypatch.setattr(cpu_variants, "_child", probes)
    f32, q8 = tmp_path / "f32.gguf", tmp_path / "q8.gguf"
    first = cpu_variants.choose(fake_libs, f32, {"F32"})
    assert (first.variant, first.how, first.rejected) == ("avx512", "probed", {"amx": cpu_variants.AMX_UNPROVEN})
    again = cpu_variants.choose(fake_libs, f32, {"F32"})
    assert (again.variant, again.how) == ("avx512", "cached")
    assert probes.calls == [("amx", "f32.gguf"), ("avx512", "f32.gguf")]
    quantized = cpu_variants.choose(fake_libs, q8, {"F32", "Q8_0"})  # AMX really runs here: now it is the best
    assert (quantized.variant, quantized.how, quantized.rejected) == ("amx", "probed", {})
    assert cpu_variants.choose(fake_libs, f32, {"F32"}).variant == "amx"


def test_a_later_model_that_crashes_the_loaded_variant_is_refused_not_fatal(fake_libs, tmp_path, monkeypatch):
    probes = FakeProbes({"amx": 100, "avx512": 10, "x64": 1},
                        {("amx", "f32.gguf"): AMX_OK, ("amx", "q8.gguf"): SIGILL, ("x64", "q8.gguf"): PLAIN_OK})
    monkeypatch.setattr(cpu_variants, "_child", probes)
    loaded = cpu_variants.Choice("amx", str(fake_libs / "libggml-cpu-amx.so"), "forced")
    f32, q8 = tmp_path / "f32.gguf", tmp_path / "q8.gguf"
    cpu_variants.confirm(fake_libs, loaded, f32, {"F32"})  # the types it has not run yet are probed, and pass
    with pytest.raises(EdgechatError) as e:
        cpu_variants.confirm(fake_libs, loaded, q8, {"F32", "Q8_0"})
    assert str(e.value) == ("llama.cpp's amx CPU variant, loaded in this process for an earlier model, was killed "
                            "by SIGILL running q8.gguf on this host; open q8.gguf in a new process (it will pick "
                            "another variant) or set EDGECHAT_CPU_VARIANT to one that runs it")
    cpu_variants.confirm(fake_libs, loaded, f32, {"F32"})  # known types: no child at all
    assert probes.calls == [("amx", "f32.gguf"), ("amx", "q8.gguf"), ("x64", "q8.gguf")]
    cached = cpu_variants.Cache(cpu_variants.variants(fake_libs)).entry("amx")
    assert cached["failed"] == "killed by SIGILL running q8.gguf"
