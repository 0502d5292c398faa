"""Stopping at a step boundary on SIGINT/SIGTERM: while training, a signal only asks the loop to stop, and the loop
writes a checkpoint where it stops (:class:`probe.run.errors.TrainingInterrupted`)."""

from __future__ import annotations

import contextlib
import signal
import threading

#: the signals that stop training at a step boundary with a checkpoint; a submitit job adds SIGUSR2, Slurm's warning
#: before a time limit or a preemption (probe.sweep.execute.SweepJob)
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]


@contextlib.contextmanager
def stop_requests():
    """While training, SIGINT and SIGTERM only append to the yielded list, which the loop reads between steps, so
    the run stops at a step boundary with a consistent checkpoint. A second signal stops at once (no checkpoint).
    Signal handlers can only be set from the main thread; elsewhere signals keep their usual effect."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, frame):
        if got:
            raise KeyboardInterrupt
        got.append(signum)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

