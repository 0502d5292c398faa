"""Models: the MLP under study and its controls, built by name from a task and a run config.

A model builder is a function ``fn(task, width, depth, param, **opts)`` registered with :func:`register`;
its keyword arguments after those four are the model options (``--model-opt KEY=VALUE``). Every model has
``first_layer_dense()``: its first layer written as a dense (m x n) matrix over the input geometry, so an MLP
and its controls are measured by the same code (docs/design.md §3.3). Models may define ``lr_multipliers()``, a dict
from parameter name to learning-rate factor (mean-field scaling uses it), and, where the first layer is linear in
the input, ``first_layer_module()``: the module whose gradient the pull reads (:mod:`probe.metrics.pull`).
"""

from __future__ import annotations

import torch.nn as nn

from probe.config import ConfigError, coerce_opts
from probe.plugins import load_plugins
from probe.models.registry import MODELS, ModelSpec, register  # noqa: F401
# importing the builders' modules registers their models (in this order: `probe models` lists them so)
from probe.models import conv, mlp  # noqa: F401
from probe.models import mixer, rnn, transformer  # noqa: F401
from probe.bounds import check_model_size


def model_specs() -> dict[str, ModelSpec]:
    load_plugins("probe.models")  # other packages' models (entry point group probe.models)
    return MODELS


def check_applies(name: str, given) -> None:
    """ConfigError naming the options among ``given`` (RunConfig field names a user set) that model ``name``
    does not read."""
    specs = model_specs()
    if name not in specs:
        return  # build_model names the valid models
    unused = [k for k in ("width", "depth", "param") if k in given and k not in specs[name].uses]
    if unused:
        flags = ", ".join(f"--{k}" for k in unused)
        opts = ", ".join(f"{k}=" for k in specs[name].options()) or "none"
        raise ConfigError(f"{flags}: model {name} does not use {'it' if len(unused) == 1 else 'them'} (its own "
                          f"options: --model-opt {opts})")


def build_model(name: str, task, width: int, depth: int, param: str = "standard",
                opts: dict | None = None) -> nn.Module:
    specs = model_specs()
    if name not in specs:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(sorted(specs))}")
    spec = specs[name]
    kind = task.geometry.kind
    if kind not in spec.kinds:
        raise ConfigError(f"model {name} does not take {kind} tasks; it takes {', '.join(spec.kinds)} tasks")
    opts = dict(opts or {})
    unknown = sorted(set(opts) - set(spec.options()))
    if unknown:
        valid = ", ".join(sorted(spec.options())) or "none"
        raise ConfigError(f"model {name}: unknown model option(s) {', '.join(unknown)}; valid options: {valid}")
    opts = coerce_opts(opts, spec.options(), f"model {name}")
    check_model_size(name, task.n_inputs, task.n_outputs, width, depth, {**spec.options(), **opts})
    try:
        model = spec.fn(task, width, depth, param, **opts)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ConfigError(f"model {name}: {e}") from None
    check_length(name, model, task)
    return model


def check_length(name: str, model: nn.Module, task) -> None:
    """Refuse a sequence task whose test split is longer or shorter than its training sequences (task option
    ``test_length``) for a model that reads one length only. A model that reads other lengths says up to which
    in its ``max_length`` attribute (``rnn``: any; ``transformer``: its position table's rows)."""
    if task.geometry.kind != "sequence" or task.vocab is None or task.x_test.is_floating_point():
        return  # token ids (B, L) only: real features and task shells (probe/analysis/load.py) have no length
    T, L = task.geometry.spatial[0], task.x_test.shape[1]
    longest = getattr(model, "max_length", T)
    if L != T and (L > longest or not hasattr(model, "max_length")):
        raise ConfigError(f"model {name} reads sequences of length {T} only; task {task.name} asks length {L} "
                          f"(test_length): use a model that reads any length (rnn, transformer)")
