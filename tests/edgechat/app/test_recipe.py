"""One recipe: prune -> distill -> quantize/export -> eval -> gate, and its bad inputs."""
import json

import pytest

from edgechat.core.errors import EdgechatError
from edgechat.app.recipe import load_recipe
from tests.conftest import run_cli

RECIPE = """
[prune]
ffn = 0.5
layers = 1

[distill]
steps = 12
micro_batch = 4
seq_len = 128
lr = 2e-3
max_dialogues = 60

[export]
formats = ["gguf"]
quants = ["q8_0"]
hf = true
eval_data = "EVAL"
"""

DIALOGUES = [
    [{"role": "user", "content": "Once upon a time there was a cat. What did the cat do?"},
     {"role": "assistant", "content": "The cat played with a red ball in the park all day."}],
    [{"role": "user", "content": "Tell me about Lily."},
     {"role": "assistant", "content": "Lily was a little girl who loved to play outside with her dog."},
     {"role": "user", "content": "What happened next?"},
     {"role": "assistant", "content": "One day, she found a big tree and climbed it with her friend Tom."}],
]


def write(tmp_path, text, name="recipe.toml"):
    path = tmp_path / name
    if "EVAL" in text:  # a small held-out dialogue file keeps the quality stages quick
        eval_file = tmp_path / "eval.jsonl"
        eval_file.write_text("".join(json.dumps({"messages": d}) + "\n" for d in DIALOGUES))
        text = text.replace("EVAL", str(eval_file))
    path.write_text(text)
    return path


def test_unknown_key_refused(tmp_path):
    path = write(tmp_path, "[prune]\nffn = 0.5\nfnn = 0.1\n")
    with pytest.raises(EdgechatError, match=r"unknown key 'prune.fnn' \(allowed: calib, ffn, heads, hidden, layers, strategy, target_params\)"):
        load_recipe(path)
    with pytest.raises(EdgechatError, match="unknown key 'quantise'"):
        load_recipe(write(tmp_path, "[quantise]\nx = 1\n", "r2.toml"))


@pytest.fixture(scope="module")
def recipe_run(stories_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    out = tmp / "out"
    proc = run_cli("convert", str(stories_dir), "-o", str(out), "--recipe", str(write(tmp, RECIPE)), check=True)
    return out, json.loads((out / "edgechat.json").read_text()), proc


def test_recipe_writes_every_stage(recipe_run, stories_model):
    out, manifest, _ = recipe_run
    c = manifest["compression"]
    assert manifest["recipe"]["sha256"] and c["prune"]["config"]["num_layers"] == 4
    assert c["prune"]["config"]["intermediate_size"] == 64 and len(c["prune"]["layer_importance"]) == 5
    assert c["pruned"]["params"] == c["distilled"]["params"] < stories_model.config.param_count()
    assert c["distilled"]["mean_kld"] < c["pruned"]["mean_kld"]
    (gguf,) = [a for a in manifest["artifacts"] if a["format"] == "gguf"]
    assert gguf["quant"] == "q8_0" and gguf["quality"]["mean_kld"] > 0
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(out / "hf").config.num_hidden_layers == 4


PRUNE_ONLY = RECIPE.split("[distill]")[0] + "[export]" + RECIPE.split("[export]")[1].replace("hf = true", "hf = false")


def test_gate_passes_when_bound_is_looser_and_fails_when_tighter(stories_dir, tmp_path):
    recipe = str(write(tmp_path, PRUNE_ONLY))
    ok = tmp_path / "ok"
    run_cli("convert", str(stories_dir), "-o", str(ok), "--recipe", recipe, "--max-kld", "100",
            "--max-ppl-ratio", "100", check=True)
    manifest = json.loads((ok / "edgechat.json").read_text())
    assert manifest["gate"]["passed"] is True and manifest["status"] == "ok"
    measured = manifest["artifacts"][0]["quality"]["mean_kld"]
    assert measured > 0

    out = tmp_path / "gated"
    proc = run_cli("convert", str(stories_dir), "-o", str(out), "--recipe", recipe, "--max-kld", str(measured / 10))
    assert proc.returncode == 1
    # the note that a student pruned this hard without distillation is likely far off, then the one-line reason
    note, err = proc.stderr.strip().splitlines()
    assert note.startswith("note: a ") and " student with no distillation is likely far from the source: " in note
    assert err.startswith("edgechat: error: quality gate failed: ") and "mean KLD" in err
    assert "mean KLD" in proc.stdout  # the report of the figures
    gated = json.loads((out / "edgechat.json").read_text())
    assert gated["gate"]["passed"] is False and gated["status"] == "failed"
    assert gated["artifacts"][0]["quality"]["mean_kld"] == pytest.approx(measured)


def test_empty_distillation_data_refused(stories_dir, tmp_path):
    empty = write(tmp_path, "\n", "empty.txt")
    recipe = write(tmp_path, RECIPE.replace("max_dialogues = 60", f'data = "{empty}"'))
    proc = run_cli("convert", str(stories_dir), "-o", str(tmp_path / "out"), "--recipe", str(recipe))
    assert proc.returncode == 2 and proc.stderr.strip() == f"edgechat: error: the data file {empty} is empty"
    assert not (tmp_path / "out").exists()


def test_unknown_distillation_device_refused(stories_dir, tmp_path):
    recipe = write(tmp_path, RECIPE.replace("max_dialogues = 60", 'device = "tpu"'))
    proc = run_cli("convert", str(stories_dir), "-o", str(tmp_path / "out"), "--recipe", str(recipe))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "edgechat: error: unknown distillation device 'tpu': use cpu or cuda"
    assert not (tmp_path / "out").exists()


def test_prune_more_layers_than_model_has(stories_dir, tmp_path):
    proc = run_cli("convert", str(stories_dir), "-o", str(tmp_path / "out"), "--prune-layers", "9", "--no-eval")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "edgechat: error: cannot prune 9 layers: the model has 5 (at least one must stay)"
    assert not (tmp_path / "out").exists()
