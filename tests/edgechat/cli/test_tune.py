"""`edgechat tune` on stories260K through the real command: the frontier (PNG + markdown + manifest), the chosen
candidate for a loose constraint written to OUTPUT, and an impossible constraint refused with the closest figures."""
import json

import pytest

from tests.background import TUNE_EVAL, jobs
from tests.conftest import run_cli

FAST = ["--prompts", "3", "--runs", "1", "--no-imatrix"]


@pytest.fixture(scope="session")
def eval_file():
    return TUNE_EVAL


@pytest.fixture(scope="session")
def tuned_pte(tmp_path_factory, stories_dir):
    """tune --format pte: 8da8w and a --share-tied --bpw 10.5 plan, --max-mib 0.36 on rpi5-8gb (tests/background.py)."""
    return jobs.wait("tune-pte", tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tuned(stories_dir, eval_file, tmp_path_factory):
    """Quant schemes, one --bpw plan and one 90% student (distilled for about three seconds)."""
    out = tmp_path_factory.mktemp("tune") / "out"
    proc = run_cli("tune", str(stories_dir), "-o", str(out), "--max-kld", "0.5", "--quant", "f32", "--quant", "q8_0",
                   "--quant", "q4_0", "--bpw", "8", "--budget-minutes", "0.05", "--kept", "0.9",
                   "--eval-data", str(eval_file), *FAST)
    return out, proc


def test_tune_writes_the_frontier_and_the_chosen_artifact(tuned):
    from edgechat.core.files import file_sha256

    out, proc = tuned
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "edgechat.json").read_text())
    rows = {r["name"]: r for r in m["tune"]["frontier"]}
    assert sorted(rows) == ["f32", "mixed-bpw8", "q4_0", "q8_0", "s90-q4_k_m"]
    for r in rows.values():
        assert r["mean_kld"] >= 0 and r["ppl_ratio"] > 0 and 0 <= r["match"] <= 1
        assert r["decode_tok_s_here"] > 0 and r["speed"] == r["decode_tok_s_here"]  # host: the measured speed
        assert r["decode_tok_s_target"] > 0  # the planner's estimate beside it
        # dominated: another candidate at least as fast and as close to the source, better in one
        assert r["dominated"] == any(o["speed"] >= r["speed"] and o["mean_kld"] <= r["mean_kld"] and
                                     (o["speed"] > r["speed"] or o["mean_kld"] < r["mean_kld"])
                                     for o in rows.values() if o is not r)
    assert rows["f32"]["mean_kld"] < 1e-3 and rows["f32"]["match"] >= 2 / 3  # the source itself, in llama.cpp
    student = rows["s90-q4_k_m"]
    assert student["kind"] == "student" and student["params"] < 0.9 * rows["f32"]["params"]
    # the chosen one meets --max-kld 0.5 and is the fastest that does
    chosen = rows[m["tune"]["chosen"]]
    meeting = [r for r in rows.values() if r["mean_kld"] <= 0.5]
    assert chosen["meets"] and chosen["speed"] == max(r["speed"] for r in meeting) and not chosen["dominated"]
    assert [r["name"] for r in rows.values() if r["meets"]] == [r["name"] for r in meeting]
    # OUTPUT holds that artifact, whole, with its tokenizer, the frontier and the manifest
    art = m["artifacts"][0]
    assert art["file"] == chosen["file"] and file_sha256(out / art["file"]) == art["sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted([art["file"], *m["files"], "edgechat.json",
                                                            "frontier.md", "frontier.png"])
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "frontier.md").read_text()
    assert "| candidate | MiB | KLD | PPL x | match | tok/s here | tok/s target | frontier |" in md
    assert md.count("| chosen |") == 1 and f"chosen: {chosen['name']}" in md
    assert m["status"] == "ok" and m["tune"]["constraint"] == {"max_kld": 0.5}


def test_tune_makes_pte_candidates_with_the_target_estimate(tuned_pte):
    """--format pte: ExecuTorch programs, a --share-tied plan among them (its .ptd goes to OUTPUT with it), and
    the planner's estimate for a .pte on another target as the speed axis."""
    from edgechat.core.files import file_sha256

    out = tuned_pte
    m = json.loads((out / "edgechat.json").read_text())
    rows = {r["name"]: r for r in m["tune"]["frontier"]}
    assert sorted(rows) == ["8da8w", "mixed-bpw10.5"]
    for r in rows.values():
        assert r["file"].endswith(".pte") and r["decode_tok_s_here"] > 0 and r["mean_kld"] >= 0
        assert r["decode_tok_s_target"] > 0 and r["speed"] == r["decode_tok_s_target"]  # rpi5-8gb: the estimate
    # the plan holds the tied matrix once: under the 8-bit program's size, and the only one under 0.36 MiB
    assert rows["mixed-bpw10.5"]["bytes"] < rows["8da8w"]["bytes"] and rows["8da8w"]["mib"] > 0.36
    assert m["tune"]["chosen"] == "mixed-bpw10.5"
    art = m["artifacts"][0]
    assert art["data_file"].endswith(".ptd") and file_sha256(out / art["data_file"]) == art["data_sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted([art["file"], art["data_file"], *m["files"],
                                                            "edgechat.json", "frontier.md", "frontier.png"])


def test_tune_output_reads_at_80_columns_when_piped(tuned):
    out, proc = tuned
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 5 and all(len(ln) <= 80 for ln in table), proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == f"chose {json.loads((out / 'edgechat.json').read_text())['tune']['chosen']}: " \
        f"{out / json.loads((out / 'edgechat.json').read_text())['artifacts'][0]['file']}"


def test_tune_refuses_an_impossible_constraint_with_the_closest_figures(stories_dir, eval_file, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("tune", str(stories_dir), "-o", str(out), "--max-kld", "1e-9", "--quant", "q8_0", "--quant", "q4_0",
                   "--no-bpw", "--budget-minutes", "0", "--eval-data", str(eval_file), *FAST)
    assert proc.returncode == 1, proc.stderr
    m = json.loads((out / "edgechat.json").read_text())
    rows = m["tune"]["frontier"]
    closest = min(rows, key=lambda r: r["mean_kld"])
    v = closest["mean_kld"]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"edgechat: error: no candidate meets --max-kld 1e-09: the closest is {closest['name']} "
        f"(mean KLD {v:.4g}, {v / 1e-9:.3g}x the bound); the frontier is in {out}")
    assert m["status"] == "failed" and m["tune"]["chosen"] is None and m["artifacts"] == []
    assert not any(r["meets"] for r in rows) and sorted(r["name"] for r in rows) == ["q4_0", "q8_0"]
    assert sorted(p.name for p in out.iterdir()) == ["edgechat.json", "frontier.md", "frontier.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or candidates left


@pytest.mark.parametrize("args,message", [
    (["--max-kld", "0.1", "--max-mib", "1"],
     "give one constraint: --max-mib, --min-decode-tok-s or --max-kld, not --max-mib and --max-kld"),
    (["--max-mib", "0"], "--max-mib must be above 0, got 0"),
    (["--target", "toaster"], None),
    (["--kept", "1.5"], "--kept 1.5 is out of range: give the fraction of parameters a student keeps, in (0, 1)"),
    (["--quant", "8da4w"], "--quant 8da4w is not a gguf scheme: tune --format gguf tries f32, f16, q8_0, q4_0, q4_k_m"),
    (["--format", "pte", "--quant", "q4_0"], "--quant q4_0 is not a pte scheme: tune --format pte tries fp32, 8da8w, 8da4w"),
    (["--format", "pte", "--student-quant", "q4_k_m"],
     "--student-quant q4_k_m is not a pte scheme: tune --format pte tries fp32, 8da8w, 8da4w"),
    (["--share-tied"], "--share-tied and --awq are .pte levers: add --format pte"),
    (["--format", "pte", "--share-tied", "--no-bpw"], "--share-tied applies to the --bpw plans: drop --no-bpw"),
])
def test_tune_refuses_bad_options_before_any_model_work(stories_dir, tmp_path, args, message):
    proc = run_cli("tune", str(stories_dir), "-o", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgechat: error: "), proc.stderr
    if message:
        assert lines[0] == f"edgechat: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_tune_share_tied_on_an_untied_model_is_refused_before_any_candidate(tiny_qwen2_dir, tmp_path):
    proc = run_cli("tune", str(tiny_qwen2_dir), "-o", str(tmp_path / "out"), "--format", "pte", "--share-tied")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "edgechat: error: --share-tied: tiny-qwen2 does not tie its embedding and head; there is one matrix of "
        "each already")
    assert list(tmp_path.iterdir()) == []


def test_tune_refuses_an_absent_training_device_first(stories_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    proc = run_cli("tune", str(stories_dir), "-o", str(tmp_path / "out"), "--device", "cuda")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "edgechat: error: distillation device 'cuda' is not available: torch sees no CUDA GPU here")
    assert list(tmp_path.iterdir()) == []
