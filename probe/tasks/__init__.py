"""Tasks: named data sets that declare their geometry (docs/design.md §7).

A task is a function registered with :func:`register`; its keyword arguments and defaults are its task
options (``--task-opt KEY=VALUE``), which is also what ``probe tasks NAME`` lists. It returns a :class:`Task`:
tensors plus the geometry that ties the inputs to a grid. ``npz:PATH`` loads a user's own data.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from probe.config import ConfigError, RunConfig, coerce_opts
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


def _ensure_loaded():
    # Importing the modules registers their tasks.
    from probe.tasks import images, nlgp  # noqa: F401

    try:
        from probe.tasks import sequences  # noqa: F401
    except ImportError:  # pragma: no cover - sequence tasks not yet present
        pass
    from probe.tasks import arith, recurrence  # noqa: F401  (issue 15: add; running-parity, count, dyck, delayed-copy)
    from probe.tasks import patches  # noqa: F401  (issue 16: natural-image patches)
    from probe.plugins import load_plugins

    load_plugins("probe.tasks")  # other packages' tasks (entry point group probe.tasks)


def task_specs() -> dict[str, TaskSpec]:
    _ensure_loaded()
    return TASKS


def get_spec(name: str) -> TaskSpec:
    specs = task_specs()
    if name.startswith("npz:"):
        return specs["npz"]
    if name not in specs:
        valid = ", ".join(sorted(k for k in specs if k != "npz") + ["npz:PATH"])
        raise ConfigError(f"unknown task {name!r}; valid tasks: {valid}")
    return specs[name]


def config_for(task: str, **fields) -> RunConfig:
    """A RunConfig for ``task``: RunConfig's defaults, then the task's own training defaults
    (:attr:`TaskSpec.training`), then ``fields``. `probe train` and sweeps build their configs the same way."""
    return RunConfig.from_dict({**get_spec(task).training, "task": task, **fields}, source=f"task {task}")


def make_task(name: str, opts: dict | None = None, seed: int = 0) -> Task:
    """Build task ``name`` with task options ``opts``; ``seed`` fixes anything random the options leave open.
    ``clone=gaussian`` (every image task) replaces the data by its class-conditional Gaussian clone
    (:mod:`probe.tasks.clone`), a ConfigError for a sequence or regression task."""
    spec = get_spec(name)
    opts = dict(opts or {})
    if spec.kind == "sequence" and "clone" in opts:  # named before the unknown options: the problem is the task
        if str(opts.pop("clone")).lower() != "none":
            raise ConfigError(f"task {name}: clone=gaussian needs an image classification task; {name} is a "
                              "sequence task (tokens, no class moments over a grid)")
    valid = spec.options()
    if name.startswith("npz:"):
        opts["path"] = name[4:]
        valid = {**valid, "path": None}
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        choices = ", ".join(sorted(k for k in valid if k != "path")) or "none"
        raise ConfigError(f"task {name}: unknown task option(s) {', '.join(unknown)}; valid options: {choices}")
    opts = coerce_opts(opts, valid, f"task {name}")
    clone = str(opts.pop("clone", "none")).lower()
    from probe.tasks.clone import CLONE_CHOICES, clone_task

    if clone not in CLONE_CHOICES:
        raise ConfigError(f"task {name}: clone must be one of {', '.join(CLONE_CHOICES)}, got {clone!r}")
    task = spec.fn(seed=seed, **opts)
    task.name = name
    if clone == "gaussian":
        task = clone_task(task, seed, f"task {name}")
    return task
