"""The errors a run can end with, each one line for the CLI: :class:`RunFailed` (exit 1) and its kinds
:class:`DivergenceError` and :class:`StorageError`; :class:`TrainingInterrupted` (exit 130/143) carries the
checkpoint written at the stop. :func:`first_line` is how an error becomes that one line."""

from __future__ import annotations

import signal
from pathlib import Path


class RunFailed(RuntimeError):
    """Training stopped for a reason the message gives in one line (the CLI exits with code 1)."""


class DivergenceError(RunFailed):
    """The loss (or the weights) became NaN or inf."""


class StorageError(RunFailed):
    """A run file could not be written (disk full, permissions); the checkpoints written before are kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at ``step``; the checkpoint written there is ``path``."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"{signal.Signals(signum).name} at step {step}, checkpoint {path}")
        self.signum, self.step, self.path = signum, step, path



def first_line(e: BaseException) -> str:
    msg = str(e).strip()
    return (msg.splitlines()[0] if msg else type(e).__name__)[:160]

