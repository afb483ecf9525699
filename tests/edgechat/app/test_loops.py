"""The degenerate-loop check (edgechat.app.loops)."""
from edgechat.app.loops import loops

LOOP = "I'm here to help you with your project. "


def test_a_six_word_run_said_three_times_loops():
    assert loops(LOOP * 3) and loops("Sure! " + LOOP.upper() * 2 + LOOP.replace(" ", "  ") + "Bye.")
    assert not loops(LOOP * 2)  # said twice: a repeated sentence, not a loop
    assert not loops("one two three four five " * 3)  # a five-word run only
    assert not loops("") and not loops("The capital of France is Paris.")
