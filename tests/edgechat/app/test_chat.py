"""The Chat API over real engines: answers, multi-turn history, streaming, context limits, sampling."""
import json

import numpy as np
import pytest

import edgechat
from edgechat.app.chat import Chat
from edgechat.core.errors import EdgechatError
from runtimes.base import Engine
from runtimes.llama_cpp_engine import LlamaCppEngine
from runtimes.torch_engine import TorchEngine
from targets.host import physical_cores
from tests.conftest import PARIS_SYSTEM, run_cli

QUESTION = "What is the capital of France?"


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_smollm_answers_paris_through_load(smollm_out, quant):
    chat = edgechat.load(smollm_out, quant=quant, system=PARIS_SYSTEM, max_tokens=32)
    reply = chat.send(QUESTION)
    assert "Paris" in reply.text
    s = reply.stats
    assert s.stop_reason == "eos" and s.completion_tokens == len(reply.token_ids) > 0
    assert s.ttft_s > 0 and s.prefill_tok_s > 0 and s.decode_tok_s > 0 and s.prompt_tokens == s.prefill_tokens
    # what ran it: llama.cpp's CPU variant, one thread per physical core, the prompt batch
    backend = chat.engine.describe()["cpu_backend"]
    assert (s.engine, s.threads, s.n_batch, s.cpu_backend) == ("llama.cpp", physical_cores(), 512, backend["label"])
    assert s.describe().endswith(f"; llama.cpp {backend['label']}, {physical_cores()} threads")


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_smollm_answers_paris_through_cli(smollm_out, quant):
    proc = run_cli("chat", str(smollm_out), "--quant", quant, "--prompt", QUESTION, "--system", PARIS_SYSTEM,
                   "--max-tokens", "32", "--json", check=True)
    out = json.loads(proc.stdout)
    assert "Paris" in out["text"] and out["stats"]["completion_tokens"] > 0


def test_cli_chat_streams_plain_text(smollm_out):
    proc = run_cli("chat", str(smollm_out), "--quant", "q8_0", "--prompt", QUESTION, "--system", PARIS_SYSTEM,
                   "--max-tokens", "32", check=True)
    assert "Paris" in proc.stdout and proc.stderr.strip() == ""


def test_cli_chat_repl(smollm_out):
    proc = run_cli("chat", str(smollm_out), "--quant", "q8_0", "--system", PARIS_SYSTEM, "--max-tokens", "24",
                   input=f"{QUESTION}\n/reset\n/exit\n", check=True)
    assert "Paris" in proc.stdout and "history cleared" in proc.stdout
    assert "stop: eos; llama.cpp " in proc.stdout and f", {physical_cores()} threads" in proc.stdout


def test_multi_turn_reuses_cache_and_keeps_history(smollm_out):
    chat = edgechat.load(smollm_out, quant="q8_0", system=PARIS_SYSTEM, max_tokens=24)
    first = chat.send(QUESTION)
    second = chat.send("And what is the capital of Italy?")
    assert "Rome" in second.text
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert chat.messages[1]["content"] == first.text
    assert second.stats.cached_tokens >= first.stats.prompt_tokens  # the first turn was not run again
    assert second.stats.prefill_tokens < second.stats.prompt_tokens
    chat.reset()
    assert chat.messages == [] and chat.send(QUESTION).stats.cached_tokens == 0


def test_streaming_pieces_join_to_reply(smollm_out):
    chat = edgechat.load(smollm_out, quant="q8_0", system=PARIS_SYSTEM, max_tokens=24)
    pieces = list(chat.send(QUESTION, stream=True))
    assert len(pieces) > 3 and "".join(pieces) == chat.last_reply.text


def test_one_conversation_same_ids_on_gguf_and_torch(smollm_model, smollm_out):
    convo = [{"role": "user", "content": "Hi! 12 + 30 = ? Café, naïve, 日本語 ✓"},
             {"role": "assistant", "content": "42. How can I help?"},
             {"role": "user", "content": QUESTION}]
    ids = [Chat(e, system=PARIS_SYSTEM).prompt_ids(convo) for e in
           (LlamaCppEngine(smollm_out / "smollm2-135m-instruct-q8_0.gguf", n_ctx=512), TorchEngine(smollm_model, n_ctx=512))]
    assert ids[0] == ids[1] and len(ids[0]) > 40


def test_context_full_drops_oldest_turns_keeps_system(stories_model):
    chat = Chat(TorchEngine(stories_model, n_ctx=64), system="Tom had a dog.", max_tokens=8)
    for i in range(6):
        chat.send(f"Once upon a time there was a girl number {i}.")
    assert sum(r["role"] == "user" for r in chat.messages) < 6
    assert chat.last_reply.stats.dropped_messages > 0 or len(chat.messages) < 12
    assert chat.render(chat.messages).startswith("Tom had a dog.")
    assert len(chat.prompt_ids(chat.messages)) <= 64


def test_message_longer_than_context_is_refused(stories_model):
    chat = Chat(TorchEngine(stories_model, n_ctx=32))
    with pytest.raises(EdgechatError, match=r"the message is \d+ tokens with the chat template, but the context holds 32"):
        chat.send("Once upon a time " * 20)
    assert chat.messages == []


def test_generation_stops_at_max_tokens_and_context(stories_model):
    chat = Chat(TorchEngine(stories_model, n_ctx=24), max_tokens=100)
    reply = chat.complete("Once upon a time")
    assert reply.stats.stop_reason == "context" and reply.stats.prompt_tokens + len(reply.token_ids) == 24
    assert Chat(TorchEngine(stories_model), max_tokens=5).complete("Once").stats.stop_reason == "length"


def test_sampling_seeded_repeatable_and_varied(stories_model):
    engine = TorchEngine(stories_model)
    runs = [Chat(engine, temperature=1.0, top_p=0.9, top_k=40, seed=s, max_tokens=30).complete("Once upon a time").token_ids
            for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


class ScriptedEngine(Engine):
    """Emits the UTF-8 bytes of 'é' as two tokens, the first an incomplete sequence."""
    name, n_ctx, eog_ids = "scripted", 64, frozenset({9})
    pieces = {1: b"\xc3", 2: b"\xa9", 3: b"!"}

    def __init__(self):
        self.script = [1, 2, 3, 9]

    def tokenize(self, text, add_bos):
        return [5, 6]

    def detokenize(self, ids):
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")

    def forward(self, ids, start_pos):
        logits = np.zeros(10, dtype=np.float32)
        logits[self.script.pop(0)] = 1.0
        return logits

    def logits_all(self, ids):
        raise NotImplementedError


def test_partial_utf8_is_held_back_not_dropped():
    chat = Chat(ScriptedEngine(), max_tokens=10)
    pieces = list(chat.send("x", stream=True))
    assert pieces == ["é", "!"] and chat.last_reply.text == "é!"
