"""The degenerate-loop check (edgechat.app.loops)."""
from edgechat.app.loops import loops, repeats

LOOP = "I'm here to help you with your project. "


def test_a_six_word_run_said_three_times_loops():
    assert loops(LOOP * 3) and loops("Sure! " + LOOP.upper() * 2 + LOOP.replace(" ", "  ") + "Bye.")
    assert not loops(LOOP * 2)  # said twice: a repeated sentence, not a loop
    assert not loops("one two three four five " * 3)  # a five-word run only
    assert not loops("") and not loops("The capital of France is Paris.")


def test_repeats_mark_the_tokens_that_carry_a_run_again():
    ids = [9, 1, 2, 3, 4, 5, 1, 2, 3, 4, 6, 1, 2, 3, 4]
    marks = repeats(ids, [True] * len(ids))
    assert [j for j, m in enumerate(marks) if m] == [9, 14]  # each second sighting of 1 2 3 4 ends there
    assert repeats(ids, [False] * 6 + [True] * 9) == [False] * 14 + [True]  # runs with uncounted tokens: none
    assert not any(repeats([1, 2, 3] * 2, [True] * 6))  # a 3-token run: shorter than REPEAT_TOKENS
