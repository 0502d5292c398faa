"""The data-dependent (functional) measures of a model on its task: the one place that says which apply to which
task and on how many inputs, used by `probe analyze`, the sweeps' final measures and the scripts alike.

- ``lie_derivative`` (image tasks): :func:`probe.metrics.functional.lie_derivative` on the first n test inputs.
- ``lie_ratio`` (image tasks): :func:`probe.metrics.functional.lie_ratio`, the Lie derivative against random
  directions of the same norm (scale-free), on the same inputs.
- ``shift_consistency`` (image classification tasks): ``shift_consistency_1..3`` and their nulls
  ``noise_consistency_1..3``, :func:`probe.metrics.functional.shift_consistency` on the same inputs (agreement of
  predicted classes is undefined for regression).
- ``routing`` (sequence tasks): :func:`probe.metrics.routing.sequence_measures` on n test inputs drawn with
  ``seed``; its ``X@gaussian`` keys are the same measures of random weights (a null).
- ``recurrence`` (sequence tasks with an answer at every position):
  :func:`probe.metrics.recurrence.recurrence_measures` on n test inputs drawn with ``seed``: ``time_sharing``
  and ``causal_mass`` with their ``X@permuted`` nulls, and ``test_acc_2T`` / ``test_acc_4T`` where the task
  has test splits at those lengths (the recurrence tasks) and the model reads them.
- ``arith`` (the ``add`` task): :func:`probe.metrics.arith.arith_measures` on the whole test and
  extrapolation splits: ``relevant_weight_mass``, ``rel_mse``, ``extrap_rel_mse`` with their ``X@gaussian``
  null and the ``X@linreg`` (scikit-learn's LinearRegression) and ``X@rule`` (the exact rule) controls.
- ``second_order`` (image classification tasks; only when named, e.g. a sweep's ``final_measures``):
  :func:`probe.metrics.second_order.second_order_measures`: ``clone_acc`` (the model on the class-conditional
  Gaussian clone test set), ``real_acc`` (on the real test set, for a model trained on the clone), ``qda_acc``
  (the second-order ceiling: QDA fitted on the real training set, scored on the real test set) and
  ``qda_clone_acc`` (the same QDA on the clone test set). On the whole test set, not the first n inputs.
"""

from __future__ import annotations

import torch

from probe.metrics import defined
from probe.metrics.arith import arith_measures
from probe.metrics.functional import lie_derivative, lie_ratio, shift_consistency
from probe.metrics.recurrence import recurrence_measures
from probe.metrics.routing import sequence_measures
from probe.metrics.second_order import second_order_measures
from probe.seeding import DETECT_SEED
from probe.tasks.clone import clone_test_set, gaussian_clone, real_data

FUNCTION_MEASURES = ("lie_derivative", "lie_ratio", "shift_consistency", "routing", "recurrence", "arith",
                     "second_order")
# computed only when named: they fit a classifier on the whole training set (not per model) and draw a clone
OPT_IN = ("second_order",)
# facts sequence_measures returns beside its measures: which attention head the attn_* measures are of
NOT_MEASURES = ("attn_layer", "attn_head")


def applicable(task) -> tuple[str, ...]:
    """The functional measures that are defined on ``task`` (those of :data:`OPT_IN` only when named)."""
    if getattr(task, "info", {}).get("family") == "arith":
        return ("arith",)
    if task.geometry.kind == "sequence":
        per_position = task.loss == "ce" and task.y_test.dim() == 2
        return ("routing", "recurrence") if per_position else ("routing",)
    images = ("lie_derivative", "lie_ratio")
    return (*images, "shift_consistency", "second_order") if task.loss == "ce" else images


def function_measures(model, task, names=None, n: int = 512, seed: int = 0,
                      info: dict | None = None) -> dict[str, float]:
    """The functional measures ``names`` (default: every one that applies, but :data:`OPT_IN`) of ``model`` on
    ``task``, as one flat dict of floats; names that do not apply to the task are left out (module docstring). Facts
    that are not measures (:data:`NOT_MEASURES`: the attention head the ``attn_*`` measures read) go into
    ``info``."""
    names = ([m for m in applicable(task) if m not in OPT_IN] if names is None
             else [m for m in names if m in applicable(task)])
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
        for k, v in sequence_measures(model, task, n=n, seed=seed).items():
            if k in NOT_MEASURES:
                if info is not None:
                    info[k] = int(v)
            else:
                out[k] = float(v)
    if "recurrence" in names:
        out.update(recurrence_measures(model, task, n=n, seed=seed))
    if "second_order" in names:
        on_clone = task.info.get("clone") == "gaussian"
        real = real_data(task)
        x_cl = gaussian_clone(real[0], real[1], real[1], task.n_outputs, torch.Generator().manual_seed(DETECT_SEED))
        out.update(second_order_measures(model, real, clone_test_set(task), on_clone, clone_train=x_cl))
    if "arith" in names:
        out.update(arith_measures(model, task))
    return defined(out)  # undefined ones (lie_ratio of a model that ignores its input) are left out, never NaN
