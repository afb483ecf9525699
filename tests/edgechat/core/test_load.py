"""Loading sources into the one in-memory model; the torch module against Hugging Face transformers."""
import json

import numpy as np
import pytest
import torch

from edgechat.core.sources import load_model


def hf_logits(path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def our_logits(model, ids):
    with torch.no_grad():
        return model.module(torch.tensor([ids]))[0].numpy()


def test_stories_matches_transformers(stories_dir, stories_model):
    ids = stories_model.tokenizer.encode("Once upon a time, there was a little dog named Max.", add_bos=True)
    assert ids[0] == 1
    diff = np.abs(hf_logits(stories_dir, ids) - our_logits(stories_model, ids)).max()
    assert diff < 1e-4


def test_stories_config_and_tokenizer(stories_model):
    cfg = stories_model.config
    assert (cfg.arch, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size) == \
        ("llama", 5, 64, 8, 4, 512)
    assert cfg.tie_word_embeddings and cfg.param_count() == sum(
        p.numel() for p in stories_model.module.parameters())
    assert stories_model.tokenizer.bos_id == 1 and stories_model.tokenizer.eos_ids == [2]
    assert stories_model.name == "stories260K"


def test_tiny_qwen2_matches_transformers(tiny_qwen2_dir):
    model = load_model(tiny_qwen2_dir)
    assert model.config.arch == "qwen2" and model.config.attention_bias and not model.config.tie_word_embeddings
    assert model.module.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0  # the random biases arrived
    ids = model.tokenizer.encode("Hello there, the capital of France is Paris.")
    assert len(ids) > 5
    assert np.abs(hf_logits(tiny_qwen2_dir, ids) - our_logits(model, ids)).max() < 1e-4


def test_sharded_untied_llama_matches_transformers(tiny_llama_sharded_dir):
    assert (tiny_llama_sharded_dir / "model.safetensors.index.json").exists()
    model = load_model(tiny_llama_sharded_dir)
    assert not model.config.tie_word_embeddings
    ids = model.tokenizer.encode("Once upon a time there was a little robot")
    assert np.abs(hf_logits(tiny_llama_sharded_dir, ids) - our_logits(model, ids)).max() < 1e-4


def test_chat_template_from_tokenizer_config(tiny_qwen2_dir):
    model = load_model(tiny_qwen2_dir)
    text = model.chat_format().render([{"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = model.tokenizer.encode(text)
    assert ids[0] == model.tokenizer.tok.token_to_id("<|im_start|>")  # special tokens parse as one id


def test_chat_template_jinja_file_wins(tiny_qwen2_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_qwen2_dir, d)
    (d / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert load_model(d).chat_format().render([{"role": "user", "content": "x"}]) == "[x]"


def test_default_model_is_smollm2(smollm_model):
    cfg = smollm_model.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    assert smollm_model.source["kind"] == "default"
    assert "<|im_start|>" in smollm_model.chat_template
    assert smollm_model.tokenizer.pre == "smollm"


def test_qwen2_config_round_trips_through_hf_dict(tiny_qwen2_dir):
    from edgechat.core import archs

    cfg = archs.config_from_hf(json.loads((tiny_qwen2_dir / "config.json").read_text()))
    assert cfg.arch == "qwen2" and cfg.attention_bias and cfg.rms_norm_eps == 1e-6
    assert archs.config_from_hf(archs.config_to_hf(cfg)) == cfg


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "FalconForCausalLM"])
def test_other_architectures_refused_by_name(arch):
    from edgechat.core import archs
    from edgechat.core.errors import EdgechatError

    with pytest.raises(EdgechatError, match=f"unsupported architecture '{arch}'"):
        archs.config_from_hf({"architectures": [arch]})
