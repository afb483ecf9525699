"""The shared sampler's OpenAI penalties: the exact logit arithmetic on scripted logits, and on a real model the
penalized greedy reply equals a hand-made decode that applies them to the engine's own logits, on torch and on
llama.cpp alike, and through `edgechat chat`."""
import json

import numpy as np
import pytest

import edgechat
from edgechat.app.chat import Chat
from edgechat.app.sampling import Sampler, SamplingParams
from runtimes.llama_cpp_engine import LlamaCppEngine
from runtimes.torch_engine import TorchEngine
from tests.conftest import run_cli

LOGITS = np.array([2.0, 1.9, 1.0, -5.0], dtype=np.float32)


def picks(steps: int, **penalties) -> list[int]:
    s = Sampler(SamplingParams(**penalties))
    return [s(LOGITS) for _ in range(steps)]


def test_no_penalty_repeats_the_argmax():
    assert picks(4) == [0, 0, 0, 0]


def test_frequency_penalty_grows_with_each_use():
    # 0 once: 1.7 < 1.9 -> 1; both once: 1.7 vs 1.6 -> 0; then 0 twice: 1.4 vs 1.6 -> 1; ...
    assert picks(6, frequency_penalty=0.3) == [0, 1, 0, 1, 0, 1]
    # 0.6 a use: token 2 (1.0) comes in when 0 has been said twice (0.8) and 1 twice (0.7)
    assert picks(6, frequency_penalty=0.6) == [0, 1, 0, 1, 2, 0]


def test_presence_penalty_is_paid_once():
    assert picks(5, presence_penalty=0.5) == [0, 1, 0, 0, 0]  # once 0 and 1 have both paid, 0 leads for good
    assert picks(5, presence_penalty=1.5) == [0, 1, 2, 0, 0]  # everything said once pays the same 1.5


def test_negative_penalty_favours_what_was_said_and_the_buffer_is_untouched():
    logits = np.array([1.0, 2.0], dtype=np.float32)
    s = Sampler(SamplingParams(temperature=0.0, frequency_penalty=-2.0))
    s.said[0] += 1
    assert s(logits) == 0 and logits.tolist() == [1.0, 2.0]


def hand_decode(engine, ids: list[int], n: int, freq: float, pres: float) -> list[int]:
    """Greedy decoding with OpenAI's penalty formula applied to the engine's logits in float64, written out."""
    logits = engine.forward(ids, 0)
    out, counts = [], np.zeros(logits.size)
    while len(out) < n:
        x = logits.astype(np.float64) - counts * freq - (counts > 0) * pres
        tok = int(np.argmax(x))
        if tok in engine.eog_ids:
            break
        out.append(tok)
        counts[tok] += 1
        logits = engine.forward([tok], len(ids) + len(out) - 1)
    return out


@pytest.mark.parametrize("kind", ["torch", "llama.cpp"])
def test_penalized_greedy_reply_is_the_formula_on_a_real_model(kind, stories_model, stories_f32_gguf):
    engine = TorchEngine(stories_model) if kind == "torch" else LlamaCppEngine(stories_f32_gguf, threads=1)
    prompt = "Once upon a time"
    plain = Chat(engine, max_tokens=60).complete(prompt).token_ids
    got = Chat(engine, max_tokens=60, frequency_penalty=0.8, presence_penalty=0.4).complete(prompt).token_ids
    assert got == hand_decode(engine, engine.tokenize(prompt, add_bos=engine.add_bos), 60, 0.8, 0.4)
    assert got != plain
    # the point of it: the penalized reply says its commonest token less often than the plain one does
    assert max(np.bincount(got)) < max(np.bincount(plain))


def test_cli_chat_takes_the_penalties(stories_f32_gguf):
    args = dict(max_tokens=40, frequency_penalty=0.8, presence_penalty=0.4)
    want = edgechat.load(stories_f32_gguf, threads=1, **args).send("Once upon a time").token_ids
    proc = run_cli("chat", str(stories_f32_gguf), "--threads", "1", "--prompt", "Once upon a time", "--json",
                   *[a for k, v in args.items() for a in (f"--{k.replace('_', '-')}", str(v))], check=True)
    assert json.loads(proc.stdout)["token_ids"] == want
    bad = run_cli("chat", str(stories_f32_gguf), "--prompt", "hi", "--frequency-penalty", "3")
    assert bad.returncode == 2 and "'--frequency-penalty': 3.0 is not in the range -2<=x<=2" in bad.stderr
