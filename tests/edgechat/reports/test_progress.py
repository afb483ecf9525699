"""Steps in logs and pipes: silent for short steps, a line a minute for long counted ones."""
import io

from rich.console import Console

from edgechat.reports import progress as progress_mod
from edgechat.reports.progress import Steps, duration


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def piped(monkeypatch, enabled=True):
    """Steps writing to a pipe (a StringIO that is no terminal), on a clock the test moves."""
    clock, out = Clock(), io.StringIO()
    monkeypatch.setattr(progress_mod.time, "perf_counter", clock)
    monkeypatch.setattr(progress_mod, "Console", lambda stderr: Console(file=out, force_terminal=False, width=80))
    return Steps(enabled=enabled), clock, out


def test_duration_reads_short():
    assert [duration(s) for s in (4.4, 59.6, 61, 3599, 3725)] == \
        ["4 s", "1 min 00 s", "1 min 01 s", "59 min 59 s", "1 h 02 min"]


def test_short_counted_step_prints_nothing_when_piped(monkeypatch):
    steps, clock, out = piped(monkeypatch)
    assert steps.plain and not steps.enabled
    with steps:
        advance = steps.step("distilling", total=10)
        for i in range(10):
            clock.t += 5
            advance(i + 1)
    assert out.getvalue() == ""
    assert steps.timings == {"distilling": 50.0}


def test_long_counted_step_prints_a_line_a_minute_and_the_end(monkeypatch):
    steps, clock, out = piped(monkeypatch)
    with steps:
        advance = steps.step("distilling", total=100)
        for i in range(100):
            clock.t += 2.5
            steps.describe(f"distilling: loss {1 / (i + 1):.2f}")
            advance(i + 1)
        steps.step("exporting")  # closes the long step
        clock.t += 300  # an uncounted step never prints a line, however long
    assert out.getvalue().splitlines() == [
        "distilling: loss 0.04: 24/100 (1 min 00 s)",
        "distilling: loss 0.02: 48/100 (2 min 00 s)",
        "distilling: loss 0.01: 72/100 (3 min 00 s)",
        "distilling: loss 0.01: 96/100 (4 min 00 s)",
        "distilling: loss 0.01: 100/100 in 4 min 10 s",
    ]
    assert steps.timings == {"distilling": 250.0, "exporting": 300.0}  # keyed by name, not the label


def test_disabled_steps_stay_silent_and_notes_still_print(monkeypatch):
    steps, clock, out = piped(monkeypatch, enabled=False)
    with steps:
        advance = steps.step("distilling", total=3)
        for i in range(3):
            clock.t += 100
            advance(i + 1)
        steps.note("pruned to 80% of the parameters")
    assert not steps.plain
    assert out.getvalue() == "pruned to 80% of the parameters\n"
    assert steps.notes == ["pruned to 80% of the parameters"]


def test_a_long_step_cut_short_says_how_far_it_got(monkeypatch):
    import pytest

    steps, clock, out = piped(monkeypatch)
    with pytest.raises(KeyboardInterrupt), steps:
        advance = steps.step("teacher replies", total=100)
        for i in range(30):
            clock.t += 3
            advance(i + 1)
        raise KeyboardInterrupt
    assert out.getvalue().splitlines() == ["teacher replies: 20/100 (1 min 00 s)",
                                           "teacher replies: 30/100 in 1 min 30 s"]
