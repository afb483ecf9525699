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
    convert_fails(workdir, src, "unsupported architecture 'GPT2LMHeadModel': edgechat supports ")


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


@pytest.mark.parametrize("args, line", [
    (["--divergence", "jsd"], "Invalid value for '--divergence': 'jsd' is not one of 'forward', 'reverse'; see "
                              "`edgechat convert --help`"),
    (["--precision", "fp16"], "Invalid value for '--precision': 'fp16' is not one of 'auto', 'fp32', 'bf16'; see "
                              "`edgechat convert --help`"),
    (["--no-such-flag"], "No such option '--no-such-flag'"),
])
def test_bad_option_is_one_line_naming_the_help(stories_dir, workdir, args, line):
    """click's own usage errors (a value outside a choice, an unknown option) read like every other error."""
    convert_fails(workdir, stories_dir, line, *args)


def test_bare_edgechat_still_shows_its_help():
    proc = run_cli()  # click's way: the help on stderr, exit code 2
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("Usage: edgechat [OPTIONS] COMMAND [ARGS]...\n") and "Commands:" in proc.stderr
    assert "edgechat: error" not in proc.stderr


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


# -- files that lie: every loader checks before it trusts (the README's bad-input table) ---------------------
def safetensors_with(src, edit):
    import struct

    data = (src / "model.safetensors").read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    (src / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_safetensors_offsets_outside_the_file(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    safetensors_with(src, lambda h: h["model.norm.weight"].__setitem__("data_offsets", [0, 10**9]))
    convert_fails(workdir, src, f"{src / 'model.safetensors'} is truncated or corrupt (tensor model.norm.weight has "
                  "data_offsets [0, 1000000000] outside the 1040128 data bytes): re-download or re-export it")


def test_safetensors_shape_against_bytes(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    safetensors_with(src, lambda h: h["model.norm.weight"].__setitem__("shape", [65]))
    convert_fails(workdir, src, f"{src / 'model.safetensors'} is truncated or corrupt (tensor model.norm.weight: F32 "
                  "[65] needs 260 bytes, data_offsets give 256): re-download or re-export it")


def config_with(stories_dir, workdir, **values):
    src = copy_stories(stories_dir, workdir / "src")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(values)
    (src / "config.json").write_text(json.dumps(cfg))
    return src


@pytest.mark.parametrize("values, message", [
    ({"hidden_size": 0}, "hidden_size must be a positive integer below 2**31, got 0"),
    ({"num_key_value_heads": 3}, "the attention heads (8) must be a multiple of the KV heads (3)"),
    ({"vocab_size": 100}, "the tokenizer has 512 tokens but vocab_size is 100: the tokenizer does not belong to this model"),
    ({"num_hidden_layers": 1000}, "the config says 1000 layers but the weights hold 5"),
    ({"rms_norm_eps": None}, "rms_norm_eps is null: give a number or leave the key out"),
])
def test_bad_config_values(stories_dir, workdir, values, message):
    src = config_with(stories_dir, workdir, **values)
    convert_fails(workdir, src, f"{src / 'config.json'}: {message}")


def test_corrupt_sentencepiece_model(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    (src / "tokenizer.model").write_bytes(b"\x0a\x05hello garbage" * 10)
    convert_fails(workdir, src, f"{src / 'tokenizer.model'} is not a valid SentencePiece model: ")


def test_truncated_tokenizer_config(stories_dir, workdir):
    src = copy_stories(stories_dir, workdir / "src")
    (src / "tokenizer_config.json").write_text('{"add_bos_token": tru')
    convert_fails(workdir, src, f"{src / 'tokenizer_config.json'} is not valid JSON (truncated?)")


def weights_with(stories_dir, dest, name, index, value):
    from safetensors.torch import load_file, save_file

    src = copy_stories(stories_dir, dest)
    tensors = load_file(str(src / "model.safetensors"))
    tensors[name].view(-1)[index] = value
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


@pytest.mark.parametrize("name, value, counts", [("model.layers.0.mlp.gate_proj.weight", float("nan"), "1 NaN, 0 Inf"),
                                                 ("model.embed_tokens.weight", float("inf"), "0 NaN, 1 Inf")])
def test_non_finite_weight_refused_by_name(stories_dir, workdir, name, value, counts):
    src = weights_with(stories_dir, workdir / "src", name, 7, value)
    convert_fails(workdir, src, f"{src}: tensor {name} holds non-finite values ({counts}): "
                  "the checkpoint is corrupt or was trained into divergence", "--quant", "f32")


def test_non_finite_logits_in_chat_and_eval(stories_dir, workdir):
    """Finite weights whose logits overflow (a final norm of 3e38): chat and eval say so."""
    from safetensors.torch import load_file, save_file

    src = copy_stories(stories_dir, workdir / "src")
    tensors = load_file(str(src / "model.safetensors"))
    tensors["model.norm.weight"].fill_(3e38)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    assert_user_error(run_cli("chat", str(src), "--engine", "torch", "--prompt", "hi"),
                      "the model produced non-finite logits (NaN or Inf) at reply token 0: its weights or its engine "
                      "are broken; re-convert it from the source")
    data = workdir / "story.txt"
    data.write_text("Once upon a time there was a little girl. " * 200)
    assert_user_error(run_cli("eval", str(src), "--reference", str(stories_dir), "--data", str(data), "--n-ctx", "64"),
                      f"the artifact produced non-finite logits (NaN or Inf) on sequence 1 of {data.name}")


@pytest.mark.parametrize("template, message", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "the chat template was stopped: it ran past its 2 s time limit (a loop?)"),
    ("{% import 'os' as os %}{{ os }}",
     "the chat template was stopped: it imports or includes another template, which a model's template may not do"),
    ("{{ ''.__class__.__mro__ }}", "the chat template was stopped by the sandbox: access to attribute '__class__' of "
                                   "'str' object is unsafe."),
    ("{{ 'x' * 100000000 }}", "the chat template was stopped: it builds a value over 8388608 items"),
    ("{{ raise_exception('Only user and assistant roles are supported') }}",
     "the chat template refused the conversation: Only user and assistant roles are supported"),
])
def test_hostile_chat_template(stories_dir, workdir, template, message):
    src = copy_stories(stories_dir, workdir / "src")
    (src / "chat_template.jinja").write_text(template)
    assert_user_error(run_cli("chat", str(src), "--engine", "torch", "--prompt", "hi", "--max-tokens", "4"), message)


def test_recipe_value_out_of_range(stories_dir, workdir):
    recipe = workdir / "r.toml"
    recipe.write_text("[prune]\nffn = 1.5\n")
    convert_fails(workdir, stories_dir, f"{recipe}: 'prune.ffn' must be >= 0 and < 1, got 1.5", "--recipe", str(recipe))


def test_profile_value_out_of_range(stories_dir, tmp_path):
    from tests.conftest import ROOT

    prof = tmp_path / "rpi5-8gb.toml"
    prof.write_text((ROOT / "targets" / "profiles" / "rpi5-8gb.toml").read_text().replace("cores = 4", "cores = -4"))
    assert_user_error(run_cli("plan", str(stories_dir), "--target", str(prof)),
                      f"{prof}: key 'cpu.cores': must be > 0, got -4")


def test_pte_that_is_not_a_program(tmp_path):
    bad = tmp_path / "junk.pte"
    bad.write_bytes(b"\x00" * 1000)
    assert_user_error(run_cli("chat", str(bad), "--prompt", "hi"), "ExecuTorch could not load junk.pte: ")
