"""Teacher-written distillation data: the teacher's own greedy replies (llama.cpp on its GGUF, the same as the
torch reference's through Chat), Magpie user turns, prompts files, the cache and its hash, the assistant mask."""
import json
import re
from dataclasses import replace

import pytest

from edgechat.app.chat import Chat
from edgechat.app.loops import loops
from edgechat.app.sampling import SamplingParams
from edgechat.app.teacher_data import (assistant_mask, corpus_prompts, read_prompts, replies, teacher_conversations,
                                      user_prefix)
from edgechat.core.errors import EdgechatError
from edgechat.core.sources import load_model
from runtimes.torch_engine import TorchEngine


def test_replies_are_the_teachers_greedy_replies(stories_model, stories_data):
    """llama.cpp on an F32 GGUF of the teacher answers each prompt as the torch teacher does through Chat."""
    assert stories_data.sources == ["chitchat"] * 6 + ["magpie"] * 2
    reference = Chat(TorchEngine(stories_model), temperature=0.0, max_tokens=32)
    for convo in stories_data.conversations:
        assert [m["role"] for m in convo] == ["user", "assistant"]
        reference.reset()
        assert reference.send(convo[0]["content"]).text == convo[1]["content"]


def test_replies_without_llama_cpp_are_the_batched_ones(stories_model, stories_f32_gguf):
    """The fallback (one reply after another through Chat on the torch reference) gives the texts that llama.cpp's
    batched generation gives, greedy and seeded, and leaves out a prompt over the context."""
    from runtimes.llama_cpp_engine import LlamaCppEngine

    torch_chat = Chat(TorchEngine(stories_model, n_ctx=256))
    llama = LlamaCppEngine(stories_f32_gguf, n_ctx=256, kv_type="f32")
    try:
        ids = [torch_chat.prompt_ids([{"role": "user", "content": p}]) for p in corpus_prompts(4)]
        ids.append(ids[0] * 20)  # longer than the context
        params = [SamplingParams(temperature=t, seed=s) for s, t in enumerate([0.0, 1.0, 0.0, 1.0, 0.0])]
        on_torch = replies(torch_chat, ids, 24, params)
        assert on_torch == replies(Chat(llama), ids, 24, params)
        assert on_torch[4] is None and all(on_torch[:4])
    finally:
        llama.close()


def test_magpie_turns_come_from_the_teacher(stories_data):
    """stories260K's plain template has an empty user prefix: the teacher, given only BOS, tells a story."""
    magpie = [c[0]["content"] for c, s in zip(stories_data.conversations, stories_data.sources) if s == "magpie"]
    assert len(set(magpie)) == 2 and all(m.startswith("Once upon a time") for m in magpie)


def test_cached_set_is_reused_with_its_hash(stories_model, stories_data, tmp_path):
    again = teacher_conversations(stories_model, n=8, seed=0, magpie_share=0.25, reply_tokens=32,
                                  cache=stories_data.path.rsplit("/", 1)[0])
    assert again.cached and not stories_data.cached
    assert again.sha256 == stories_data.sha256 and again.conversations == stories_data.conversations
    rec = again.record()
    assert rec["sha256"] == stories_data.sha256 and rec["conversations"] == 8
    assert rec["prompt_sources"] == {"chitchat": 6, "magpie": 2}
    other = teacher_conversations(stories_model, n=8, seed=0, magpie_share=0.25, reply_tokens=16,
                                  cache=stories_data.path.rsplit("/", 1)[0])
    assert other.path != stories_data.path  # another option, another key


def test_assistant_mask_covers_exactly_the_assistant_tokens(tiny_qwen2_dir):
    """Each reply, its <|im_end|> and the template's newline after it; nothing of the user's turns."""
    fmt = load_model(tiny_qwen2_dir).chat_format()
    msgs = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "how are you"}, {"role": "assistant", "content": "I am fine, thank you."}]
    ids, mask = assistant_mask(fmt, msgs)
    assert ids == fmt.ids(msgs, add_generation_prompt=False) and len(mask) == len(ids)
    masked = [i for i, m in zip(ids, mask) if m]
    assert masked == (fmt.tokenize("The capital of France is Paris.<|im_end|>\n", False)
                      + fmt.tokenize("I am fine, thank you.<|im_end|>\n", False))
    first_reply = len(fmt.ids(msgs[:1]))
    assert not any(mask[:first_reply]) and mask[first_reply]
    assert user_prefix(fmt) == ("<|im_start|>user\n", "")


def test_assistant_mask_on_stories(stories_model, stories_data):
    fmt = stories_model.chat_format()
    for convo, ids, mask in zip(stories_data.conversations, stories_data.sequences, stories_data.masks):
        prompt = fmt.ids(convo[:1])
        assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)]) and all(mask[len(prompt):])


def test_prompts_file(stories_model, tmp_path):
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"prompt": "Tell me about a dog."}) + "\n"
                     + json.dumps({"messages": [{"role": "user", "content": "Who is Lily?"}]}) + "\n")
    assert read_prompts(jsonl) == ["Tell me about a dog.", "Who is Lily?"]
    text = tmp_path / "prompts.txt"
    text.write_text("Tell me about a dog.\n\nWho is Lily?\n")
    assert read_prompts(text) == ["Tell me about a dog.", "Who is Lily?"]
    data = teacher_conversations(stories_model, n=3, prompts=text, magpie_share=0, reply_tokens=8, cache=tmp_path)
    assert data.sources == ["file"] * 3
    assert {c[0]["content"] for c in data.conversations} == {"Tell me about a dog.", "Who is Lily?"}
    assert data.record()["options"]["prompts"]["sha256"]


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "--teacher-data must be at least 1 conversation, got 0"),
    ({"magpie_share": 1.5}, "--magpie-share must be between 0 and 1, got 1.5"),
    ({"prompts": "/nonexistent/prompts.txt"}, "no such prompts file: /nonexistent/prompts.txt"),
])
def test_bad_options_refused(stories_model, tmp_path, kwargs, message):
    with pytest.raises(EdgechatError, match=re.escape(message)):
        teacher_conversations(stories_model, **{"n": 4, **kwargs}, cache=tmp_path)


def test_empty_prompts_file_refused(tmp_path):
    (tmp_path / "p.txt").write_text("\n\n")
    with pytest.raises(EdgechatError, match=re.escape(f"the prompts file {tmp_path / 'p.txt'} holds no prompt")):
        read_prompts(tmp_path / "p.txt")


def test_student_share_replaces_replies_with_the_students(stories_model, stories_data):
    """On-policy (GKD-style): half the replies sampled from the pruned student, the rest still the teacher's."""
    from edgechat.app.distill_data import with_student_replies
    from tests.converters.test_distill import pruned_student

    student = pruned_student(stories_model)
    mixed = with_student_replies(stories_data, student, 0.5, seed=0, reply_tokens=32)
    changed = [i for i, s in enumerate(mixed.sources) if s.endswith("+student")]
    assert len(changed) == 4 and mixed.student_replies == 4 and mixed.record()["student_replies"] == 4
    for i, (old, new) in enumerate(zip(stories_data.conversations, mixed.conversations)):
        assert new[0] == old[0]
        assert (new[1] != old[1]) == (i in changed)
    fmt = student.chat_format()
    for convo, ids, mask in zip(mixed.conversations, mixed.sequences, mixed.masks):
        assert (ids, mask) == assistant_mask(fmt, convo)
    assert mixed.sha256 == stories_data.sha256  # the cached teacher set is untouched


def test_greedy_student_replies_mark_the_repeats_of_their_loops(stories_model, stories_data):
    """For unlikelihood: the student's replies are its greedy ones, and in each that loops the tokens that carry a
    4-token run again are marked to avoid; every other token is not. The loop filter keeps them."""
    from edgechat.app.distill_data import with_student_replies
    from edgechat.app.loops import repeats
    from tests.converters.test_distill import pruned_student

    student = pruned_student(stories_model)
    mixed = with_student_replies(stories_data, student, 1.0, seed=0, reply_tokens=32, greedy=True)
    reference = Chat(TorchEngine(student), temperature=0.0, max_tokens=32)
    looping = 0
    for convo, ids, mask, avoid in zip(mixed.conversations, mixed.sequences, mixed.masks, mixed.avoid):
        reference.reset()
        assert reference.send(convo[0]["content"]).text == convo[1]["content"]
        looping += loops(convo[1]["content"])
        assert avoid == (repeats(ids, mask) if loops(convo[1]["content"]) else [False] * len(ids))
    assert looping > 0 and mixed.record()["avoid_tokens"] == sum(map(sum, mixed.avoid)) > 0
    assert mixed.options["student_greedy"] and mixed.without_loops().conversations == mixed.conversations
    packed = mixed.packed(64)
    assert packed.avoid.sum() > 0 and packed.student.sum() == packed.mask.sum()  # every reply the student's


def test_without_loops_drops_exactly_the_looping_replies(stories_data):
    convos = [list(c) for c in stories_data.conversations]
    convos[1] = [convos[1][0], {"role": "assistant", "content": "I'm here to help you with your project. " * 3}]
    data = replace(stories_data, conversations=convos)
    keep = [i for i, c in enumerate(convos) if not loops(c[1]["content"])]
    assert 1 not in keep and 0 < len(keep) < len(convos)
    kept = data.without_loops()
    assert kept.conversations == [convos[i] for i in keep]
    assert kept.sequences == [data.sequences[i] for i in keep] and kept.masks == [data.masks[i] for i in keep]
    assert kept.sources == [data.sources[i] for i in keep]
    assert kept.dropped_looping == len(convos) - len(keep) == kept.record()["dropped_looping"]
    assert kept.record()["conversations"] == len(keep) and kept.sha256 == stories_data.sha256
    assert kept.without_loops().dropped_looping == kept.dropped_looping  # nothing left to drop
    every = replace(stories_data, conversations=[[c[0], convos[1][1]] for c in convos])
    message = (f"every one of the {len(convos)} teacher-written replies loops: nothing is left to train on without "
               "them (leave --drop-looping off)")
    with pytest.raises(EdgechatError, match=re.escape(message)):
        every.without_loops()
