"""Batched generation on llama.cpp (runtimes.llama_batch): the replies Chat gives one at a time, with more
prompts than parallel sequences (slots reused), seeded sampling, max_tokens, and prompts over the context."""
import pytest

from edgechat.app.chat import Chat
from edgechat.app.sampling import Sampler, SamplingParams
from edgechat.app.teacher_data import corpus_prompts
from runtimes.llama_batch import generate_many
from runtimes.llama_cpp_engine import LlamaCppEngine


@pytest.fixture(scope="module")
def engine(stories_f32_gguf):
    e = LlamaCppEngine(stories_f32_gguf, n_ctx=256, kv_type="f32")
    yield e
    e.close()


@pytest.fixture(scope="module")
def prompts(engine):
    chat = Chat(engine)
    return [chat.prompt_ids([{"role": "user", "content": p}]) for p in corpus_prompts(9, 0)]


def greedy(n):
    return [Sampler(SamplingParams())] * n  # stateless at temperature 0


def one_at_a_time(engine, ids, max_tokens, **sampling):
    chat = Chat(engine, max_tokens=max_tokens, **sampling)
    chat.probes = False
    for _ in chat._generate(ids, chat.params, as_turn=False):
        pass
    return chat.last_reply.token_ids, chat.last_reply.stats.stop_reason


def test_greedy_replies_match_chat(engine, prompts):
    """9 prompts over 3 slots, 200 tokens in a 256-token context: every reply is the one Chat generates alone,
    ended where Chat ends it."""
    assert len({len(p) for p in prompts}) > 3  # prompts of different lengths share the batches
    done = []
    outs = generate_many(engine, prompts, 200, greedy(len(prompts)), parallel=3, progress=done.append)
    assert done == list(range(1, 10))
    expected = [one_at_a_time(engine, p, 200) for p in prompts]
    assert outs == [ids for ids, _ in expected]
    assert {stop for _, stop in expected} == {"context", "length"}  # a full context ends a reply too


def test_seeded_sampling_matches_chat(engine, prompts):
    params = [SamplingParams(temperature=1.0, top_p=0.9, seed=s) for s in range(len(prompts))]
    outs = generate_many(engine, prompts, 24, [Sampler(p) for p in params], parallel=4)
    assert outs == [one_at_a_time(engine, p, 24, temperature=1.0, top_p=0.9, seed=s)[0]
                    for s, p in enumerate(prompts)]


def test_prompt_over_the_context_is_left_out(engine, prompts):
    too_long = prompts[0] * (engine.n_ctx // len(prompts[0]) + 1)
    outs = generate_many(engine, [prompts[1], too_long, prompts[2]], 8, greedy(3), parallel=2)
    assert outs[1] is None and outs[0] == one_at_a_time(engine, prompts[1], 8)[0]
    assert outs[2] == one_at_a_time(engine, prompts[2], 8)[0]


def test_end_of_generation_frees_the_slot(engine, prompts):
    """A sampler that says end-of-turn on its 4th call ends that reply at 3 tokens (the end token not kept);
    the prompt that takes its slot still gets Chat's reply."""
    eos = min(engine.eog_ids)

    def stops_at_4():
        calls = []

        def pick(logits):
            calls.append(1)
            return eos if len(calls) == 4 else greedy(1)[0](logits)
        return pick

    outs = generate_many(engine, prompts[:3], 16, [stops_at_4()] + greedy(2), parallel=2)
    assert outs[0] == one_at_a_time(engine, prompts[0], 3)[0]
    assert outs[1:] == [one_at_a_time(engine, p, 16)[0] for p in prompts[1:3]]
