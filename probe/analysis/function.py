"""The data-dependent (functional) measures of a model on its task: the one place that says which apply to which
task and on how many inputs, used by `probe analyze`, the sweeps' final measures and the scripts alike.

- ``lie_derivative`` (image tasks): :func:`probe.metrics.functional.lie_derivative` on the first n test inputs.
- ``lie_ratio`` (image tasks): :func:`probe.metrics.functional.lie_ratio`, the Lie derivative against random
  directions of the same norm (scale-free), on the same inputs.
- ``shift_consistency`` (image classification tasks): ``shift_consistency_1..3`` and their nulls
  ``noise_consistency_1..3``, :func:`probe.metrics.functional.shift_consistency` on the same inputs (agreement of
  predicted classes is undefined for regression).
- ``routing`` (sequence tasks): :func:`probe.metrics.routing.sequence_measures` on n test inputs drawn with
  ``seed``; its ``X_random`` keys are the same measures of a random-weight model (a null).
"""

from __future__ import annotations

from probe.metrics import defined
from probe.metrics.functional import lie_derivative, lie_ratio, shift_consistency

FUNCTION_MEASURES = ("lie_derivative", "lie_ratio", "shift_consistency", "routing")


def applicable(task) -> tuple[str, ...]:
    """The functional measures that are defined on ``task``."""
    if task.geometry.kind == "sequence":
        return ("routing",)
    images = ("lie_derivative", "lie_ratio")
    return (*images, "shift_consistency") if task.loss == "ce" else images


def function_measures(model, task, names=None, n: int = 512, seed: int = 0) -> dict[str, float]:
    """The functional measures ``names`` (default: every one that applies) of ``model`` on ``task``, as one flat
    dict of floats; names that do not apply to the task are left out (module docstring)."""
    names = applicable(task) if names is None else [m for m in names if m in applicable(task)]
    model.eval()
    out: dict[str, float] = {}
    x = task.x_test[:n]
    if "lie_derivative" in names:
        out["lie_derivative"] = lie_derivative(model, x, task.geometry)
    if "lie_ratio" in names:
        out["lie_ratio"] = lie_ratio(model, x, task.geometry, seed=seed)
    if "shift_consistency" in names:
        out.update(shift_consistency(model, x, task.geometry, seed=seed))
    if "routing" in names:
        from probe.metrics.routing import sequence_measures

        out.update({k: float(v) for k, v in sequence_measures(model, task, n=n, seed=seed).items()})
    return defined(out)  # undefined ones (lie_ratio of a model that ignores its input) are left out, never NaN
