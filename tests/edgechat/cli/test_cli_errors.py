"""Every bad input a user can cause: one line on stderr, exit code 2, no traceback, nothing left behind."""
import json
import shutil

import pytest

from tests.conftest import run_cli


def assert_user_error(proc, message: str):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("edgechat: error: ") and message in lines[0], lines[0]


def assert_nothing_written(parent, before):
    assert sorted(p.name for p in parent.iterdir()) == before


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "src").mkdir()
    return tmp_path


def convert_fails(workdir, source, message, *extra):
    before = sorted(p.name for p in workdir.iterdir())
    proc = run_cli("convert", str(source), "-o", str(workdir / "out"), "--no-eval", *extra)
    assert_user_error(proc, message)
    assert_nothing_written(workdir, before)


def copy_stories(stories_dir, dest):
    shutil.copytree(stories_dir, dest, dirs_exist_ok=True)
    for p in dest.iterdir():
        p.chmod(0o644)
    return dest


def test_missing_source(workdir):
    convert_fails(workdir, workdir / "nope", f"no such file or directory: {workdir / 'nope'}")


def test_missing_config(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    (src / "config.json").unlink()
    convert_fails(workdir, src, f"{src} has no config.json: give a Hugging Face checkpoint directory or a .gguf file")


def test_truncated_config(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    cfg = (src / "config.json").read_text()
    (src / "config.json").write_text(cfg[: len(cfg) // 2])
    convert_fails(workdir, src, f"{src / 'config.json'} is not valid JSON (truncated?)")


def test_truncated_safetensors(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    convert_fails(workdir, src, f"{src / 'model.safetensors'} is truncated or corrupt")


def test_unsupported_architecture(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (src / "config.json").write_text(json.dumps(cfg))
    convert_fails(workdir, src, "unsupported architecture 'GPT2LMHeadModel': edgechat supports LlamaForCausalLM, ")


def test_missing_tokenizer(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    (src / "tokenizer.model").unlink()
    convert_fails(workdir, src, f"{src} has no tokenizer: expected tokenizer.json or tokenizer.model beside config.json")


def test_truncated_gguf(stories_f32_gguf, workdir):
    bad = workdir / "src" / "cut.gguf"
    data = stories_f32_gguf.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    convert_fails(workdir, bad, "is truncated")
    assert_user_error(run_cli("chat", str(bad), "--prompt", "hi"), "is truncated")


def test_gguf_that_is_not_gguf(workdir):
    bad = workdir / "src" / "junk.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    convert_fails(workdir, bad, f"{bad} is not a GGUF file (it does not start with the GGUF magic)")


def test_unwritable_output_directory(stories_dir, workdir):
    blocker = workdir / "a-file"
    blocker.write_text("x")
    before = sorted(p.name for p in workdir.iterdir())
    proc = run_cli("convert", str(stories_dir), "-o", str(blocker / "out"), "--no-eval")
    assert_user_error(proc, f"cannot write to {blocker / 'out'}")
    assert_nothing_written(workdir, before)


def test_output_path_is_a_file(stories_dir, workdir):
    target = workdir / "taken"
    target.write_text("x")
    proc = run_cli("convert", str(stories_dir), "-o", str(target), "--no-eval")
    assert_user_error(proc, f"cannot write to {target}: it exists and is not a directory")
    assert target.read_text() == "x"


def test_unknown_quant_type(stories_dir, workdir):
    convert_fails(workdir, stories_dir, "unknown quant type 'q3_k' for format gguf: choose one of", "--quant", "q3_k")


def test_unknown_format(stories_dir, workdir):
    convert_fails(workdir, stories_dir, "unknown format 'onnx'", "--format", "onnx")


def test_eval_empty_data_file(stories_f32_gguf, stories_dir, workdir):
    empty = workdir / "empty.txt"
    empty.write_text("  \n")
    proc = run_cli("eval", str(stories_f32_gguf), "--reference", str(stories_dir), "--data", str(empty))
    assert_user_error(proc, f"the data file {empty} is empty")


def test_failure_mid_conversion_leaves_no_staging(stories_dir, workdir):
    """The safetensors is read inside the staging step: its failure must remove the staging directory."""
    src = copy_stories(stories_dir, workdir / "src")
    (src / "model.safetensors").write_bytes(b"\x00" * 16)
    convert_fails(workdir, src, "is truncated or corrupt")
    assert not any(p.name.startswith(".out.partial-") for p in workdir.iterdir())
