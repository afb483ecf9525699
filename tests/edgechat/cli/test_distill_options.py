"""The distillation options on the command line: convert with --teacher-data records the set's hash and the
precision in the manifest; bad values fail before any model work; --help explains them."""
import json
import os
import re
import subprocess
import sys

from edgechat.core.files import file_sha256
from tests.conftest import ROOT, run_cli


def edgechat(*args, cache):
    return subprocess.run([sys.executable, "-m", "edgechat.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env={**os.environ, "EDGECHAT_CACHE_DIR": str(cache)})


def test_convert_on_teacher_data_records_hash_and_precision(stories_dir, tmp_path):
    """--drop-looping: the conversations whose reply loops are left out of training, the cached set is whole."""
    from edgechat.app.loops import loops

    out = tmp_path / "out"
    proc = edgechat("convert", str(stories_dir), "-o", str(out), "--quant", "f32", "--no-eval", "--prune-ffn", "0.5",
                    "--distill-steps", "4", "--teacher-data", "12", "--magpie-share", "0.25", "--precision", "fp32",
                    "--drop-looping", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    # half the MLP with 4 steps: the user is told at once that so few tokens do not recover it
    c = json.loads((out / "edgechat.json").read_text())["compression"]
    assert re.fullmatch(r"note: a \d\d% student with 4 distillation steps \(0\.0041M tokens, \d\.\d+ per parameter of "
                        r"the source\) is likely far from the source: .*", c["budget_note"])
    assert c["budget_note"] in " ".join(proc.stderr.split())
    d = c["distill"]
    assert d["precision"] == "fp32" and d["config"]["teacher_data"] == 12 and d["config"]["drop_looping"]
    td = d["teacher_data"]
    (cached,) = (tmp_path / "cache" / "teacher-data").glob("*.jsonl")
    assert td["path"] == str(cached) and td["sha256"] == file_sha256(cached)
    rows = [json.loads(ln) for ln in cached.read_text().splitlines()]
    assert len(rows) == 12 and [r["source"] for r in rows].count("magpie") == 3
    kept = [r["source"] for r in rows if not loops(r["messages"][1]["content"])]
    assert 0 < td["dropped_looping"] == 12 - len(kept)  # stories260K loops in some of its 128-token replies
    assert td["conversations"] == len(kept) and td["prompt_sources"] == {s: kept.count(s) for s in set(kept)}


def test_student_replies_sampled_again_as_it_trains(stories_dir, tmp_path):
    """--resample-every 2 over 4 steps: two rounds (steps 0 and 2), each with half of its conversations'
    replies the student's; the manifest counts them (and records the reverse KL they were trained on)."""
    out = tmp_path / "out"
    proc = edgechat("convert", str(stories_dir), "-o", str(out), "--quant", "f32", "--no-eval", "--prune-ffn", "0.5",
                    "--distill-steps", "4", "--teacher-data", "12", "--student-share", "0.5", "--resample-every", "2",
                    "--precision", "fp32", "--divergence", "reverse", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    d = json.loads((out / "edgechat.json").read_text())["compression"]["distill"]
    assert d["config"]["resample_every"] == 2 and d["config"]["student_share"] == 0.5
    assert d["config"]["divergence"] == "reverse"
    assert d["teacher_data"]["student_replies"] == 0  # none sampled before training: the rounds do it
    r = d["resampled"]
    assert r["rounds"] == 2 and 2 <= r["student_replies"] <= 12 and r["seconds"] > 0


def test_bad_magpie_share_refused_before_model_work(stories_dir, tmp_path):
    proc = edgechat("convert", str(stories_dir), "-o", str(tmp_path / "out"), "--prune-ffn", "0.5", "--distill-steps",
                    "4", "--teacher-data", "12", "--magpie-share", "2", cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "edgechat: error: --magpie-share must be between 0 and 1, got 2.0"
    assert not (tmp_path / "out").exists()


def test_help_explains_the_options():
    for command in ("distill", "convert"):
        text = " ".join(run_cli(command, "--help", check=True).stdout.split())
        assert "--teacher-data INTEGER Train on N conversations whose replies the teacher writes" in text
        assert "--magpie-share FLOAT" in text and "(Magpie)" in text and "--prompts PATH" in text
        assert "--precision [auto|fp32|bf16]" in text and "AVX512-BF16/AMX" in text
        assert "--drop-looping With --teacher-data: leave out the conversations whose reply loops" in text
        assert "--alpha-ul FLOAT With --student-share: the student's replies are its greedy ones" in text
        assert "--student-greedy With --student-share: the student's replies are its greedy ones" in text
        assert "--resample-every INTEGER With --student-share: sample the student's replies again every N steps" in text
        assert "--divergence [forward|reverse] The KL the student is trained on" in text
    assert "--loss-chunk INTEGER" in " ".join(run_cli("distill", "--help", check=True).stdout.split())


def test_bad_recipe_values_refused_before_model_work(stories_dir, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("Once upon a time there was a cat.\n")
    for section, message in (
            ('precision = "fp16"', "unknown distillation precision 'fp16': use auto, fp32, bf16"),
            ('teacher_data = 8\nstudent_share = 1.5', "--student-share must be between 0 and 1, got 1.5"),
            ('teacher_data = 8\nalpha_ul = 1.0', "--alpha-ul needs --teacher-data and --student-share: it pushes "
                                                  "down the repeats in the student's own greedy replies"),
            ('alpha_ul = -1.0', f"{tmp_path / 'recipe.toml'}: 'distill.alpha_ul' must be >= 0, got -1.0"),
            ('divergence = "jsd"',
             f"{tmp_path / 'recipe.toml'}: 'distill.divergence' must be one of forward, reverse, got 'jsd'"),
            (f'teacher_data = 8\ndata = "{data}"', "give the distillation either a data file or --teacher-data, not both"),
            ('teacher_data = 8\nprompts = "/nonexistent/p.txt"', "no such prompts file: /nonexistent/p.txt")):
        recipe = tmp_path / "recipe.toml"
        recipe.write_text(f"[prune]\nffn = 0.5\n\n[distill]\nsteps = 2\n{section}\n")
        proc = edgechat("convert", str(stories_dir), "-o", str(tmp_path / "out"), "--recipe", str(recipe),
                        cache=tmp_path / "cache")
        assert (proc.returncode, proc.stderr.strip()) == (2, f"edgechat: error: {message}")
        assert not (tmp_path / "out").exists()


def test_alpha_ul_and_resample_flags_checked_before_model_work(stories_dir, tmp_path):
    for flags, message in ((["--alpha-ul", "-1"], "--alpha-ul must be at least 0, got -1.0"),
                           (["--resample-every", "-2"], "--resample-every must be at least 0 steps, got -2"),
                           (["--resample-every", "5", "--teacher-data", "8"],
                            "--resample-every needs --teacher-data and --student-share: it samples the student's "
                            "share of the replies again as it trains"),
                           (["--student-greedy", "--teacher-data", "8"],
                            "--student-greedy needs --teacher-data and --student-share: it picks how the student's "
                            "share of the replies is decoded"),
                           (["--alpha-ul", "1", "--teacher-data", "8"],
                            "--alpha-ul needs --teacher-data and --student-share: it pushes down the repeats in the "
                            "student's own greedy replies")):
        proc = edgechat("distill", str(stories_dir), str(stories_dir), "-o", str(tmp_path / "out"), *flags,
                        cache=tmp_path / "cache")
        assert (proc.returncode, proc.stderr.strip()) == (2, f"edgechat: error: {message}")
        assert not (tmp_path / "out").exists()
