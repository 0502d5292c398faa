"""Class-conditional Gaussian clones of classification data: which input statistics a solution uses.

``--task-opt clone=gaussian`` on any image classification task replaces its data by the class-conditional Gaussian
clone. For each class c, measured on the (real) training set of n_c examples x_i:

    mu_c = (1/n_c) sum_i x_i,        Sigma_c = 1/(n_c - 1) sum_i (x_i - mu_c)(x_i - mu_c)^T,

and every example of class c is drawn from N(mu_c, Sigma_c): the clone keeps the first and second moments of each
class and nothing else. The training set keeps the real training labels (same order, so the same counts); the test
set keeps the real test labels, its examples drawn from the TRAINING moments (the test set's own moments would let
the test set leak into the clone).

Sampling without a d x d matrix where it is not needed: with A_c = (X_c - mu_c) / sqrt(n_c - 1) (n_c x d),
Sigma_c = A_c^T A_c, so x = mu_c + F_c z with F_c = A_c^T and z ~ N(0, I_{n_c}) has covariance exactly Sigma_c.
When n_c > d the triangular factor of A_c = Q R is smaller: F_c = R^T (d x d), R^T R = A_c^T A_c. Singular
covariances (constant pixels, n_c <= d) need no regularization: the clone lies in the span of the class's data.

The draws come from :func:`probe.seeding.stream`: the training clone from ``CLONE_TRAIN`` of the run's seed (its
draw is part of what varies from seed to seed), the test clone from ``CLONE_TEST`` of seed 0, whatever the run's
seed: like the real test set, it is a property of the data, not of the run. The ``clone_acc`` of a run on the real
data (tracked or final) draws its clone test set with the same function and stream (:func:`clone_test_set`), so a
real run's ``clone_acc`` and a clone run's ``test_acc`` are read on one and the same set, at every seed.
"""

from __future__ import annotations

import math

import torch

from probe.config import ConfigError
from probe.seeding import CLONE_TEST, CLONE_TRAIN, stream

CLONE_CHOICES = ("none", "gaussian")


def class_factors(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{class: (mu_c, F_c)} over the classes present in (x, y), float64 on the CPU, F_c F_c^T = Sigma_c (module
    docstring; a class of one example has Sigma_c = 0)."""
    x, y = x.detach().cpu().double(), y.detach().cpu()
    out = {}
    for c in range(n_classes):
        xc = x[y == c]
        if not len(xc):
            continue
        mu = xc.mean(0)
        n, d = xc.shape
        if n == 1:
            out[c] = (mu, torch.zeros(d, 1, dtype=torch.float64))
            continue
        A = (xc - mu) / math.sqrt(n - 1)
        out[c] = (mu, A.T.contiguous() if n <= d else torch.linalg.qr(A, mode="r").R.T.contiguous())
    return out


def gaussian_clone(x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, n_classes: int,
                   generator: torch.Generator, where: str = "clone", factors: dict | None = None) -> torch.Tensor:
    """Examples for ``labels`` (any order, any counts), the one of label c drawn from N(mu_c, Sigma_c) measured on
    (x, y) (module docstring): float32, shape (len(labels), d), on x's device. Draws class by class in class order
    from ``generator``. A label with no example of its class in (x, y) is a ConfigError. ``factors``:
    :func:`class_factors` of (x, y), when computed already."""
    factors = class_factors(x, y, n_classes) if factors is None else factors
    labels_cpu = labels.detach().cpu()
    out = torch.empty(len(labels_cpu), x.shape[1], dtype=torch.float64)
    for c in torch.unique(labels_cpu).tolist():
        if c not in factors:
            raise ConfigError(f"{where}: class {c} has no training example to measure its mean and covariance on")
        mu, F = factors[c]
        idx = (labels_cpu == c).nonzero().squeeze(1)
        z = torch.randn(len(idx), F.shape[1], generator=generator, dtype=torch.float64)
        out[idx] = mu + z @ F.T
    return out.float().to(x.device)


def check_clonable(task, where: str, fixed: bool = True) -> None:
    """ConfigError (one line, naming the problem) unless ``task`` is an image classification task (with a fixed
    training set, when ``fixed``: a clone replaces it): a class-conditional clone needs classes, and moments
    measured on inputs over a grid."""
    if task.geometry.kind != "image" or task.vocab is not None:
        raise ConfigError(f"{where} needs an image classification task; this is a sequence task "
                          "(its inputs are tokens, not real vectors with class moments)")
    if task.loss != "ce" or task.y_train.dim() != 1:
        raise ConfigError(f"{where} needs an image classification task; this one is a regression "
                          f"(loss {task.loss}), which has no classes to take moments of")
    if fixed and task.sampler is not None and not getattr(task.sampler, "draws_from_train_set", False):
        raise ConfigError(f"{where} needs a fixed training set to measure the class moments on; "
                          "this task draws fresh examples at every step (set fresh=false)")


def clone_test_set(task) -> tuple[torch.Tensor, torch.Tensor]:
    """The clone test set of ``task``: the real test labels, examples drawn from the training set's class moments
    (stream ``CLONE_TEST`` of seed 0, module docstring). A task that is a clone already returns its own test set,
    which was drawn the same way from the real training set."""
    if task.info.get("clone") == "gaussian":
        return task.x_test, task.y_test
    x = gaussian_clone(task.x_train, task.y_train, task.y_test, task.n_outputs, stream(0, CLONE_TEST),
                       where=f"task {task.name}")
    return x, task.y_test


def clone_task(task, seed: int, where: str):
    """``task`` with its training and test inputs replaced by the class-conditional Gaussian clone (module
    docstring). The real test set stays beside it as ``extras["real_x_test"]``/``["real_y_test"]`` (the tracked
    ``real_acc``) and the real training set as ``extras["real_x_train"]``/``["real_y_train"]`` (``qda_acc``
    fits QDA on the real data); ``info["clone"] = "gaussian"``."""
    check_clonable(task, f"{where}: clone=gaussian")
    x_tr, y_tr, x_te, y_te = task.x_train, task.y_train, task.x_test, task.y_test
    factors = class_factors(x_tr, y_tr, task.n_outputs)  # once: a QR per class of up to 5000 x 3072 (CIFAR-10)
    task.x_train = gaussian_clone(x_tr, y_tr, y_tr, task.n_outputs, stream(seed, CLONE_TRAIN), where, factors)
    task.x_test = gaussian_clone(x_tr, y_tr, y_te, task.n_outputs, stream(0, CLONE_TEST), where, factors)
    task.extras.update(real_x_train=x_tr, real_y_train=y_tr, real_x_test=x_te, real_y_test=y_te)
    task.info["clone"] = "gaussian"
    return task


def real_data(task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The real (x_train, y_train, x_test, y_test) of ``task``, also when it is a clone."""
    if task.info.get("clone") == "gaussian":
        e = task.extras
        return e["real_x_train"], e["real_y_train"], e["real_x_test"], e["real_y_test"]
    return task.x_train, task.y_train, task.x_test, task.y_test
