"""Multi-stage training procedures that a sweep run can use instead of one plain training run, one module each.

A procedure is a function ``fn(cfg, out, **opts) -> (last_row, results)`` registered in :data:`PROCEDURES`; its
keyword arguments are its options (``procedure_opts`` in a sweep spec). It writes its final model as an ordinary
run folder ``out`` (so every tool reads it like any run), keeps earlier stages as run folders under
``out/stages/``, and returns the final metrics row and a flat dict of scalar results (written by the sweep to
``out/procedure.json``; the sweep summary shows them as columns).

Every stage is restartable: a finished stage (last checkpoint at ``steps``) is not trained again, an interrupted
one is resumed from its last checkpoint.

- ``imp`` (:mod:`.imp`): iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).
- ``ecnn`` (:mod:`.ecnn`): a CNN trained for ``cnn_steps``, embedded exactly into an MLP (d'Ascoli et al. 2019),
  trained on as an MLP; then the loss along the straight line from it to a plain MLP of the same shape and the same
  step budget, after aligning the plain MLP's hidden units to it (weight matching), and the distance of its layers
  to the convolutions of its known unit layout.
- ``stability`` (:mod:`.stability`): the embedded CNN perturbed off its convolutional subspace by a relative norm
  eps and trained on the data or on whole orbits of circular shifts: does the complement grow or decay?
- ``ntk_align`` (:mod:`.ntk_align`): a reference CNN trained first, then the run's model with the centred alignment
  of its empirical NTK with the CNN's, and with the labels, in its metrics rows.

The procedures orchestrate training; what they measure is in :mod:`probe.metrics` as functions of weights and
arrays (:mod:`probe.metrics.interpolation`, :mod:`probe.metrics.symmetry`, :mod:`probe.metrics.kernels`). Their
shared helpers are in :mod:`.common`.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

from probe.config import ConfigError, RunConfig, coerce_opts
from probe.run.procedures import ecnn, imp, ntk_align, stability

PROCEDURES = {"imp": imp.imp, "ecnn": ecnn.ecnn, "stability": stability.stability, "ntk_align": ntk_align.ntk_align}


def procedure_options(name: str) -> dict:
    """The options of procedure ``name`` with their defaults (its keyword arguments)."""
    if name not in PROCEDURES:
        raise ConfigError(f"unknown procedure {name!r}; valid: train, {', '.join(PROCEDURES)}")
    sig = inspect.signature(PROCEDURES[name])
    return {k: p.default for k, p in list(sig.parameters.items())[2:]}


def check_procedure_options(name: str, opts: dict) -> dict:
    """``opts`` checked against procedure ``name``'s options: unknown names, and values of the wrong type (against
    the type of the default, :func:`probe.config.coerce_opts`; an option whose default is None against its
    annotation, ``int | None`` or ``dict | None``), each a ConfigError; returns the options coerced."""
    valid = procedure_options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ConfigError(f"procedure {name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    out = coerce_opts(opts, valid, f"procedure {name}")
    hints = typing.get_type_hints(PROCEDURES[name])
    for k, v in out.items():
        if valid[k] is not None or v is None:
            continue
        want = [t for t in typing.get_args(hints.get(k)) if t is not type(None)] or [hints.get(k)]
        if want[0] is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"procedure {name}: option {k} must be an integer or left out, got {v!r}")
        if want[0] is dict and not isinstance(v, dict):
            raise ConfigError(f"procedure {name}: option {k} must be a table of options or left out, got {v!r}")
    return out


def run_procedure(name: str, cfg: RunConfig, out: Path, opts: dict) -> tuple[dict, dict]:
    return PROCEDURES[name](cfg, Path(out), **check_procedure_options(name, opts))
