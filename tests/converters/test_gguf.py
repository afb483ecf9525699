"""GGUF export (gguf-py) and quantization (llama.cpp), checked by llama.cpp itself."""
import numpy as np
import pytest

import edgechat
from converters.gguf_quantize import quantize_gguf
from converters.gguf_writer import write_gguf
from edgechat.core.load_gguf import load_gguf, open_gguf, read_vocab
from edgechat.core.sources import default_model_path, load_model
from runtimes.llama_cpp_engine import LlamaCppEngine
from runtimes.torch_engine import TorchEngine
from tests.conftest import KNOWN_STORY


def test_f32_gguf_logits_match_torch(stories_model, stories_f32_gguf):
    llama = LlamaCppEngine(stories_f32_gguf, kv_type="f32", logits_all=True, threads=2)
    torch_engine = TorchEngine(stories_model)
    ids = torch_engine.tokenize("Once upon a time, there was a big dog. The dog was sad.", add_bos=True)
    assert llama.tokenize("Once upon a time, there was a big dog. The dog was sad.", add_bos=True) == ids
    assert np.abs(llama.logits_all(ids) - torch_engine.logits_all(ids)).max() < 1e-4


def test_greedy_ids_equal_on_both_engines_and_known_text(stories_model, stories_f32_gguf):
    a = edgechat.Chat(LlamaCppEngine(stories_f32_gguf, kv_type="f32", threads=2), max_tokens=40).complete("Once upon a time")
    b = edgechat.Chat(TorchEngine(stories_model), max_tokens=40).complete("Once upon a time")
    assert a.token_ids == b.token_ids
    assert a.text.startswith(KNOWN_STORY) and "a little girl named Lily" in b.text


def test_qwen2_gguf_matches_torch(tiny_qwen2_dir, tmp_path):
    model = load_model(tiny_qwen2_dir)
    path = write_gguf(model, tmp_path / "q.gguf", "f32")
    llama = LlamaCppEngine(path, kv_type="f32", logits_all=True, threads=2)
    ids = model.tokenizer.encode("Hello there, how are you today?")
    assert llama.tokenize("Hello there, how are you today?", add_bos=False) == ids
    assert np.abs(llama.logits_all(ids) - TorchEngine(model).logits_all(ids)).max() < 1e-4


def test_untied_llama_gguf_matches_torch(tiny_llama_sharded_dir, tmp_path):
    model = load_model(tiny_llama_sharded_dir)
    path = write_gguf(model, tmp_path / "l.gguf", "f32")
    assert any(t.name == "output.weight" for t in open_gguf(path).tensors)
    ids = model.tokenizer.encode("Once upon a time there was a little robot")
    llama = LlamaCppEngine(path, kv_type="f32", logits_all=True, threads=2)
    assert np.abs(llama.logits_all(ids) - TorchEngine(model).logits_all(ids)).max() < 1e-4


def test_round_trip_gguf_model_gguf(smollm_model, tmp_path):
    """GGUF (Q4_1) in -> model -> F32 GGUF out: the same dequantized tensors and the same tokenizer."""
    src = open_gguf(default_model_path())
    out = write_gguf(smollm_model, tmp_path / "rt.gguf", "f32")
    back = load_gguf(out)
    for name, tensor in smollm_model.state_dict().items():
        assert np.array_equal(tensor.numpy(), back.state_dict()[name].numpy()), name
    a, b = read_vocab(src), read_vocab(open_gguf(out))
    assert a.tokens == b.tokens and a.types == b.types and a.merges == b.merges
    assert (a.pre, a.bos_id, a.eos_id, a.add_bos) == (b.pre, b.bos_id, b.eos_id, b.add_bos)
    reader = open_gguf(out)
    assert reader.fields["tokenizer.chat_template"].contents() == smollm_model.chat_template
    assert reader.fields["general.architecture"].contents() == "llama"


def test_round_trip_sentencepiece_tokenizer(stories_model, stories_f32_gguf):
    back = load_gguf(stories_f32_gguf)
    text = "Once upon a time, Lily saw a big red ball! 123"
    assert back.tokenizer.encode(text) == stories_model.tokenizer.encode(text)
    assert back.tokenizer.to_gguf(512) == stories_model.tokenizer.to_gguf(512)


@pytest.mark.parametrize("quant,expected", [("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("q4_k_m", "Q4_K")])
def test_llama_cpp_quantizer_types(smollm_model, tmp_path_factory, quant, expected):
    base = tmp_path_factory.getbasetemp() / "smollm-f32.gguf"
    if not base.exists():
        write_gguf(smollm_model, base, "f32")
    out = quantize_gguf(base, tmp_path_factory.mktemp(quant) / f"m-{quant}.gguf", quant, threads=2)
    types = {t.tensor_type.name for t in open_gguf(out).tensors}
    assert expected in types
    assert out.stat().st_size < base.stat().st_size / 3


def test_imatrix_changes_q4_quantization(stories_model, stories_f32_gguf, tmp_path):
    from converters.imatrix import compute_imatrix

    seqs = [stories_model.tokenizer.encode("Once upon a time there was a cat. The cat liked milk.")]
    imatrix = compute_imatrix(stories_model, seqs)
    assert imatrix["blk.0.attn_q.weight"].shape == (64,) and imatrix["blk.0.ffn_down.weight"].shape == (172,)
    assert "token_embd.weight" in imatrix  # the tied output matmul, named as llama.cpp names it
    plain = quantize_gguf(stories_f32_gguf, tmp_path / "plain.gguf", "q4_0")
    weighted = quantize_gguf(stories_f32_gguf, tmp_path / "imat.gguf", "q4_0", imatrix=imatrix)
    assert plain.read_bytes() != weighted.read_bytes()


def test_load_quantized_gguf_dequantizes_each_type(smollm_model, smollm_out):
    """Q8_0, Q4_K, Q6_K, Q5_0 (llama.cpp's fallback for 576-wide rows) and F32 read back close to the source."""
    ref = smollm_model.state_dict()
    for quant, types, tol in (("q8_0", {"Q8_0", "F32"}, 0.02), ("q4_k_m", {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"}, 0.2)):
        path = smollm_out / f"smollm2-135m-instruct-{quant}.gguf"
        assert types <= {t.tensor_type.name for t in open_gguf(path).tensors}
        back = load_gguf(path).state_dict()
        for name in ("model.layers.3.self_attn.q_proj.weight", "model.layers.7.mlp.down_proj.weight",
                     "model.embed_tokens.weight"):
            err = (back[name] - ref[name]).norm() / ref[name].norm()
            assert err < tol, (quant, name, float(err))


def test_f16_gguf(stories_model, tmp_path):
    path = write_gguf(stories_model, tmp_path / "s16.gguf", "f16")
    assert {t.tensor_type.name for t in open_gguf(path).tensors} == {"F16", "F32"}
    back = load_gguf(path).state_dict()
    w = stories_model.state_dict()["model.layers.0.mlp.up_proj.weight"]
    assert np.array_equal(back["model.layers.0.mlp.up_proj.weight"].numpy(), w.half().float().numpy())
