"""Progress on stderr with rich: one spinner line per step, a bar for counted work."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Steps:
    def __init__(self, enabled: bool = True):
        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal  # no bars in logs and pipes
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                 disable=not self.enabled, transient=False)
        self._task = None
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self._t = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._close()
        self.progress.__exit__(*exc)

    def _close(self):
        if self._task is not None:
            task = self.progress.tasks[-1]
            self.progress.update(self._task, total=task.total or 1, completed=task.total or 1)
            self.timings[task.description] = time.perf_counter() - self._t

    def step(self, description: str, total: int | None = None):
        """Start a step (closing the previous one); returns advance(n_done) for counted steps."""
        self._close()
        self._t = time.perf_counter()
        self._task = self.progress.add_task(description, total=total)
        return lambda done: self.progress.update(self._task, completed=done)

    def note(self, text: str) -> None:
        """A line for the user now (above the bars; in logs and pipes too), kept in .notes for the manifest."""
        self.notes.append(text)
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)
