"""Progress on stderr with rich: one spinner line per step, a bar for counted work.

In logs and pipes there are no bars; a counted step that runs past `every_s` prints a plain
"description: done/total (elapsed)" line about once every `every_s`, and a last one when it ends, so a
long distillation in a log file is not silent for an hour. Short steps print nothing there.
"""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min': short enough for one log line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Steps:
    def __init__(self, enabled: bool = True, every_s: float = 60.0):
        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal  # no bars in logs and pipes
        self.plain = enabled and not self.console.is_terminal  # ...but a line now and then for long steps
        self.every_s = every_s
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                 disable=not self.enabled, transient=False)
        self._task = None
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self._t = None
        self._name = self._label = ""
        self._total = None
        self._done = 0
        self._last_line = None  # when the last plain line went out; None: none yet for this step

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._close()
        self.progress.__exit__(*exc)

    def _close(self):
        if self._task is None:
            return
        total = self._total or 1
        self.progress.update(self._task, total=total, completed=total)
        elapsed = time.perf_counter() - self._t
        self.timings[self._name] = elapsed
        if self._last_line is not None:  # done, not total: a step an error or a signal ended says how far it got
            self._line(f"{self._label}: {self._done}/{total} in {duration(elapsed)}")
        self._task = None

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _advance(self, done: int) -> None:
        self._done = done
        self.progress.update(self._task, completed=done)
        if not self.plain or self._total is None:
            return
        now = time.perf_counter()
        if now - (self._last_line if self._last_line is not None else self._t) >= self.every_s:
            self._last_line = now
            self._line(f"{self._label}: {done}/{self._total} ({duration(now - self._t)})")

    def step(self, description: str, total: int | None = None):
        """Start a step (closing the previous one); returns advance(n_done) for counted steps."""
        self._close()
        self._t = time.perf_counter()
        self._name = self._label = description
        self._total, self._done, self._last_line = total, 0, None
        self._task = self.progress.add_task(description, total=total)
        return self._advance

    def describe(self, label: str) -> None:
        """Change what the current step shows (a running loss, say); its timing keeps the step's name."""
        self._label = label
        if self._task is not None:
            self.progress.update(self._task, description=label)

    def note(self, text: str) -> None:
        """A line for the user now (above the bars; in logs and pipes too), kept in .notes for the manifest."""
        self.notes.append(text)
        self._line(text)
