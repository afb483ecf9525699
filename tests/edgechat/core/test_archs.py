"""The architecture registry: families found by their HF and GGUF names, and a new family added from its own
module alone (here, a test module) with a checkpoint that names a tensor differently."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgechat.core import archs
from edgechat.core.archs.llama import Llama
from edgechat.core.errors import EdgechatError
from edgechat.core.sources import load_model


@archs.register
class ToyLM(Llama):
    """A Llama whose checkpoints call the embedding `tok_embeddings` and the final norm `ln_f`."""
    name = "toylm"
    hf_architectures = ("ToyLMForCausalLM",)
    hf_model_type = "toylm"
    checkpoint_renames = (("model.embed_tokens.", "model.tok_embeddings."), ("model.norm.", "model.ln_f."))


def test_builtin_families_by_hf_and_gguf_name():
    assert {"llama", "qwen2"} <= set(archs.names())
    assert archs.for_hf({"architectures": ["Qwen2ForCausalLM"]}).name == "qwen2"
    assert archs.for_hf({"model_type": "llama"}).name == "llama"
    assert archs.for_gguf("llama").name == "llama"  # not the toy family, which shares llama's GGUF graph
    assert archs.get("qwen2").gguf_name == "qwen2"
    with pytest.raises(EdgechatError, match="unsupported GGUF architecture 'gpt2'"):
        archs.for_gguf("gpt2")


def test_end_of_turn_markers_come_from_the_families():
    assert {"<|im_end|>", "<|eot_id|>"} <= set(archs.end_of_turn_markers())


def test_a_second_family_under_a_taken_name_is_refused():
    class Other(Llama):
        name = "qwen2"

    archs.names()  # every built-in family registered
    with pytest.raises(ValueError, match="registered twice"):
        archs.register(Other)


@pytest.fixture(scope="module")
def toy_dir(tiny_llama_sharded_dir, tmp_path_factory):
    """The tiny transformers Llama, re-saved as a ToyLM checkpoint: renamed tensors, its own architecture name."""
    from safetensors.torch import load_file, save_file

    toy = tmp_path_factory.mktemp("toy") / "toy"
    shutil.copytree(tiny_llama_sharded_dir, toy)
    state = {}
    for f in sorted(toy.glob("model-*.safetensors")):
        state.update(load_file(str(f)))
        f.unlink()
    (toy / "model.safetensors.index.json").unlink()
    save_file({ToyLM().to_checkpoint_name(k): v for k, v in state.items()}, str(toy / "model.safetensors"))
    cfg = json.loads((toy / "config.json").read_text())
    (toy / "config.json").write_text(json.dumps({**cfg, "architectures": ["ToyLMForCausalLM"], "model_type": "toylm"}))
    return toy


def test_a_new_family_loads_converts_and_writes_back(toy_dir, tiny_llama_sharded_dir, tmp_path):
    from converters.gguf_writer import write_gguf
    from converters.hf_writer import write_hf
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = load_model(toy_dir)
    assert model.config.arch == "toylm"
    ids = model.tokenizer.encode("Once upon a time there was a little robot")
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_sharded_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
        ours = model.module(torch.tensor([ids]))[0].numpy()
    assert np.abs(want - ours).max() < 1e-4

    # GGUF: llama.cpp's llama graph, names from gguf-py's map
    gguf_path = write_gguf(model, tmp_path / "toy-f32.gguf", "f32")
    engine = LlamaCppEngine(gguf_path, kv_type="f32", threads=2, logits_all=True)
    try:
        assert np.abs(engine.logits_all(ids) - want).max() < 1e-3
    finally:
        engine.close()

    # back to the family's own checkpoint names
    write_hf(model, tmp_path / "hf")
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.tok_embeddings.weight" in names and "model.embed_tokens.weight" not in names
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["ToyLMForCausalLM"]
    again = load_model(tmp_path / "hf")
    assert torch.equal(again.module.model.norm.weight, model.module.model.norm.weight)
