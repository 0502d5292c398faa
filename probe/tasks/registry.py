"""The task registry: :class:`Task` (the data a task function returns) and every task function registered by name
with :func:`register`.

The task modules import :func:`register` from here and :mod:`probe.tasks` imports them, so the registry fills
when ``probe.tasks`` is imported, without an import cycle.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from probe.geometry import Geometry


@dataclass
class Task:
    """Data of one task.

    Inputs are float tensors (N, n) in the geometry's flat layout, or integer token tensors (N, T) for
    token tasks (``vocab`` set). Targets are class indices (N,) or (N, T) with -100 where nothing is asked
    (``loss="ce"``), or real values (N, k) (``loss="mse"``).
    ``sampler(seed, step, batch_size, device)``, when set, draws a fresh training batch as a pure function of
    (seed, step); the trainer uses it instead of indexing ``x_train``.
    ``info`` holds JSON-able facts stored with the run (a shuffle permutation, a reference error, ...).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    geometry: Geometry
    n_outputs: int
    loss: str = "ce"
    vocab: int | None = None
    info: dict = field(default_factory=dict)
    sampler: Callable | None = None
    extras: dict = field(default_factory=dict)  # tensors beside the test set, e.g. "source" positions

    def to(self, device) -> "Task":
        for k in ("x_train", "y_train", "x_test", "y_test"):
            setattr(self, k, getattr(self, k).to(device))
        self.extras = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.extras.items()}
        return self

    @property
    def n_inputs(self) -> int:
        return self.geometry.n_inputs


# the training settings the README's sequence results used (AdamW lr 1e-3, batch 128): RunConfig's own defaults
# are the MNIST-1D MLP's (Adam lr 1e-2, batch 100), with which a 2000-step mqar transformer reaches 60%, not 100%
SEQUENCE_TRAINING = {"optimizer": "adamw", "lr": 1e-3, "batch_size": 128}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: Callable
    description: str
    kind: str  # "image" or "sequence"
    training: dict = field(default_factory=dict)  # RunConfig fields this task sets unless the user does

    def options(self) -> dict:
        """Task options and their defaults, from the function's keyword arguments."""
        sig = inspect.signature(self.fn)
        opts = {k: p.default for k, p in sig.parameters.items() if k != "seed"}
        if self.kind == "image":  # every image task takes clone= (probe.tasks.clone); classification is checked then
            opts.setdefault("clone", "none")
        return opts


TASKS: dict[str, TaskSpec] = {}


def register(name: str, description: str, kind: str = "image", training: dict | None = None):
    """Register a task function. ``training``: the task's own defaults for RunConfig's training fields
    (optimizer, lr, batch size, ...), which the user's settings override; sequence tasks default to
    :data:`SEQUENCE_TRAINING`."""

    def deco(fn):
        own = training if training is not None else SEQUENCE_TRAINING if kind == "sequence" else {}
        TASKS[name] = TaskSpec(name, fn, description, kind, dict(own))
        return fn

    return deco
