"""Device profiles: every one loads with the figures the planner needs, `host` is built from this machine
(and from fixture /proc trees), and a malformed profile is refused naming the file, the key and the reason."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from targets import ProfileError, TargetError, list_profiles, load_profile
from targets.host import host_profile, physical_cores
from targets.profile import BACKENDS, PROFILES_DIR
from tests.conftest import run_cli

FIX = Path(__file__).resolve().parents[1] / "fixtures"
REQUIRED = {"host", "rpi5-8gb", "jetson-orin-nano-8gb", "sd8gen3-phone", "pixel8", "iphone15pro", "m2-laptop",
            "x86-avx2-laptop"}
STATIC = sorted(REQUIRED - {"host"})


def test_the_required_profiles_exist():
    assert REQUIRED <= set(list_profiles())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_profile_loads_with_what_the_planner_needs(name):
    p = load_profile(name, measure=False)
    assert p.name == name
    assert 1 <= p.cpu.threads <= p.cpu.cores
    assert 0 < p.memory.app_budget_gb <= p.memory.total_gb
    assert 0 < p.cpu.bandwidth_gbs <= p.memory.bandwidth_gbs
    assert p.cpu.fp32_gflops > 0 and p.cpu.int8_gops > 0
    assert 0 <= p.power.idle_w <= p.power.cpu_active_w and p.power.per_core_w(p.cpu.threads) > 0
    for a in p.accelerators:
        assert a.kind in ("gpu", "npu") and a.memory_budget_gb >= 0 and a.active_w > 0
        for engine, backends in a.backends.items():
            assert set(backends) <= set(BACKENDS[engine])


FIGURES = {"fp32_gflops", "int8_gops", "dot_gbs", "bandwidth_gbs", "total_gb", "app_budget_gb", "idle_w", "cpu_active_w",
           "memory_budget_gb", "fp16_gflops", "active_w"}


def uncommented_figures(text: str) -> list[str]:
    """Figure lines with neither an inline comment nor a comment earlier in their table."""
    out, commented = [], False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            commented = False
        elif s.startswith("#"):
            commented = True
        elif (m := re.match(r"(\w+)\s*=", s)) and m.group(1) in FIGURES and "#" not in s and not commented:
            out.append(s)
    return out


@pytest.mark.parametrize("name", STATIC)
def test_static_profiles_cite_their_sources(name):
    text = (PROFILES_DIR / f"{name}.toml").read_text()
    assert re.search(r"^# Sources?:", text, re.M), "the header comment names where the figures come from"
    assert uncommented_figures(text) == [], "each figure says where it comes from or how it was derived"


def test_accelerators_and_the_engines_that_reach_them():
    phone = load_profile("sd8gen3-phone")
    assert phone.accelerator("Adreno 750").reached_by("llama.cpp") == ("opencl", "vulkan")
    assert phone.accelerator("Hexagon NPU").reached_by("executorch") == ("qnn",)
    assert not phone.accelerator("Adreno 750").takes("llama.cpp", "q4_k_m")
    iphone = load_profile("iphone15pro")
    assert iphone.accelerator("Neural Engine").reached_by("executorch") == ("coreml",)
    assert iphone.accelerator("Neural Engine").reached_by("llama.cpp") == ()
    assert iphone.accelerator("A17 Pro GPU").reached_by("llama.cpp") == ("metal",)
    assert load_profile("m2-laptop").accelerator("M2 GPU").reached_by("executorch") == ("mps",)
    assert load_profile("jetson-orin-nano-8gb").accelerator("Ampere GPU").reached_by("llama.cpp")[0] == "cuda"
    assert load_profile("pixel8").accelerator("Tensor G3 TPU").backends == {}
    assert load_profile("rpi5-8gb").accelerator("VideoCore VII").reached_by("llama.cpp") == ("vulkan",)
    with pytest.raises(TargetError, match="no accelerator"):
        phone.accelerator("TPU")


def test_host_is_this_machine():
    p = load_profile("host", measure=False)
    assert p.cpu.cores == len(os.sched_getaffinity(0)) and p.cpu.threads == physical_cores() <= p.cpu.cores
    assert p.power.assumed
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    assert p.memory.total_gb == pytest.approx(total_kb * 1024 / 1e9)


def test_host_measures_bandwidth_and_compute():
    p = load_profile("host", threads=1)
    assert p.cpu.threads == 1
    assert p.cpu.bandwidth_gbs > 0 and p.cpu.fp32_gflops > 0
    assert "numpy" in p.measured["bandwidth_gbs"]["method"]


HT_CPUINFO = "".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i % 2}\nflags\t\t: fpu avx2\n\n"
                     for i in range(4))  # two cores, each with two hyper-threads (CPUs 0 and 2 share core 0)


def test_threads_are_physical_cores_not_hyper_threads(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(HT_CPUINFO)
    assert physical_cores(tmp_path, cpus={0, 1, 2, 3}) == 2
    assert physical_cores(tmp_path, cpus={0, 2}) == 1  # siblings: one core
    assert physical_cores(tmp_path, cpus={0, 1}) == 2
    assert physical_cores(FIX / "host" / "aarch64", cpus={0, 1, 2, 3}) == 4  # no topology lines: one per CPU


def test_host_from_an_arm_proc_tree():
    p = host_profile(measure=False, root=str(FIX / "host" / "aarch64"))
    assert p.cpu.name == "Raspberry Pi 5 Model B Rev 1.0"
    assert {"asimd", "asimddp", "asimdhp"} <= set(p.cpu.isa) and "avx2" not in p.cpu.isa
    assert p.memory.total_gb == pytest.approx(8245072 * 1024 / 1e9)
    assert p.memory.app_budget_gb == pytest.approx(7480112 * 1024 / 1e9 * 0.9)
    assert p.cpu.int8_gops == pytest.approx(4 * p.cpu.fp32_gflops)  # the dot-product extension


def test_unknown_target():
    with pytest.raises(TargetError, match="unknown target 'pi6'.*rpi5-8gb"):
        load_profile("pi6")


# -- malformed profiles -------------------------------------------------------------------------------
def write_variant(tmp_path, name: str, edit) -> Path:
    text = (PROFILES_DIR / "rpi5-8gb.toml").read_text().replace('name = "rpi5-8gb"', f'name = "{name}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(edit(text))
    return path


BAD = [
    ("missing-key", lambda t: t.replace("cores = 4\n", ""), "cpu.cores", "missing"),
    ("wrong-type", lambda t: t.replace("cores = 4\n", 'cores = "four"\n'), "cpu.cores", "must be an integer"),
    ("negative", lambda t: t.replace("bandwidth_gbs = 17.1", "bandwidth_gbs = -3"), "memory.bandwidth_gbs", "must be > 0"),
    ("typo", lambda t: t.replace("threads = 4\n", "threads = 4\ncorez = 4\n"), "cpu.corez", "unknown key"),
    ("backend", lambda t: t.replace('["vulkan"]', '["metal", "cuda", "directml"]'), "accelerator[0].backends.llama.cpp",
     "unknown llama.cpp backend 'directml' (one of cpu, metal"),
    ("threads", lambda t: t.replace("threads = 4\n", "threads = 8\n"), "cpu.threads", "at most cpu.cores"),
    ("budget", lambda t: t.replace("app_budget_gb = 6.5", "app_budget_gb = 9"), "memory.app_budget_gb",
     "at most memory.total_gb"),
    ("kind", lambda t: t.replace('kind = "gpu"', 'kind = "fpga"'), "accelerator[0].kind", "must be one of gpu, npu"),
    ("power", lambda t: t.replace("cpu_active_w = 7.0", "cpu_active_w = 1.0"), "power.cpu_active_w", "at least power.idle_w"),
]


@pytest.mark.parametrize("name,edit,key,reason", BAD, ids=[b[0] for b in BAD])
def test_malformed_profile_is_refused_with_file_key_and_reason(tmp_path, name, edit, key, reason):
    path = write_variant(tmp_path, name, edit)
    with pytest.raises(ProfileError) as e:
        load_profile(str(path))
    assert e.value.path == str(path) and e.value.key == key and reason in e.value.reason
    assert str(e.value).startswith(f"{path}: key '{key}': ")


def test_invalid_toml_names_the_line(tmp_path):
    path = write_variant(tmp_path, "syntax", lambda t: t.replace("cores = 4", "cores = = 4"))
    with pytest.raises(ProfileError, match=rf"{re.escape(str(path))}: not valid TOML: .*line \d+"):
        load_profile(str(path))


def test_name_must_match_the_file(tmp_path):
    path = write_variant(tmp_path, "renamed", lambda t: t.replace('name = "renamed"', 'name = "other"'))
    with pytest.raises(ProfileError, match="key 'name': must match the file name 'renamed'"):
        load_profile(str(path))


def test_extra_profile_directories(tmp_path, monkeypatch):
    write_variant(tmp_path, "my-board", lambda t: t)
    monkeypatch.setenv("EDGECHAT_TARGETS_PATH", str(tmp_path))
    assert "my-board" in list_profiles()
    assert load_profile("my-board").cpu.cores == 4


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_targets_list_and_show():
    out = run_cli("targets", "list", "--json", check=True)
    names = {p["name"] for p in json.loads(out.stdout)}
    assert REQUIRED <= names
    shown = json.loads(run_cli("targets", "show", "sd8gen3-phone", "--json", check=True).stdout)
    assert shown["cpu"]["threads"] == 6 and [a["name"] for a in shown["accelerators"]] == ["Adreno 750", "Hexagon NPU"]
    table = run_cli("targets", check=True).stdout
    assert "rpi5-8gb" in table and "iphone15pro" in table


def test_cli_refuses_a_malformed_profile_in_one_line(tmp_path):
    path = write_variant(tmp_path, "bad", lambda t: t.replace("cores = 4\n", ""))
    out = run_cli("targets", "show", str(path))
    assert out.returncode == 2
    assert out.stderr.strip() == f"edgechat: error: {path}: key 'cpu.cores': missing"
