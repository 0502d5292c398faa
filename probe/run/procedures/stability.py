"""``stability``: is the symmetric solution stable once reached? The embedded CNN (:mod:`probe.run.procedures.ecnn`)
perturbed off its convolutional subspace by a relative norm eps and trained on the data or on whole orbits of
circular shifts: does the complement grow or decay? The complements are
:func:`probe.metrics.symmetry.complement_norm`, read as distances and growth by
:func:`~probe.metrics.symmetry.subspace_distances` and :func:`~probe.metrics.symmetry.complement_growth`;
:class:`ComplementTracker` only decides which layers and subspaces, and writes them into the metrics rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from probe.config import ConfigError, RunConfig
from probe.geometry import Geometry
from probe.metrics.equivariance import conv_layout, conv_subspace_projection
from probe.metrics.symmetry import (complement_growth, complement_norm, complement_share, invariant_readout_layout,
                                    orbit, shift_layout, subspace_distances)
from probe.models.conv import conv_layouts, out_size
from probe.run.metrics_file import read_metrics
from probe.run.loop import evaluate, resolve_device, train_or_resume
from probe.run.procedures.common import last_state_dict, load_weights
from probe.run.procedures.ecnn import embedded_cnn
from probe.seeding import SUBSPACE_PERTURB_STREAM, EpochOrder
from probe.tasks import make_task


class OrbitAugment:
    """Training batches of whole orbits: the trainer's epoch order (the batches of :class:`probe.run.loop.Batches`),
    each example with every circular shift of it (:func:`probe.metrics.symmetry.orbit`), so the loss of each step is
    the mean over the batch's orbits and its gradient the orbit average, exactly, at every step (random shifts would
    give it only in expectation). A batch of B examples is B |S| rows."""

    draws_from_train_set = True  # batches come from x_train: a batch larger than it is the whole set

    def __init__(self, task):
        self.task, self.order = task, EpochOrder()

    def __call__(self, seed: int, step: int, batch: int, device="cpu"):
        x, y = self.task.x_train, self.task.y_train  # read now: the task may have moved to the device
        idx = self.order(seed, step, len(x), batch).to(x.device)  # the batches of probe.run.loop.Batches
        xo = orbit(x[idx], self.task.geometry)
        return xo.to(device), y[idx].repeat_interleave(len(xo) // len(idx)).to(device)


def symmetry_layouts(model) -> list[dict]:
    """Per embedded local layer of ``model`` (a cnn LocalNet), the index arrays of its two subspaces: ``conv`` (the
    convolutions of its layout, :func:`probe.metrics.equivariance.conv_layout`) and ``equiv`` (the shift-equivariant
    layers, :func:`probe.metrics.symmetry.shift_layout`; None where no shift of the input is a shift of the output:
    a stride that does not divide the grid, or an even kernel under circular padding)."""
    out = []
    for geo, O, k, s, pad, circ in conv_layouts(model):
        outs = tuple(out_size(n, k, s, pad) for n in geo.spatial)
        try:
            equiv = shift_layout(Geometry(geo.channels, geo.spatial), O, s, outs)
        except ValueError:
            equiv = None
        out.append({"conv": conv_layout(geo, O, k, s, pad, circ), "equiv": equiv})
    return out


def perturb_off_convolutions(state: dict, layouts: list[dict], eps: float, which: str, seed: int) -> dict:
    """``state`` (an embedded CNN) with a random perturbation D_l added to each embedded local layer l (``which`` =
    all, or first: layer 0 only), D_l Gaussian projected onto the orthogonal complement of the layer's convolutional
    subspace and scaled so that the perturbed layer's complement share ||W - P(W)||_F / ||W||_F is ``eps``:
    ||D_l||_F = eps ||W_l||_F / sqrt(1 - eps^2) (W_l lies in the subspace, so P(W_l + D_l) = W_l). Seeded by
    ``seed`` and the layer; the readout and biases are kept."""
    out = {k: v.clone() for k, v in state.items()}
    if eps == 0:
        return out
    for l, lay in enumerate(layouts[:1] if which == "first" else layouts):
        key = f"layers.{l}.weight"
        W = state[key].double().cpu().numpy()
        Z = np.random.default_rng([seed, l, SUBSPACE_PERTURB_STREAM]).normal(size=W.shape)
        D = Z - conv_subspace_projection(Z, lay["conv"])
        D *= eps * np.linalg.norm(W) / np.sqrt(1 - eps**2) / np.linalg.norm(D)
        out[key] = torch.as_tensor(W + D, dtype=state[key].dtype)
    return out


class ComplementTracker:
    """Training hook: the share of each embedded layer outside its convolutional and its shift-equivariant
    subspace, at every logged row. Keys (first layer; ``_l<i>`` for deeper layer i; ``_all`` pooled over the
    layers, sqrt(sum of squared complements / sum of squared norms)):

    - ``conv_subspace_distance``: ||W - P_conv(W)||_F / ||W||_F (the key ecnn's results use for the same quantity);
    - ``equiv_subspace_distance``: ||W - P_equiv(W)||_F / ||W||_F, outside the weight-shared layers (local or not);
    - ``conv_complement_growth``, ``equiv_complement_growth``: ||W_t - P(W_t)||_F / ||W_0 - P(W_0)||_F, the
      complement's norm against its start (only where the start is a perturbation, eps > 0);
    - ``readout_shift_distance``: the readout's share outside the readouts invariant to shifts
      (:func:`probe.metrics.symmetry.invariant_readout_layout`).
    """

    def __init__(self, layouts: list[dict], readout_index: np.ndarray, state0: dict, perturbed: bool):
        self.layouts, self.readout_index = layouts, readout_index
        self.start = self.norms(state0) if perturbed else None

    def norms(self, state: dict) -> dict:
        out = {}
        for l, lay in enumerate(self.layouts):
            W = state[f"layers.{l}.weight"].detach().double().cpu().numpy()
            for name in ("conv", "equiv"):
                if lay[name] is not None:
                    out[(name, l)] = complement_norm(W, lay[name])
        return out

    def measures(self, state: dict) -> dict:
        norms, row = self.norms(state), {}
        for name in ("conv", "equiv"):
            layers = sorted(l for (n, l) in norms if n == name)
            if not layers:
                continue
            now = [norms[(name, l)] for l in layers]
            shares, pooled = subspace_distances(now)
            for l, share in zip(layers, shares):
                row[f"{name}_subspace_distance{f'_l{l}' if l else ''}"] = share
            row[f"{name}_subspace_distance_all"] = pooled
            if self.start is not None:
                first, together = complement_growth(now, [self.start[(name, l)] for l in layers])
                if first is not None:
                    row[f"{name}_complement_growth"], row[f"{name}_complement_growth_all"] = first, together
        row["readout_shift_distance"] = complement_share(state["readout.weight"].detach().double().cpu().numpy(),
                                                         self.readout_index)
        return row

    def __call__(self, step, model):
        return self.measures(model.state_dict())


AUGMENTS = ("none", "orbit")


def _double(state: dict):
    """``prepare`` for a float64 run: the model, and the task's inputs, in double precision (the optimizer holds the
    same parameter objects, its state is made on the first step); on a fresh start the weights are ``state``."""

    def prepare(run, fresh):
        run.model.double()
        for k in ("x_train", "x_test"):
            setattr(run.task, k, getattr(run.task, k).double())
        if fresh:
            run.model.load_state_dict(state)

    return prepare


def stability(cfg: RunConfig, out: Path, cnn_steps: int = 1000, source_opts: dict | None = None, eps: float = 0.1,
              augment: str = "none", perturb: str = "all", precision: str = "float32"):
    """Is the symmetric solution stable once reached? A CNN (``source_opts``; by default circular padding and a
    pooled readout, so that it is a fixed point of the circular shifts) trained for ``cnn_steps`` steps
    (``stages/cnn``) is embedded exactly into an MLP (:func:`embedded_cnn`, as in ``ecnn``); each embedded local
    layer (``perturb`` = all; first: the first layer only) gets a random perturbation in the orthogonal complement
    of its convolutional subspace, of relative norm ``eps`` (:func:`perturb_off_convolutions`: the perturbed
    layer's complement share is eps); the MLP trains with ``cfg`` into ``out`` on the data (``augment`` = none) or
    on whole orbits (orbit: every circular shift of every example in each batch, :class:`OrbitAugment`), and
    :class:`ComplementTracker` writes the complements into every metrics row.

    Why every layer by default: the symmetric solution is the whole network's; a perturbation of the first layer
    alone leaves the deeper layers exactly symmetric and asks a narrower question (``perturb=first``).

    With ``augment=orbit`` the shift-equivariant subspace is invariant under training (module docstring of
    :mod:`probe.metrics.symmetry`): an unperturbed layer stays equivariant to rounding error, and the equivariant
    complement of a perturbation grows or decays by the dynamics alone. This needs the embedded net to be a fixed
    point (circular padding, strides dividing the grid, an odd kernel, a pooled readout); otherwise a ConfigError.
    Orbit augmentation keeps weight sharing, not locality: read ``conv_*`` (local and shared) and ``equiv_*``
    (shared) side by side.

    ``precision`` = float64 trains the MLP stage (weights, optimizer state and data) in double precision, and so
    without bfloat16 autocast on a GPU. It matters for orbits: in float32 rounding error breaks the symmetry a
    little at every step, and Adam, which divides each coordinate's gradient by its own scale, blows the rounding
    of near-zero gradients up to steps of the learning rate's size. Measured (MNIST-1D, 16-channel CNN, width 320,
    depth 3, batch 100, eps 0, 200 orbit steps): equiv_subspace_distance_all 8.5e-4 with Adam lr 1e-3 in float32,
    2.0e-5 with SGD lr 0.05 in float32, 2.7e-16 with Adam in float64.

    Results: ``width``, ``depth``, ``cnn_test_acc``, ``perturbed_test_acc`` (step 0), ``test_acc`` (final);
    ``conv_complement_ratio`` and ``equiv_complement_ratio`` (first layer), with ``_all`` (every local layer), the
    final over the initial norm of the complement (> 1: it grew; None for eps = 0); the final
    ``conv_subspace_distance``, ``equiv_subspace_distance`` (and ``_all``) with their step-0 values (``@init``), and
    ``readout_shift_distance``.
    """
    if cfg.model != "mlp" or cfg.param != "standard" or cfg.model_opts:
        raise ConfigError("procedure stability: the run must be a plain model=mlp, param=standard, without model_opts "
                          "(the CNN goes in procedure_opts.source_opts)")
    if (cnn_steps < 0 or not 0 <= eps < 1 or augment not in AUGMENTS or perturb not in ("all", "first")
            or precision not in ("float32", "float64")):
        raise ConfigError(f"procedure stability: cnn_steps >= 0, 0 <= eps < 1, augment none or orbit, perturb all or "
                          f"first and precision float32 or float64 required; got cnn_steps={cnn_steps}, eps={eps}, "
                          f"augment={augment!r}, perturb={perturb!r}, precision={precision!r}")
    task = make_task(cfg.task, cfg.task_opts, seed=cfg.seed)
    if task.geometry.kind != "image" or task.geometry.channels_last:
        raise ConfigError(f"procedure stability: task {cfg.task} is not an image task; the embedded CNN needs a grid")
    if task.sampler is not None:
        raise ConfigError(f"procedure stability: task {cfg.task} draws its own batches (online sampling or "
                          "augmentation); the procedure's augment option is the only augmentation it takes")
    out = Path(out)
    opts = {"padding": "circular", "pool": True, **(source_opts or {})}
    cnn, width, depth, state, _ = embedded_cnn(cfg, out, cnn_steps, "cnn", opts)
    layouts = symmetry_layouts(cnn)
    positions = state["readout.weight"].shape[1] // cnn.layers[-1].weight.shape[0]
    readout_index = invariant_readout_layout(task.n_outputs, cnn.layers[-1].weight.shape[0], positions)
    tracker = ComplementTracker(layouts, readout_index, state, perturbed=False)
    if augment == "orbit":
        at_start = tracker.measures(state)
        if any(lay["equiv"] is None for lay in layouts) or max(
                at_start["equiv_subspace_distance_all"], at_start["readout_shift_distance"]) > 1e-5:
            raise ConfigError(f"procedure stability: augment=orbit keeps the layers equivariant only when the embedded "
                              f"CNN is a fixed point of circular shifts (padding=circular, strides dividing the grid "
                              f"{tuple(task.geometry.spatial)}, an odd kernel, pool=true); source_opts {opts} is not")
        task.sampler = OrbitAugment(task)
    state0 = perturb_off_convolutions(state, layouts, eps, perturb, cfg.seed)
    tracker = ComplementTracker(layouts, readout_index, state0, perturbed=eps > 0)
    mlp_cfg = cfg.replace(width=width, depth=depth)
    task.to(resolve_device(cfg.device))
    cnn_acc = evaluate(cnn.to(task.x_test.device), task.x_test, task.y_test, task.loss).get("acc")
    prepare = load_weights(state0) if precision == "float32" else _double(state0)
    row = train_or_resume(mlp_cfg, out, prepare=prepare, hooks=(tracker,), task=task)
    first, last = tracker.measures(state0), tracker.measures(last_state_dict(out))
    results = {"width": width, "depth": depth, "eps": eps, "cnn_test_acc": cnn_acc,
               "perturbed_test_acc": read_metrics(out)[0].get("test_acc"), "test_acc": row.get("test_acc")}
    for name in ("conv", "equiv"):
        for suffix in ("", "_all"):
            key = f"{name}_subspace_distance{suffix}"
            if key in last:
                results[key], results[f"{key}@init"] = last[key], first[key]
            growth = last.get(f"{name}_complement_growth{suffix}")
            results[f"{name}_complement_ratio{suffix}"] = growth
    results["readout_shift_distance"] = last["readout_shift_distance"]
    return row, results

