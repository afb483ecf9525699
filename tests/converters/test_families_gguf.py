"""Each family's F32 GGUF against its shape as the planner counts it (targets/model_spec.py: tensor names,
shapes, parameters), and read back into the one Transformer (edgechat.core.load_gguf through the family's
config_from_gguf): the same logits as the model it was written from."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from converters.gguf_writer import write_gguf
from converters.hf_writer import write_hf
from edgechat.core.errors import EdgechatError
from edgechat.core.load_gguf import open_gguf
from edgechat.core.sources import load_model
from edgechat.core.rope import llama3_divisors, llama3_from_divisors
from runtimes.torch_engine import TorchEngine
from tests.converters.test_families import GGUF_FAMILIES, hf_logits, prompt_ids
from tests.family_checkpoints import build


@pytest.fixture(scope="session")
def family_base(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "families"


@pytest.mark.parametrize("name", GGUF_FAMILIES)
def test_param_count_is_the_modules_and_the_f32_ggufs(name, family_base, tmp_path):
    model = load_model(build(name, family_base))
    reader = open_gguf(write_gguf(model, tmp_path / "m.gguf", "f32"))
    in_file = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    spec = model.config.spec()
    assert {t.name: (t.cols, t.rows) if t.rows > 1 else (t.cols,) for t in spec.tensors()} == in_file
    rope = sum(t.n for t in spec.tensors() if t.kind == "rope")  # rope_freqs / rope_factors_*: not parameters
    assert rope == {"llama3": 8, "phi3": 12}.get(name, 0)
    params = sum(p.numel() for p in model.module.parameters())
    assert model.config.param_count() == params == sum(int(t.n_elements) for t in reader.tensors) - rope


def test_planner_predicts_every_tensor_type_of_a_phi3_q4_k_m(family_base, tmp_path):
    """Phi-3's fused attn_qkv takes llama.cpp's attn_v rule (more bits in some layers), as targets/quants says."""
    import gguf

    from converters.gguf_quantize import quantize_gguf
    from targets.quants import tensor_types

    model = load_model(build("phi3_wide", family_base))
    q = quantize_gguf(write_gguf(model, tmp_path / "m.gguf", "f32"), tmp_path / "q.gguf", "q4_k_m", threads=2)
    got = {t.name: t.tensor_type.name for t in gguf.GGUFReader(q).tensors}
    assert tensor_types("q4_k_m", model.config.spec()) == got
    assert {got[f"blk.{i}.attn_qkv.weight"] for i in range(4)} == {"Q4_K", "Q6_K"}


@pytest.mark.parametrize("name", GGUF_FAMILIES)
def test_f32_gguf_reads_back_with_the_same_logits(name, family_base, tmp_path):
    model = load_model(build(name, family_base))
    back = load_model(write_gguf(model, tmp_path / "m.gguf", "f32"))
    ids = prompt_ids(model)
    assert np.abs(TorchEngine(back).logits_all(ids) - TorchEngine(model).logits_all(ids)).max() < 1e-5
    # the family's features come back from the file (Mistral without a window is llama.cpp's llama)
    assert back.config.arch == ("llama" if name == "mistral_nowindow" else model.config.arch)
    for field in ("qk_norm", "sandwich_norms", "norm_unit_offset", "hidden_act", "layer_types", "no_rope_layers",
                  "sliding_window", "rope_type", "partial_rotary_factor", "tie_word_embeddings", "rope_local_theta"):
        assert getattr(back.config, field) == getattr(model.config, field), field
    # (Phi-3's special tokens swallow the whitespace after them: a GGUF has no flag for it, so the reader applies
    # llama.cpp's rule by the model's name)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": " Bye"}]
    assert back.chat_format().ids(chat) == model.chat_format().ids(chat)


@pytest.mark.parametrize("name", ["llama3", "phi3"])
def test_gguf_read_back_writes_hf_that_transformers_runs_alike(name, family_base, tmp_path):
    """Llama 3's RoPE parameters come back from rope_freqs alone, Phi-3's from its factor tensors."""
    src = build(name, family_base)
    back = load_model(write_gguf(load_model(src), tmp_path / "m.gguf", "f32"))
    write_hf(back, tmp_path / "hf")
    ids = prompt_ids(back)
    ref, _ = hf_logits(src, ids)
    out, _ = hf_logits(tmp_path / "hf", ids)
    assert np.abs(out - ref).max() < 1e-4


def test_llama3_rope_parameters_from_rope_freqs():
    # Llama 3.2 1B/3B (factor 32) and Llama 3.1 8B (factor 8): the released parameters, exactly
    for factor in (32.0, 8.0):
        got = llama3_from_divisors(llama3_divisors(64, 500000.0, factor, 1.0, 4.0, 8192).numpy(), 64, 500000.0)
        assert got == {"rope_type": "llama3", "rope_factor": factor, "rope_low_freq_factor": 1.0,
                       "rope_high_freq_factor": 4.0, "rope_original_max_seq_len": 8192}
    # a table no llama3 parameters give (divisors falling with the wavelength) is not taken
    assert llama3_from_divisors(np.linspace(8.0, 1.0, 32), 64, 500000.0) is None


def test_a_gguf_with_foreign_rope_freqs_is_refused_by_name(family_base, tmp_path):
    import gguf

    model = load_model(build("llama3", family_base))
    path = write_gguf(model, tmp_path / "m.gguf", "f32")
    reader = gguf.GGUFReader(str(path), "r+")
    t = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    t.data[:] = np.linspace(8.0, 1.0, len(t.data))
    reader.data.flush()
    del reader
    with pytest.raises(EdgechatError, match=r"^the GGUF's rope_freqs tensor is not Llama 3's RoPE scaling of these "
                                            r"dimensions \(16, base 500000\): edgechat reads llama3 rope_freqs only$"):
        load_model(path)
