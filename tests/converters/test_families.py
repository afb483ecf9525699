"""Llama 3.x (llama3 RoPE scaling), Qwen3, Mistral, SmolLM3, Phi-3 and Gemma 3 through the one Transformer:
tiny random checkpoints saved by transformers (tests/family_checkpoints.py), each compared with transformers,
written as GGUF and run by llama.cpp, written back as HF, pruned, and refused by name where an engine cannot
run a feature. Prompts are 80 tokens: beyond the sliding windows (8) and the original contexts (32)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import edgechat
from converters.gguf_quantize import quantize_gguf
from converters.gguf_writer import write_gguf
from converters.hf_writer import write_hf
from converters.prune import measure_importance, plan_from_options, prune
from edgechat.core.errors import EdgechatError
from edgechat.core.sources import load_model
from runtimes.llama_cpp_engine import LlamaCppEngine
from runtimes.torch_engine import TorchEngine
from tests.conftest import run_cli
from tests.family_checkpoints import build

FAMILIES = ["llama3", "qwen3", "mistral", "smollm3", "phi3", "gemma3"]
GGUF_FAMILIES = ["llama3", "qwen3", "mistral_nowindow", "smollm3", "phi3", "gemma3"]
# llama.cpp's CPU GeGLU rounds its input to fp16 for a table lookup (ggml-cpu/vec.h GGML_GELU_FP16): Gemma 3's
# F32 GGUF sits ~3e-4 from the fp32 reference; every SwiGLU family is within 1e-6
GGUF_BOUND = {"gemma3": 1e-3}


@pytest.fixture(scope="session")
def family_base(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "families"


def prompt_ids(model, n=80):
    return torch.randint(3, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(0)).tolist()


def hf_logits(path, ids):
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].numpy(), hf


@pytest.mark.parametrize("name", FAMILIES)
def test_torch_matches_transformers(name, family_base):
    path = build(name, family_base)
    model = load_model(path)
    ids = prompt_ids(model)
    ref, _ = hf_logits(path, ids)
    assert np.abs(TorchEngine(model).logits_all(ids) - ref).max() < 1e-4
    # with the KV cache: a prefill of 50, then one token at a time past the window and the original context
    m = model.module
    m.setup_cache(128)
    with torch.no_grad():
        cached = torch.cat([m(torch.tensor([ids[:50]]), 0)] + [m(torch.tensor([[t]]), 50 + i) for i, t in enumerate(ids[50:])], 1)
    assert np.abs(cached[0].numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("name", GGUF_FAMILIES)
def test_f32_gguf_matches_torch_and_quantized_run(name, family_base, tmp_path):
    model = load_model(build(name, family_base))
    path = write_gguf(model, tmp_path / f"{name}-f32.gguf", "f32")
    ids = prompt_ids(model)
    llama = LlamaCppEngine(path, kv_type="f32", logits_all=True, threads=2)
    assert np.abs(llama.logits_all(ids) - TorchEngine(model).logits_all(ids)).max() < GGUF_BOUND.get(name, 1e-4)
    a = edgechat.Chat(LlamaCppEngine(path, kv_type="f32", threads=2), max_tokens=16).complete("Once upon a time")
    b = edgechat.Chat(TorchEngine(model), max_tokens=16).complete("Once upon a time")
    assert a.token_ids == b.token_ids
    for q in ("q8_0", "q4_k_m"):
        out = quantize_gguf(path, tmp_path / f"{name}-{q}.gguf", q, threads=2)
        logits = LlamaCppEngine(out, logits_all=True, threads=2).logits_all(ids)
        assert logits.shape == (len(ids), model.config.vocab_size) and np.isfinite(logits).all()


def test_llama3_gguf_carries_rope_freqs(family_base, tmp_path):
    from edgechat.core.load_gguf import open_gguf
    from edgechat.core.rope import rope_freq_factors

    model = load_model(build("llama3", family_base))
    reader = open_gguf(write_gguf(model, tmp_path / "l3.gguf", "f32"))
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    assert np.array_equal(np.asarray(freqs.data), rope_freq_factors(model.config).numpy())
    assert set(np.unique(freqs.data).round(3)) >= {1.0, 8.0}  # high frequencies kept, low ones divided by 8


def test_gguf_refuses_what_llama_cpp_cannot_run(family_base, tmp_path):
    mistral = load_model(build("mistral", family_base))
    with pytest.raises(EdgechatError, match=r"^cannot write GGUF: mistral's sliding window \(8 tokens\) is not run by "
                                            r"llama.cpp's llama graph, which would attend beyond it; use --format pte or hf$"):
        write_gguf(mistral, tmp_path / "m.gguf")
    smol = load_model(build("smollm3", family_base))
    smol.config = smol.config.keep_layers([0, 1, 3])
    with pytest.raises(EdgechatError, match=r"llama.cpp's smollm3 graph skips RoPE in every 4th layer, and this "
                                            r"model's no_rope_layers is \[1, 1, 0\]"):
        write_gguf(smol, tmp_path / "s.gguf")
    gemma = load_model(build("gemma3", family_base))
    gemma.config = gemma.config.replace(query_pre_attn_scalar=32.0)
    with pytest.raises(EdgechatError, match=r"query_pre_attn_scalar is 32 \(head_dim 16\)"):
        write_gguf(gemma, tmp_path / "g.gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("name", FAMILIES)
def test_hf_write_back_loads_in_transformers_with_identical_logits(name, family_base, tmp_path):
    model = load_model(build(name, family_base))
    write_hf(model, tmp_path / "hf")
    ids = prompt_ids(model)
    ref, _ = hf_logits(build(name, family_base), ids)
    back, _ = hf_logits(tmp_path / "hf", ids)
    assert np.array_equal(back, ref)


@pytest.mark.parametrize("name", GGUF_FAMILIES)
def test_pruned_checkpoints_load_in_transformers_and_llama_cpp(name, family_base, tmp_path):
    model = load_model(build(name, family_base))
    cfg = model.config
    # depth where llama.cpp takes any layer pattern (SmolLM3's every-4th-layer rule does not survive it)
    layers = 0 if name == "smollm3" else 1
    # Phi-3 keeps heads x head_dim == hidden (transformers sizes its rotary factors by hidden / heads)
    heads = 0 if name == "phi3" else cfg.n_rep
    plan = plan_from_options(cfg, layers=layers, ffn_frac=0.5, heads=heads)
    imp = measure_importance(model, [prompt_ids(model, 40), prompt_ids(model, 60)[20:]])
    small = prune(model, plan, imp)
    assert (small.config.num_layers, small.config.intermediate_size, small.config.num_heads) == (
        cfg.num_layers - layers, 64, cfg.num_heads - heads)
    params = sum(p.numel() for p in small.module.parameters())
    write_hf(small, tmp_path / "hf")
    ids = prompt_ids(model)
    ref, hf = hf_logits(tmp_path / "hf", ids)
    assert hf.num_parameters() == params
    assert np.abs(TorchEngine(small).logits_all(ids) - ref).max() < 1e-4
    gguf = write_gguf(small, tmp_path / "p.gguf", "f32")
    llama = LlamaCppEngine(gguf, kv_type="f32", logits_all=True, threads=2)
    assert np.abs(llama.logits_all(ids) - ref).max() < GGUF_BOUND.get(name, 1e-4)


def test_qwen3_template_renders_as_transformers(family_base):
    from transformers import AutoTokenizer

    path = build("qwen3", family_base)
    fmt = load_model(path).chat_format()
    tok = AutoTokenizer.from_pretrained(path)
    chat = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "<think>\nThe user asks about France.\n</think>\n\nParis."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "<think>\nItaly's capital.\n</think>\n\nRome."}]
    for msgs in (chat[:1], chat[:3], chat):
        ours = fmt.render(msgs, add_generation_prompt=msgs[-1]["role"] == "user")
        assert ours == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=msgs[-1]["role"] == "user")
        assert fmt.encode(ours) == tok(ours, add_special_tokens=False)["input_ids"]
    assert "<think>\nThe user" not in fmt.render(chat)  # earlier turns' reasoning is dropped
    assert "<think>\nItaly's capital.\n</think>\n\nRome." in fmt.render(chat)


def test_unsupported_architecture_and_rope_type_exit_2_with_one_line(family_base, tmp_path):
    for change, message in (
            ({"architectures": ["GPTNeoXForCausalLM"]}, "unsupported architecture 'GPTNeoXForCausalLM': edgechat supports "
             "Gemma3ForCausalLM, LlamaForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM, "
             "Qwen3ForCausalLM, SmolLM3ForCausalLM"),
            ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 500000.0}},
             "unsupported rope type 'yarn' for llama: edgechat supports default, linear, llama3")):
        src = tmp_path / "src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(build("llama3", family_base), src)
        cfg = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**cfg, **change}))
        proc = run_cli("convert", str(src), "-o", str(tmp_path / "out"), "--no-eval")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [f"edgechat: error: {message}"]
        assert not (tmp_path / "out").exists()


PTE_SEQ = 64


@pytest.fixture(scope="session")
def family_pte(tmp_path_factory, family_base):
    """fp32 .pte of a family, exported on first use and once per session (each export takes 20-70 s)."""
    from tests.conftest import artifact, shared_export

    return lambda name: artifact(shared_export(tmp_path_factory, f"family-{name}", build(name, family_base), ["fp32"],
                                               max_seq_len=PTE_SEQ), "pte", "fp32")


@pytest.mark.parametrize("name", FAMILIES)
def test_fp32_pte_matches_torch_over_prefill_and_16_decode_steps(name, family_base, family_pte):
    from runtimes.pte_engine import PteEngine

    model = load_model(build(name, family_base))
    ids = prompt_ids(model, 40)  # beyond the window and the original context
    pte, ref = PteEngine(family_pte(name)), TorchEngine(model, n_ctx=PTE_SEQ)
    errors = [np.abs(pte.forward(ids, 0) - ref.forward(ids, 0)).max()]
    for i in range(16):
        tok = 5 + i
        errors.append(np.abs(pte.forward([tok], len(ids) + i) - ref.forward([tok], len(ids) + i)).max())
    assert max(errors) < 1e-4


# (rendered start, rendered end) of the conversation below, by each family's own template
RENDERED = {
    "llama3": ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "qwen3": ("<|im_start|>user\nHello", "<|im_start|>assistant\n"),
    "mistral": ("<s>[INST] Hello", " [/INST]"),
    "smollm3": ("<|im_start|>user\nHello", "<|im_start|>assistant\n"),
    "phi3": ("<|user|>\nHello", "<|assistant|>\n"),
    "gemma3": ("<bos><start_of_turn>user\nHello", "<start_of_turn>model\n"),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_one_conversation_gives_the_same_prompt_ids_on_all_three_engines(name, family_base, family_pte, tmp_path):
    from runtimes.pte_engine import PteEngine

    model = load_model(build(name, family_base))
    messages = [{"role": "user", "content": "Hello there, how are you today?"},
                {"role": "assistant", "content": "I am fine, thank you."},
                {"role": "user", "content": "The capital of France?"}]
    # Mistral's windowed checkpoint has no GGUF: its windowless twin has the same tokenizer and template
    gguf_model = load_model(build("mistral_nowindow", family_base)) if name == "mistral" else model
    gguf = write_gguf(gguf_model, tmp_path / "g.gguf", "f32")
    engines = [TorchEngine(model), LlamaCppEngine(gguf, kv_type="f32", threads=2), PteEngine(family_pte(name))]
    ids = [e.chat_format.ids(messages) for e in engines]
    assert ids[0] == ids[1] == ids[2]
    text = model.chat_format().render(messages)
    start, end = RENDERED[name]
    assert text.startswith(start) and text.endswith(end)
    bos = model.tokenizer.bos_id
    if name in ("llama3", "mistral", "gemma3"):  # the template writes BOS once, and nothing adds another
        assert ids[0][0] == bos and ids[0].count(bos) == 1
    else:
        assert bos is None or bos not in ids[0]
