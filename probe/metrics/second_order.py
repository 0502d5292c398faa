"""Which input statistics a solution uses: accuracy on the class-conditional Gaussian clone, and
the second-order ceiling.

- ``clone_acc``: the network's accuracy on the clone test set (:func:`probe.tasks.clone.clone_test_set`: the real
  test labels, each example drawn from N(mu_y, Sigma_y), the class's moments on the training set),

      clone_acc = (1/N) sum_i [argmax_k f(x~_i)_k = y_i].

  A network trained on real data that keeps its accuracy on the clone rests on the classes' first two moments; one
  that loses it uses higher-order statistics (or the clone's off-manifold inputs confuse it). ``real_acc``: for a
  run trained on the clone, the same on the real test set (the other direction).
- ``clone_detect_acc``: how far off the data the clone lies, the held-out accuracy of a discriminator between the
  real training inputs and as many drawn from their class moments
  (:func:`probe.metrics.intervention.clone_discriminator`); 0.5: indistinguishable.
- ``qda_acc``: the second-order ceiling, scikit-learn's QuadraticDiscriminantAnalysis fitted on the real training
  set and scored on the real test set: the Bayes rule of class-conditional Gaussians with the classes' measured
  moments, argmax_c log pi_c - (1/2) log|S_c| - (1/2) (x - mu_c)^T S_c^{-1} (x - mu_c), with the shrunk covariance
  S_c = (1 - a) Sigma_c + a (tr Sigma_c / d) I, a = :data:`QDA_SHRINKAGE` (``solver="eigen"``,
  ``shrinkage=a``): scale-free, and full rank where Sigma_c is singular (constant pixels, fewer examples of a class
  than pixels), where the unshrunk rule is undefined. ``qda_clone_acc``: the same QDA scored on the clone test set,
  a Bayes-like reference for the clone (on which QDA's model is exact up to the estimation of the moments).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from probe.metrics.intervention import clone_discriminator

# measured (seed 0, default splits): MNIST-1D 0.551 at 1e-3, 0.575 at 1e-2, 0.533 at 0.1 (scikit-learn's default
# svd solver with reg_param 1e-3 gives 0.553, the pilot); the 5,000-image MNIST subset (400 examples a
# class, 784 pixels) 0.870, 0.906, 0.945: where n_c < d the ceiling depends on it, read it as a lower bound there
QDA_SHRINKAGE = 1e-3
EVAL_BATCH = 4096


@torch.no_grad()
def clone_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy (1/N) sum_i [argmax_k f(x_i)_k = y_i] of ``model`` on (x, y), in eval mode (restored after); x is
    the clone test set for ``clone_acc``, the real test set for ``real_acc`` (module docstring)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    try:
        for i in range(0, len(x), EVAL_BATCH):
            out = model(x[i : i + EVAL_BATCH].to(dev)).float()
            correct += int((out.argmax(-1) == y[i : i + EVAL_BATCH].to(dev)).sum())
    finally:
        model.train(was_training)
    return correct / max(len(x), 1)


def qda_predict(x_train, y_train, x_test, shrinkage: float = QDA_SHRINKAGE) -> np.ndarray:
    """Class predictions of scikit-learn's QuadraticDiscriminantAnalysis (``solver="eigen"``, ``shrinkage``)
    fitted on (x_train, y_train): argmax_c log pi_c - (1/2) log|S_c| - (1/2) (x - mu_c)^T S_c^{-1} (x - mu_c),
    S_c = (1 - a) Sigma_c + a (tr Sigma_c / d) I (module docstring)."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    f = lambda t: t.detach().cpu().double().numpy() if torch.is_tensor(t) else np.asarray(t, np.float64)  # noqa: E731
    x_train, x_test = f(x_train), f(x_test)
    # one global scale (QDA's rule does not change): the added a tr(Sigma_c)/d is then ~a, above scikit-learn's
    # absolute rank tolerance (1e-4), whatever the data's units
    scale = x_train.std() or 1.0
    qda = QuadraticDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
    with warnings.catch_warnings():  # "Variables are collinear": the shrinkage is there for exactly that
        warnings.simplefilter("ignore")
        qda.fit(x_train / scale, f(y_train))
        return qda.predict(x_test / scale)


def qda_accuracy(x_train, y_train, x_test, y_test, shrinkage: float = QDA_SHRINKAGE) -> float:
    """The second-order ceiling: (1/N) sum_i [qda(x_i) = y_i], QDA (:func:`qda_predict`) fitted on (x_train,
    y_train) and scored on (x_test, y_test)."""
    from numpy.linalg import LinAlgError

    y = y_test.detach().cpu().numpy() if torch.is_tensor(y_test) else np.asarray(y_test)
    try:
        return float((qda_predict(x_train, y_train, x_test, shrinkage) == y).mean())
    except (LinAlgError, ValueError):  # a class of one example, or one class only: no QDA (left out, not NaN'd)
        return float("nan")


def second_order_measures(model, real, clone, on_clone: bool = False, clone_train=None) -> dict[str, float]:
    """``clone_acc``, ``real_acc`` (``on_clone``: a model trained on the clone), ``qda_acc`` and ``qda_clone_acc`` of
    ``model``: the final-measure form of this module's measures. ``real``: the real (x_train, y_train, x_test,
    y_test) (:func:`probe.tasks.clone.real_data`); ``clone``: the clone test set (x, y)
    (:func:`probe.tasks.clone.clone_test_set`, the same as the tracked ``clone_acc``'s). ``clone_train``: a clone of
    the real training inputs (one example per real one, seeded :data:`probe.seeding.DETECT_SEED`), for
    ``clone_detect_acc``: how well a discriminator tells real inputs from clone ones
    (:func:`probe.metrics.intervention.clone_discriminator`, 0.5 when it cannot)."""
    x_tr, y_tr, x_te, y_te = real
    xc, yc = clone
    out = {"clone_acc": clone_accuracy(model, xc, yc)}
    if on_clone:
        out["real_acc"] = clone_accuracy(model, x_te, y_te)
    out["qda_acc"] = qda_accuracy(x_tr, y_tr, x_te, y_te)
    out["qda_clone_acc"] = qda_accuracy(x_tr, y_tr, xc, yc)
    if clone_train is not None:  # how far off the data the clone lies
        out["clone_detect_acc"] = clone_discriminator(x_tr.cpu().numpy(), clone_train.cpu().numpy())
    return out


class CloneAccuracy:
    """The training hook of ``--track clone_acc``: at the steps where ``due(step)`` is true, ``clone_acc`` on the
    clone test set (x, y) (drawn once, when the hook is made) and, for a run on the clone, ``real_acc`` on
    ``real`` = the real (x_test, y_test), in the metrics row (:func:`probe.run.tracking.clone_accuracy_hook`)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, real: tuple | None, due):
        self.x, self.y, self.real, self.due = x, y, real, due

    def __call__(self, step: int, model: torch.nn.Module) -> dict[str, float]:
        if not self.due(step):
            return {}
        row = {"clone_acc": clone_accuracy(model, self.x, self.y)}
        if self.real is not None:
            row["real_acc"] = clone_accuracy(model, *self.real)
        return row
