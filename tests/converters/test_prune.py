"""Structured pruning: standard configs, the asked-for sizes, and loading in transformers and llama.cpp."""
import numpy as np
import pytest
import torch

from converters.gguf_writer import write_gguf
from converters.hf_writer import write_hf
from converters.prune import measure_importance, plan_for_target, plan_from_options, prune
from edgechat.core.errors import EdgechatError
from edgechat.core.sources import load_model
from runtimes.llama_cpp_engine import LlamaCppEngine
from runtimes.torch_engine import TorchEngine

CALIB = ["Once upon a time there was a little girl named Lily. She loved to play outside.",
         "Tom had a big red ball. He liked to throw it to his dog, who ran fast."]


def calib(model):
    return [model.tokenizer.encode(t) for t in CALIB]


@pytest.fixture(scope="module")
def stories_importance(stories_model):
    return measure_importance(stories_model, calib(stories_model))


@pytest.mark.parametrize("opts,expect", [
    (dict(layers=2), dict(num_layers=3)),
    (dict(ffn_frac=0.5), dict(intermediate_size=64)),
    (dict(heads=4), dict(num_heads=4, num_kv_heads=2)),
    (dict(hidden_frac=0.5), dict(hidden_size=32)),
    (dict(layers=1, ffn_frac=0.25, heads=4, hidden_frac=0.5), dict(num_layers=4, intermediate_size=128, num_heads=4, hidden_size=32)),
])
def test_pruned_stories_loads_everywhere(stories_model, stories_importance, tmp_path, opts, expect):
    student = prune(stories_model, plan_from_options(stories_model.config, **opts), stories_importance)
    for k, v in expect.items():
        assert getattr(student.config, k) == v
    assert student.config.param_count() == sum(p.numel() for p in student.module.parameters())
    assert student.config.param_count() < stories_model.config.param_count()
    ids = student.tokenizer.encode("Once upon a time", add_bos=True)
    ours = TorchEngine(student).logits_all(ids)
    # transformers
    from transformers import AutoModelForCausalLM
    write_hf(student, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert np.abs(hf(torch.tensor([ids])).logits[0].numpy() - ours).max() < 1e-4
    # llama.cpp
    gguf = write_gguf(student, tmp_path / "s.gguf", "f32")
    llama = LlamaCppEngine(gguf, kv_type="f32", logits_all=True, threads=2)
    assert np.abs(llama.logits_all(ids) - ours).max() < 1e-4


def test_pruned_qwen2_keeps_biases_and_loads(tiny_qwen2_dir, tmp_path):
    teacher = load_model(tiny_qwen2_dir)
    imp = measure_importance(teacher, [teacher.tokenizer.encode(t) for t in CALIB])
    with pytest.raises(EdgechatError, match="llama.cpp's qwen2 needs heads x head_dim == hidden size"):
        plan_from_options(teacher.config, heads=2)
    student = prune(teacher, plan_from_options(teacher.config, heads=2, ffn_frac=0.5, hidden_frac=0.5), imp)
    assert (student.config.num_heads, student.config.num_kv_heads, student.config.intermediate_size) == (2, 1, 64)
    assert student.config.hidden_size == 32
    assert student.module.model.layers[0].self_attn.k_proj.bias.shape == (16,)
    write_hf(student, tmp_path / "hf")
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = student.tokenizer.encode("Hello there, how are you today?")
    with torch.no_grad():
        assert np.abs(hf(torch.tensor([ids])).logits[0].numpy() - TorchEngine(student).logits_all(ids)).max() < 1e-4
    llama = LlamaCppEngine(write_gguf(student, tmp_path / "q.gguf", "f32"), kv_type="f32", logits_all=True, threads=2)
    assert np.abs(llama.logits_all(ids) - TorchEngine(student).logits_all(ids)).max() < 1e-4


def hf_loss_without(stories_dir, seqs, drop: set[int]) -> float:
    """Calibration loss measured directly, by transformers, on the checkpoint with those blocks deleted."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(stories_dir).eval()
    hf.model.layers = torch.nn.ModuleList(l for i, l in enumerate(hf.model.layers) if i not in drop)
    for i, layer in enumerate(hf.model.layers):  # transformers indexes its cache by the block's own number
        layer.self_attn.layer_idx = i
    hf.config.num_hidden_layers = len(hf.model.layers)
    total, n = 0.0, 0
    with torch.no_grad():
        for ids in seqs:
            t = torch.tensor([ids])
            total += float(hf(t, labels=t).loss) * (len(ids) - 1)
            n += len(ids) - 1
    return total / n


def test_depth_pruning_removes_the_block_whose_removal_costs_least(stories_dir, stories_model, stories_importance):
    seqs = stories_importance.calib
    plan = plan_from_options(stories_model.config, layers=2)
    student = prune(stories_model, plan, stories_importance)
    first, second = plan.chosen["layer_removal"]
    # round one: of the five models with one block removed, the lowest loss, as transformers measures it
    without_one = {i: hf_loss_without(stories_dir, seqs, {i}) for i in range(5)}
    assert first["layer"] == min(without_one, key=without_one.get)
    assert first["loss_without"] == pytest.approx(without_one[first["layer"]], rel=1e-4)
    # round two is measured again with that block gone (not the second-cheapest of round one)
    without_two = {j: hf_loss_without(stories_dir, seqs, {first["layer"], j}) for j in range(5) if j != first["layer"]}
    assert second["layer"] == min(without_two, key=without_two.get)
    assert second["loss_without"] == pytest.approx(without_two[second["layer"]], rel=1e-4)
    assert plan.chosen["kept_layers"] == sorted(set(range(5)) - {first["layer"], second["layer"]})
    assert plan.chosen["calib_loss_full"] == pytest.approx(hf_loss_without(stories_dir, seqs, set()), rel=1e-4)
    # the student is that model: its own loss is the one recorded for the last removal
    from converters.prune import calibration_loss
    assert calibration_loss(student.module, seqs) == pytest.approx(second["loss_without"], rel=1e-5)
    assert plan.chosen["params_after"] < plan.chosen["params_before"]


def test_removal_trials_from_cached_block_inputs_equal_whole_trial_models(stories_model, stories_importance):
    import torch

    from converters.prune import calibration_loss, removal_losses
    seqs, layers = stories_importance.calib, stories_model.module.model.layers
    keep = [0, 2, 3, 4]  # a round after block 1 went
    fast = removal_losses(stories_model.module, seqs, keep)
    try:
        for i in keep:
            stories_model.module.model.layers = torch.nn.ModuleList(layers[j] for j in keep if j != i)
            assert fast[i] == pytest.approx(calibration_loss(stories_model.module, seqs), rel=1e-6), i
    finally:
        stories_model.module.model.layers = layers


def test_a_block_removal_measured_before_is_reused_not_measured_again(stories_model, stories_importance, monkeypatch):
    import torch

    from converters import prune as prune_mod
    plan = plan_from_options(stories_model.config, layers=2)
    measured = prune(stories_model, plan, stories_importance)
    monkeypatch.setattr(prune_mod, "layers_by_loss", lambda *a: pytest.fail("measured again"))
    again_plan = plan_from_options(stories_model.config, layers=2)
    again = prune(stories_model, again_plan, stories_importance, chosen_before=plan.chosen)
    assert again_plan.chosen["layer_removal"] == plan.chosen["layer_removal"]
    assert again_plan.chosen["kept_layers"] == plan.chosen["kept_layers"]
    a, b = measured.module.state_dict(), again.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_longer_removal_measured_before_gives_its_first_blocks(stories_model, stories_importance, monkeypatch):
    from converters import prune as prune_mod
    three = plan_from_options(stories_model.config, layers=3)
    prune(stories_model, three, stories_importance)
    two = plan_from_options(stories_model.config, layers=2)
    prune(stories_model, two, stories_importance)  # measured: the greedy removal's first two rounds
    monkeypatch.setattr(prune_mod, "layers_by_loss", lambda *a: pytest.fail("measured again"))
    reused = plan_from_options(stories_model.config, layers=2)
    prune(stories_model, reused, stories_importance, chosen_before=three.chosen)
    assert reused.chosen["layer_removal"] == two.chosen["layer_removal"] == three.chosen["layer_removal"][:2]
    assert reused.chosen["kept_layers"] == two.chosen["kept_layers"]
    one_more = plan_from_options(stories_model.config, layers=4)  # a shorter record cannot give a longer removal
    monkeypatch.undo()
    prune(stories_model, one_more, stories_importance, chosen_before=three.chosen)
    assert one_more.chosen["layer_removal"][:3] == three.chosen["layer_removal"]


def test_depth_pruning_without_calibration_falls_back_to_block_influence(stories_model, stories_importance):
    from dataclasses import replace
    imp = replace(stories_importance, calib=None)
    plan = plan_from_options(stories_model.config, layers=2)
    prune(stories_model, plan, imp)
    order = np.argsort(imp.layers)
    assert sorted(set(range(5)) - set(plan.chosen["kept_layers"])) == sorted(order[:2].tolist())
    assert "layer_removal" not in plan.chosen


@pytest.mark.parametrize("strategy", ["width", "depth", "mixed"])
@pytest.mark.parametrize("frac", [0.7, 0.5])
def test_target_params_reaches_fraction(smollm_model, strategy, frac):
    from converters.prune import pruned_config
    plan = plan_for_target(smollm_model.config, frac, strategy)
    params = pruned_config(smollm_model.config, plan).param_count()
    assert frac - 0.05 < params / smollm_model.config.param_count() <= frac
    if strategy == "width":
        assert plan.drop_layers == 0
    if strategy == "depth":
        assert plan.drop_layers > 0 and plan.ffn_keep is plan.hidden_keep is plan.kv_groups_keep is None


@pytest.mark.parametrize("opts,message", [
    (dict(layers=5), "cannot prune 5 layers: the model has 5 (at least one must stay)"),
    (dict(heads=3), "cannot prune 3 heads: heads go in KV groups of 2, give a multiple of 2"),
    (dict(heads=8), "cannot prune 8 heads: the model has 8 per layer"),
    (dict(ffn_frac=1.0), "--prune-ffn 1.0 is out of range"),
    (dict(heads=2, hidden_frac=0.5), "cannot prune the hidden size to 50%: it must stay a multiple of 96"),
])
def test_pruning_more_than_the_model_has(stories_model, opts, message):
    with pytest.raises(EdgechatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_from_options(stories_model.config, **opts)
