"""What the procedures share: the folder of their earlier stages, the last weights of a stage, and the ``prepare``
that starts a run from given weights."""

from __future__ import annotations

import json
from pathlib import Path

from probe.config import ConfigError
from probe.run.checkpoint import atomic_write, list_checkpoints, load_checkpoint

STAGES = "stages"


def last_state_dict(out: Path) -> dict:
    """The weights of the last checkpoint of run folder ``out`` (a finished stage); ConfigError when it has none."""
    ckpts = list_checkpoints(out)
    if not ckpts:
        raise ConfigError(f"{out}: no checkpoint")
    return load_checkpoint(ckpts[-1][1])["state_dict"]


def save_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def load_weights(state: dict):
    """``prepare`` (:func:`probe.run.loop.train_or_resume`) that starts a fresh run from the weights ``state``; a
    resumed run keeps its checkpoint's."""

    def prepare(run, fresh):
        if fresh:
            run.model.load_state_dict(state)

    return prepare

