"""`edgechat profile` on real artifacts (stories260K converted to Q8_0 and Q4_0): every output written, the
artifacts interleaved, the PNG a real image, the machine's load recorded; prompts from files and MT-Bench."""
from __future__ import annotations

import csv
import json

import pytest

from edgechat.probes.machine_load import LoadMonitor
from edgechat.app.profiling import read_prompts
from tests.conftest import DATA, run_cli


@pytest.fixture(scope="session")
def two_artifacts(stories_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "stories"
    run_cli("convert", str(stories_dir), "-o", str(out), "--quant", "q8_0", "--quant", "q4_0", "--no-eval", check=True)
    arts = sorted(out.glob("*.gguf"))
    assert [a.name for a in arts] == ["stories260k-q4_0.gguf", "stories260k-q8_0.gguf"]
    return arts


@pytest.fixture(scope="session")
def profiled(two_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "run"
    proc = run_cli("profile", *map(str, two_artifacts), "--runs", "2", "--max-tokens", "12", "--threads", "1",
                   "--power", "estimate", "-o", str(out), check=True)
    return out, proc


def test_profile_writes_all_outputs(profiled):
    out, proc = profiled
    assert sorted(p.name for p in out.iterdir()) == ["profile.csv", "profile.json", "profile.md", "profile.png"]
    assert "profile on host: 2 runs x 4 conversations" in proc.stdout and "stories260k-q8_0" in proc.stdout


def test_profile_png_opens_as_an_image(profiled):
    from PIL import Image

    with Image.open(profiled[0] / "profile.png") as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300
        im.load()


def test_profile_json_has_every_reply_interleaved(profiled):
    d = json.loads((profiled[0] / "profile.json").read_text())
    assert d["runs"] == 2 and d["conversations"] == 4 and d["threads"] == 1
    names = [r["artifact"] for r in d["results"]]
    assert names == ["stories260k-q4_0.gguf", "stories260k-q8_0.gguf"]
    for r in d["results"]:
        assert r["replies"] == 8 and r["format"] == "gguf" and r["params"] > 200_000
        assert r["decode_tok_s"]["n"] == 8 and r["decode_tok_s"]["mean"] > 0 and r["decode_tok_s"]["sd"] >= 0
        assert r["prefill_tok_s"]["mean"] > 0 and r["ttft_s"]["mean"] > 0 and r["peak_rss_mb"] > 0
        assert r["energy_source"].startswith("estimated:") and r["j_per_token"]["mean"] > 0
        assert r["estimate"]["decode_tok_s"] > 0 and r["estimate"]["target"] == "host"
        assert r["load_s"] > 0 and r["bytes"] > 0
        # the llama.cpp CPU variant that ran it, by name in the engine column, whole in cpu_backend
        variant = r["cpu_backend"].split(" (")[0]
        assert r["engine"] == f"llama.cpp/{variant}" and r["engine_threads"] == 1
    first_of_each_run = [next(s["artifact"] for s in d["samples"] if s["run"] == run).split("/")[-1] for run in (0, 1)]
    assert first_of_each_run == names  # the order rotates between runs
    m = d["machine"]
    assert len(m["loadavg_start"]) == 3 and m["cores"] >= 1 and isinstance(m["busy"], bool)
    assert (m["warning"] is None) == (not m["busy"])


def test_profile_csv_and_markdown(profiled):
    rows = list(csv.DictReader((profiled[0] / "profile.csv").open()))
    assert [r["artifact"] for r in rows] == ["stories260k-q4_0.gguf", "stories260k-q8_0.gguf"]
    assert float(rows[1]["tg_tok_s_mean"]) > 0 and float(rows[1]["peak_rss_mb"]) > 0 and rows[1]["quant"] == "q8_0"
    md = (profiled[0] / "profile.md").read_text()
    assert "| artifact | size | params | engine | threads | pp t/s | tg t/s |" in md
    assert f"| {rows[0]['engine']} | 1 |" in md and rows[0]["engine"].startswith("llama.cpp/")
    assert " ± " in md and "Machine load: load average" in md and "Energy: estimated:" in md


def test_prompts_from_text_jsonl_and_mtbench(tmp_path, monkeypatch):
    (tmp_path / "p.txt").write_text("Hello there\n\nHow are you?\n")
    assert read_prompts(str(tmp_path / "p.txt"))[0] == [["Hello there"], ["How are you?"]]
    (tmp_path / "p.jsonl").write_text('{"turns": ["a", "b"]}\n{"prompt": "c"}\n')
    assert read_prompts(str(tmp_path / "p.jsonl"), max_prompts=5)[0] == [["a", "b"], ["c"]]
    mt = DATA / "mt_bench" / "mt_bench_question.jsonl"
    if not mt.exists():
        pytest.skip(f"{mt} is absent (../shared/data is not beside this checkout)")
    monkeypatch.setenv("EDGECHAT_MTBENCH", str(mt))
    convs, source = read_prompts("mtbench", max_prompts=3)
    assert source == "mtbench" and len(convs) == 3 and all(len(c) == 2 for c in convs)


def test_profile_mtbench_two_turns(two_artifacts, tmp_path):
    mt = DATA / "mt_bench" / "mt_bench_question.jsonl"
    if not mt.exists():
        pytest.skip(f"{mt} is absent")
    proc = run_cli("profile", str(two_artifacts[1]), "--prompts", str(mt), "--max-prompts", "1", "--runs", "1",
                   "--max-tokens", "8", "--threads", "1", "--json", check=True)
    d = json.loads(proc.stdout)
    assert d["turns"] == 2 and [s["turn"] for s in d["samples"]] == [0, 1]
    assert d["samples"][1]["cached_tokens"] > 0  # the second turn reuses the first's KV cache


def test_profile_errors_are_one_line(two_artifacts, tmp_path):
    out = run_cli("profile", str(tmp_path / "missing.gguf"))
    assert out.returncode == 2 and out.stderr.strip().startswith("edgechat: error: no such file or directory")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    out = run_cli("profile", str(two_artifacts[0]), "--prompts", str(tmp_path / "bad.jsonl"))
    assert out.returncode == 2 and "bad.jsonl:1 is not JSON" in out.stderr
    out = run_cli("profile", str(two_artifacts[0]), "--target", "nowhere")
    assert out.returncode == 2 and "unknown target 'nowhere'" in out.stderr


def test_load_monitor_warns_when_others_are_busy():
    with LoadMonitor(interval=3600) as mon:
        pass
    mon.others = [1.5, 1.7, 1.6]
    s = mon.summary()
    assert s["busy"] and s["other_cpu_cores_mean"] == pytest.approx(1.6)
    assert s["warning"].startswith("the machine was busy during the run: other processes used 1.60 of")
    mon.others = [0.01, 0.0]
    assert mon.summary()["warning"] is None
