"""--format hf: the in-memory model back as a Hugging Face checkpoint that transformers loads."""
import numpy as np
import torch

from edgechat.core.sources import load_model
from tests.conftest import run_cli


def test_stories_hf_round_trip(stories_model, tmp_path):
    out = tmp_path / "hf"
    run_cli("convert", str(stories_model.source["path"]), "-o", str(out), "--format", "hf", "--no-eval", check=True)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = stories_model.tokenizer.encode("Once upon a time, there was a cat.")
    with torch.no_grad():
        a = hf(torch.tensor([ids])).logits[0].numpy()
        b = stories_model.module(torch.tensor([ids]))[0].numpy()
    assert np.abs(a - b).max() < 1e-5
    back = load_model(out)
    assert back.config == stories_model.config
    assert back.tokenizer.encode("Lily and Tom") == stories_model.tokenizer.encode("Lily and Tom")


def test_smollm_hf_dir_matches_transformers_tokenizer_and_template(smollm_model, tmp_path):
    from converters.hf_writer import write_hf
    from transformers import AutoTokenizer

    out = tmp_path / "smol-hf"
    write_hf(smollm_model, out)
    tok = AutoTokenizer.from_pretrained(out)
    convo = [{"role": "user", "content": "What is 2+2? Café 日本 12345"}]
    text = tok.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
    assert text == smollm_model.chat_format().render(convo)
    assert tok(text, add_special_tokens=False)["input_ids"] == smollm_model.tokenizer.encode(text)
    assert tok.eos_token == "<|im_end|>"
