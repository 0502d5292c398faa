"""Measures of the "add two numbers" end of the spectrum (task ``add``: y = op(x_a, x_b) among D inputs).

- ``relevant_weight_mass`` = sum_i sum_{j in R} W[i, j]^2 / sum_i sum_j W[i, j]^2, W the first layer (m x D)
  and R the relevant inputs {a, b}: the share of the first layer's weight energy on the inputs the rule reads.
  1 when every weight on the other inputs is zero, which is what a network that "learns to selectively set most
  of its weights to zero" reaches; |R| / D in expectation for i.i.d. weights (its null, ``@gaussian``) and about
  that at the run's initialization (``@init``). A linear regression's coefficients (a 1 x D "layer") are read the
  same way (``@linreg``).
- ``rel_mse`` = mean (f(x) - y)^2 / var(y) on the test split (inputs in the training range), and
  ``extrap_rel_mse`` the same on the extrapolation split (every input outside the training range): 0 for a
  perfect prediction, 1 for predicting the mean; the exact rule scores noise^2 / var(y), the least any learner
  can reach. Beside them: ``@linreg``, scikit-learn's LinearRegression fit on the same training split (the
  "intuition-driven" end: a linear rule, exact for add, unable to represent mul or max), and ``@rule``, the
  exact rule op(x_a, x_b) (no data needed).
"""

from __future__ import annotations

import numpy as np
import torch
from probe.metrics.intervention import relevant_grad_share, relevant_iv_share

# the task's ops (probe/tasks/arith.py) in numpy: measures import no task module
RULES = {"add": np.add, "mul": np.multiply, "max": np.maximum}


def relevant_weight_mass(W, relevant) -> float:
    """sum_i sum_{j in R} W[i, j]^2 / sum W^2 (module docstring); NaN for an all-zero W."""
    if hasattr(W, "detach"):
        W = W.detach().cpu().double().numpy()
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    tot = (W**2).sum()
    return float((W[:, list(relevant)] ** 2).sum() / tot) if tot > 0 else float("nan")


def rel_mse(pred, y) -> float:
    """mean (pred - y)^2 / var(y) (module docstring)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return float(((pred - y) ** 2).mean() / y.var())


def rule(x, relevant, op: str) -> np.ndarray:
    """The exact rule op(x_a, x_b), no parameters."""
    x = np.asarray(x, dtype=np.float64)
    return RULES[op](x[:, relevant[0]], x[:, relevant[1]])


def arith_measures(model, task) -> dict[str, float]:
    """``relevant_weight_mass``, ``rel_mse`` and ``extrap_rel_mse`` of ``model`` on an ``add`` task, on the whole
    test and extrapolation splits, each beside its null and controls (module docstring): ``@gaussian`` (|R|/D),
    ``@linreg`` (LinearRegression on the same training split) and ``@rule`` (the exact rule)."""
    from sklearn.linear_model import LinearRegression

    rel, op = task.info["relevant"], task.info["op"]
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred_te = model(task.x_test.to(dev)).float().cpu().numpy()
            pred_ex = model(task.extras["x_extrap"].to(dev)).float().cpu().numpy()
        W = model.first_layer_dense()
    finally:
        model.train(was_training)
    x_tr, y_tr = task.x_train.cpu().double().numpy(), task.y_train.cpu().double().numpy().reshape(-1)
    x_te, y_te = task.x_test.cpu().double().numpy(), task.y_test.cpu().double().numpy()
    x_ex, y_ex = task.extras["x_extrap"].cpu().double().numpy(), task.extras["y_extrap"].cpu().double().numpy()
    lr = LinearRegression().fit(x_tr, y_tr)
    out = {
        "relevant_weight_mass": relevant_weight_mass(W, rel),
        "relevant_weight_mass@gaussian": len(rel) / x_tr.shape[1],
        "relevant_weight_mass@linreg": relevant_weight_mass(lr.coef_[None, :], rel),
        "rel_mse": rel_mse(pred_te, y_te),
        "extrap_rel_mse": rel_mse(pred_ex, y_ex),
        "rel_mse@linreg": rel_mse(lr.predict(x_te), y_te),
        "extrap_rel_mse@linreg": rel_mse(lr.predict(x_ex), y_ex),
        "rel_mse@rule": rel_mse(rule(x_te, rel, op), y_te),
        "extrap_rel_mse@rule": rel_mse(rule(x_ex, rel, op), y_ex),
    }
    f = lambda x: model(x.to(dev).float()).double().cpu()
    out["relevant_grad_share"] = relevant_grad_share(f, task.x_test.cpu(), rel)
    out["relevant_iv_share"] = relevant_iv_share(f, task.x_test.cpu(), rel)
    return {k: v for k, v in out.items() if np.isfinite(v)}
