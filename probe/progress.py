"""Progress of a long loop, with an estimate of the time left: a rich bar on a terminal, elsewhere (a log file, a
batch job) a plain line every few seconds, so that a long ``probe analyze --all-steps`` says how long it will take.

The estimate is the mean time per item so far times the items left. The first item of a run usually costs more
than the others (references and step-0 measures are computed once, then reused), so early estimates err long.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TextIO, TypeVar

T = TypeVar("T")


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(label: str, done: int, total: int, elapsed: float) -> str:
    """``label: 3/12, 41 s so far, about 2.0 min left`` (no estimate before the first item is done)."""
    line = f"{label}: {done}/{total}, {duration(elapsed)} so far"
    if 0 < done < total:
        line += f", about {duration(elapsed / done * (total - done))} left"
    return line


def progress(items: Iterable[T], label: str, total: int | None = None, every_s: float = 5.0,
             stream: TextIO | None = None, bar: bool | None = None) -> Iterator[T]:
    """Yield ``items`` while showing how far the loop is and how long it has left.

    Args:
        label: what is counted (``"probe analyze: checkpoints"``).
        total: number of items (default ``len(items)``).
        every_s: without a bar, the seconds between lines; a line is also written after the last item when any
            was written before (loops shorter than ``every_s`` write nothing).
        stream: where lines go (default ``sys.stderr``).
        bar: a rich bar (transient: it disappears at the end) instead of lines; default: when ``stream`` is a
            terminal.
    """
    stream = sys.stderr if stream is None else stream
    total = len(items) if total is None and isinstance(items, Sized) else total
    if total is None:
        raise ValueError("progress: give the total of an iterable without len()")
    if bar is None:
        bar = hasattr(stream, "isatty") and stream.isatty()
    if bar:
        yield from _bar(items, label, total, stream)
        return
    t0 = last = time.perf_counter()
    wrote = False
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= every_s or (wrote and done == total):
            print(progress_line(label, done, total, now - t0), file=stream, flush=True)
            last, wrote = now, True


def _bar(items: Iterable[T], label: str, total: int, stream: TextIO) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"),
                  TimeRemainingColumn(), console=Console(file=stream), transient=True) as p:
        task = p.add_task(label, total=total)
        for item in items:
            yield item
            p.advance(task)
