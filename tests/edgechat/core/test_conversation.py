"""The one conversation encoding: the plain template of base models, and the assistant spans that evaluation
scores and distillation trains on."""
from edgechat.core.chat_template import render
from edgechat.core.conversation import ChatFormat

TURNS = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
         {"role": "user", "content": "Bye"}]


def test_plain_template_keeps_a_newline_between_turns():
    """trim_blocks (transformers' setting) eats a newline written right after a block tag: the turns once ran
    together as 'HiHelloBye'."""
    assert render(None, TURNS) == "Hi\nHello\nBye\n"
    assert render(None, TURNS, add_generation_prompt=False) == "Hi\nHello\nBye"
    assert render(None, [], add_generation_prompt=True) == ""


def chars() -> ChatFormat:
    """One id per character: spans can be read off the text."""
    return ChatFormat(None, lambda text, add_bos: [ord(c) for c in text])


def test_assistant_spans_cover_each_reply_and_its_end_of_turn():
    fmt = chars()
    convo = TURNS + [{"role": "assistant", "content": "See you"}]
    ids, spans = fmt.assistant_spans(convo)
    text = "".join(map(chr, ids))
    assert text == "Hi\nHello\nBye\nSee you"
    # a span starts after the generation prompt (its newline) and ends where the conversation up to that reply
    # ends: the plain template writes the newline between turns only when another turn follows
    assert [text[s:e] for s, e in spans] == ["Hello", "See you"]


def test_assistant_spans_of_a_conversation_without_replies():
    ids, spans = chars().assistant_spans(TURNS[:1])
    assert ids == [ord("H"), ord("i")] and spans == []
