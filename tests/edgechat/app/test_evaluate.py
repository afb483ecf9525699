"""Quality figures: llama.cpp-style perplexity chunks, KL divergence and top-1 agreement vs the reference."""
import json

import numpy as np
import pytest
import torch

from converters.gguf_quantize import quantize_gguf
from edgechat.core.data import EvalData, read_eval_data
from edgechat.app.evaluate import dialogue_sequences, evaluate, log_softmax
from runtimes.llama_cpp_engine import LlamaCppEngine
from runtimes.torch_engine import TorchEngine
from tests.conftest import run_cli

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
         "One day, she saw a big, red ball. She wanted to play with it. Her mom said she could. ") * 30


@pytest.fixture(scope="module")
def story_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("evaldata") / "story.txt"
    path.write_text(STORY)
    return path


def test_perplexity_is_llama_cpp_chunk_scoring(stories_model):
    """One chunk: BOS first, positions n_ctx/2 .. n_ctx-2 each predicting the next token."""
    engine = TorchEngine(stories_model)
    q = evaluate(engine, engine, EvalData("text", "story", text=STORY), n_ctx=128, max_chunks=1)
    ids = engine.tokenize(STORY, add_bos=True)[:128]
    with torch.no_grad():
        logits = stories_model.module(torch.tensor([ids]))[0].numpy()
    pos = np.arange(64, 127)
    nll = -log_softmax(logits[pos])[np.arange(len(pos)), np.array(ids)[pos + 1]]
    assert q.tokens_scored == 63 and q.sequences == 1
    assert q.ppl == pytest.approx(float(np.exp(nll.mean())), rel=1e-6)
    assert q.mean_kld == pytest.approx(0.0, abs=1e-9) and q.top1_agreement == 1.0


def test_quant_ladder(stories_model, stories_f32_gguf, tmp_path):
    data = EvalData("text", "story", text=STORY)
    ref = TorchEngine(stories_model, n_ctx=128)
    results = {}
    for quant in ("f32", "q8_0", "q4_0"):
        path = stories_f32_gguf if quant == "f32" else quantize_gguf(stories_f32_gguf, tmp_path / f"{quant}.gguf", quant)
        engine = LlamaCppEngine(path, n_ctx=128, logits_all=True, kv_type="f32")
        results[quant] = evaluate(engine, ref, data, n_ctx=128, max_chunks=4)
    assert results["f32"].mean_kld < 1e-5 and results["f32"].top1_agreement > 0.99
    assert abs(results["f32"].ppl_ratio - 1) < 1e-3
    assert results["f32"].mean_kld < results["q8_0"].mean_kld < results["q4_0"].mean_kld
    assert results["q4_0"].top1_agreement < results["q8_0"].top1_agreement


def test_dialogue_mode_scores_assistant_turns_only(smollm_model):
    engine = TorchEngine(smollm_model, n_ctx=256)
    convo = [{"role": "user", "content": "Hi, how are you?"}, {"role": "assistant", "content": "Great, thanks!"},
             {"role": "user", "content": "Bye."}, {"role": "assistant", "content": "See you soon."}]
    (ids, pos), = list(dialogue_sequences(engine, [convo], 256))
    scored = [smollm_model.tokenizer.tok.decode([ids[p + 1]], skip_special_tokens=False) for p in pos]
    text = "".join(scored)
    assert "Great, thanks!<|im_end|>" in text and "See you soon.<|im_end|>" in text
    assert "Hi" not in text and "Bye" not in text


def test_read_dailydialog_format(tmp_path):
    f = tmp_path / "dd.txt"
    f.write_text("Hello , how are you ? __eou__ Fine , thanks . __eou__ Good . __eou__\nA __eou__ B __eou__\n")
    data = read_eval_data(f)
    assert data.kind == "dialogues" and len(data.dialogues) == 2
    assert data.dialogues[0] == [{"role": "user", "content": "Hello , how are you ?"},
                                 {"role": "assistant", "content": "Fine , thanks ."},
                                 {"role": "user", "content": "Good ."}]


def test_default_eval_data_is_held_out_chitchat():
    data = read_eval_data(None)
    assert data.kind == "dialogues" and len(data.dialogues) == 20 and data.name == "chitchat-heldout-20"
    assert all(m["role"] in ("user", "assistant") for d in data.dialogues for m in d)


def test_cli_eval_json(stories_f32_gguf, stories_dir, story_file):
    proc = run_cli("eval", str(stories_f32_gguf), "--reference", str(stories_dir), "--data", str(story_file),
                   "--n-ctx", "128", "--chunks", "3", "--json", check=True)
    q = json.loads(proc.stdout)
    assert q["sequences"] == 3 and q["tokens_scored"] == 3 * 63 and q["mode"] == "text"
    assert q["mean_kld"] < 1e-3 and q["top1_agreement"] > 0.95 and abs(q["ppl_ratio"] - 1) < 0.01


def test_convert_records_quality_in_manifest(stories_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("convert", str(stories_dir), "-o", str(out), "--quant", "q8_0", check=True)
    manifest = json.loads((out / "edgechat.json").read_text())
    (art,) = manifest["artifacts"]
    assert art["file"] == "stories260k-q8_0.gguf" and art["bytes"] == (out / art["file"]).stat().st_size
    q = art["quality"]
    assert q["data"] == "chitchat-heldout-20" and q["tokens_scored"] > 500
    assert 0 < q["mean_kld"] < 0.05 and q["top1_agreement"] > 0.8 and q["ppl"] > 1
    assert manifest["source"]["sha256"] and manifest["tools"]["llama_cpp_python"] == "0.3.36"
    assert sorted(p.name for p in out.iterdir()) == ["edgechat.json", "stories260k-q8_0.gguf", "tokenizer.model"]
