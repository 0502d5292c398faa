"""Progress for long commands (training, `analyze --all-steps`, figures, sweeps): never silent.

On a terminal a rich bar with the count, a status and the time left; when the output goes to a file or a pipe, a
plain line every :data:`EVERY` seconds instead (and one at the end), so a log shows that work goes on and how
long it has left. Both go to standard error, so standard output stays clean for tables and results.
"""

from __future__ import annotations

import sys
import time

EVERY = 10.0  # seconds between plain lines when the output is not a terminal


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """``with Progress(total, "what") as p: ... p.update(done, "status")``; ``enabled=False`` shows nothing.

    Args:
        total: how many units (steps, checkpoints, runs) the work has.
        what: what is being done, e.g. ``"mlp on mnist1d"``.
        unit: the unit's name in plain lines (``"step"``).
        start: units already done (a resumed run): the time left is estimated from this call's own rate.
        enabled: False for quiet runs and library calls.
        stream: where plain lines go (default standard error); a terminal gets the rich bar.
    """

    def __init__(self, total: int, what: str, unit: str = "step", start: int = 0, enabled: bool = True,
                 stream=None):
        self.total, self.what, self.unit, self.start = max(int(total), 1), what, unit, start
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done, self.status = start, ""
        self._bar = None
        self._t0 = self._last = time.perf_counter()

    def __enter__(self):
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self._bar = Bar(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), transient=True, console=Console(file=self.stream))
            self._task = self._bar.add_task(self.what, total=self.total, completed=self.start, info="")
            self._bar.start()
        return self

    def update(self, done: int, status: str = "") -> None:
        self.done, self.status = done, status
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=status)
        elif self.enabled and time.perf_counter() - self._last >= EVERY:
            self._line()

    def _line(self) -> None:
        self._last = now = time.perf_counter()
        elapsed, new = now - self._t0, self.done - self.start
        left = (f", ~{_clock(elapsed / new * (self.total - self.done))} left"
                if 0 < new and self.done < self.total else "")
        status = f", {self.status}" if self.status else ""
        print(f"{self.what}: {self.unit} {self.done}/{self.total} ({self.done / self.total:.0%}){status}, "
              f"{_clock(elapsed)} elapsed{left}", file=self.stream, flush=True)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and self.done > self.start and self.done >= self.total:
            self._line()  # the last word in a log: done, and how long it took
        return False
