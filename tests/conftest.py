"""Shared fixtures: real models from ../shared/data (skipped with a reason when absent), the embedded
SmolLM2-135M-Instruct, and session-scoped conversions so each expensive export happens once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.background import jobs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
STORIES = DATA / "stories260K" / "hf"
KNOWN_STORY = ", there was a little girl named Lily. She loved to play outside in the park."
PARIS_SYSTEM = "Answer the user's question in one sentence."
STORIES_SEQ = 128  # max_seq_len of the stories260K .pte


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def stories_dir() -> Path:
    return need(STORIES)


@pytest.fixture(scope="session")
def stories_model(stories_dir):
    from edgechat.core.sources import load_model

    return load_model(stories_dir)


@pytest.fixture(scope="session")
def stories_f32_gguf(stories_model, tmp_path_factory) -> Path:
    from converters.gguf_writer import write_gguf

    return write_gguf(stories_model, tmp_path_factory.mktemp("stories") / "stories-f32.gguf", "f32")


@pytest.fixture(scope="session")
def smollm_model():
    from edgechat.core.sources import load_model

    return load_model(None)


@pytest.fixture(scope="session")
def smollm_out(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted once to Q8_0 and Q4_K_M (no importance matrix), through the CLI."""
    out = tmp_path_factory.mktemp("smollm") / "out"
    run_cli("convert", "-o", str(out), "--quant", "q8_0", "--quant", "q4_k_m", "--no-eval", "--no-imatrix",
            check=True)  # the importance matrix (on by default) is tested on stories260K: keep this fixture cheap
    return out


def run_cli(*args, check=False, input=None) -> subprocess.CompletedProcess:
    """The real `edgechat` command in a subprocess: exit codes and stderr exactly as a user sees them."""
    proc = subprocess.run([sys.executable, "-m", "edgechat.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, input=input, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgechat {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def make_tokenizer_dir(path: Path, vocab_size: int = 320) -> int:
    """A real byte-level BPE tokenizer.json trained on a little text, with ChatML special tokens."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["Hello there, how are you today? I am fine, thank you.", "The capital of France is Paris.",
            "Once upon a time there was a little robot who loved to read books."] * 50
    tok.train_from_iterator(text, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "bos_token": None, "chat_template": CHATML}))
    return tok.get_vocab_size()


def randomize_biases(model):
    import torch

    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.data = torch.randn(p.shape, generator=g) * 0.5


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen2 (q/k/v biases, untied embeddings) saved by transformers, with a real tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("qwen2") / "tiny-qwen2"
    vocab = make_tokenizer_dir(path)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, eos_token_id=2)
    model = Qwen2ForCausalLM(cfg)
    randomize_biases(model)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_sharded_dir(tmp_path_factory) -> Path:
    """A random tiny Llama with untied embeddings, saved as a sharded safetensors checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("llama") / "tiny-llama"
    vocab = make_tokenizer_dir(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path, max_shard_size="50KB")
    return path


def shared_export(tmp_path_factory, name, source, quants, formats=("pte",), **extra) -> Path:
    """Convert once per test session (exports take a minute or more): the output directory lives in the
    session's base temp dir, so every test module that asks for `name` gets the same one."""
    from edgechat.app.pipeline import ConvertOptions, convert
    from edgechat.reports.progress import Steps

    out = tmp_path_factory.getbasetemp() / f"pte-{name}"
    if not (out / "edgechat.json").exists():
        opts = ConvertOptions(formats=list(formats), quants=list(quants), evaluate=False, extra=extra)
        with Steps(enabled=False) as steps:
            convert(source, out, opts, steps)
    return out


def artifact(out: Path, fmt: str, quant: str) -> Path:
    arts = json.loads((out / "edgechat.json").read_text())["artifacts"]
    return out / next(a["file"] for a in arts if a["format"] == fmt and a["quant"] == quant)


@pytest.fixture(scope="session")
def stories_out(tmp_path_factory, stories_dir):
    """stories260K as an F32 GGUF and an fp32 .pte, from one load."""
    return shared_export(tmp_path_factory, "stories", stories_dir, ["f32", "fp32"], formats=("gguf", "pte"),
                         max_seq_len=STORIES_SEQ, eval_method=True)


@pytest.fixture(scope="session")
def smol_8da4w(tmp_path_factory):
    """The embedded SmolLM2-135M-Instruct as an 8da4w .pte (the one SmolLM2 export of the session, made by
    `edgechat convert` in the background while the tests before it run: tests/background.py)."""
    return jobs.wait("smollm2-8da4w", tmp_path_factory.getbasetemp())


def pytest_collection_finish(session):
    """Start the slow exports the selected tests need (tests/background.py), as soon as they are known."""
    if session.config.option.collectonly or not session.items:
        return
    fixtures = {f for item in session.items for f in getattr(item, "fixturenames", ())}
    jobs.start(session.config._tmp_path_factory.getbasetemp(), fixtures)


def pytest_sessionfinish(session):
    jobs.stop()
