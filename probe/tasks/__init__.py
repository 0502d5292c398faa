"""Tasks: named data sets that declare their geometry (docs/design.md §7).

A task is a function registered with :func:`register`; its keyword arguments and defaults are its task
options (``--task-opt KEY=VALUE``), which is also what ``probe tasks NAME`` lists. It returns a :class:`Task`:
tensors plus the geometry that ties the inputs to a grid. ``npz:PATH`` loads a user's own data.
"""

from __future__ import annotations

import torch

from probe.bounds import COUNT_OPTIONS, check_task_size
from probe.config import ConfigError, RunConfig, coerce_opts
from probe.plugins import load_plugins
from probe.tasks.clone import CLONE_CHOICES, clone_task
from probe.tasks.registry import SEQUENCE_TRAINING, TASKS, Task, TaskSpec, register  # noqa: F401
# importing the task modules registers their tasks
from probe.tasks import images, nlgp  # noqa: F401
from probe.tasks import sequences  # noqa: F401
from probe.tasks import arith, recurrence  # noqa: F401  (add; running-parity, count, dyck, delayed-copy)
from probe.tasks import patches  # noqa: F401  (natural-image patches)


def task_shells(geometry, state_dict: dict, meta: dict):
    """Stand-ins for a task that carry what model builders read (geometry, outputs, loss), without data: to rebuild
    a model from a checkpoint's config. ``meta`` is the run's task.json ({} when there is none).

    The output count comes from ``meta`` when it has one, else from the last 2-D tensor (the readout); whether a
    sequence task asks at every position is not stored, so both are tried."""
    rows = [v.shape[0] for v in state_dict.values() if torch.is_tensor(v) and v.dim() == 2][-1:] or [1]
    T = geometry.spatial[0]
    counts = [meta["n_outputs"]] if "n_outputs" in meta else [rows[0], max(1, rows[0] // T)]
    x = torch.zeros(0, geometry.n_inputs)
    for n_out in counts:
        for per_position in (False, True) if geometry.kind == "sequence" else (False,):
            y = torch.zeros(0, T, dtype=torch.long) if per_position else torch.zeros(0, dtype=torch.long)
            loss = "ce" if per_position else meta.get("loss", "ce")
            vocab = geometry.channels if geometry.kind == "sequence" else None
            # the task's facts too: a transformer sizes its position table by info["max_length"]
            yield Task("shell", x, y, x, y, geometry, int(n_out), loss, vocab, info=dict(meta.get("info", {})))


def task_specs() -> dict[str, TaskSpec]:
    load_plugins("probe.tasks")  # other packages' tasks (entry point group probe.tasks)
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
    for k in COUNT_OPTIONS:
        if isinstance(opts.get(k), int) and opts[k] < 0:
            raise ConfigError(f"task {name}: option {k} must be >= 0, got {opts[k]}")
    check_task_size(name, opts, valid)
    clone = str(opts.pop("clone", "none")).lower()
    if clone not in CLONE_CHOICES:
        raise ConfigError(f"task {name}: clone must be one of {', '.join(CLONE_CHOICES)}, got {clone!r}")
    task = spec.fn(seed=seed, **opts)
    task.name = name
    if clone == "gaussian":
        task = clone_task(task, seed, f"task {name}")
    return task
