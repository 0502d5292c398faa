"""The learned part ΔW and the pull: where training's updates go (docs/design.md §4).

In the standard parametrization a wide first layer ends near its initialization W_0, so measures of W mostly read
W_0. Two instruments read what training did instead:

- **ΔW = W_t - W_0**, the learned part of the first layer (dense, over the input geometry). Every first-layer
  and layer measure m of the registry has a ``delta_m`` twin: m(ΔW), read against the same nulls drawn from ΔW
  (:func:`probe.metrics.nulls.references` on ΔW). ΔW = 0 (step 0, or a layer that never moved) has no
  structure to measure: its delta measures are left out, not reported as a number.
- **The pull G = dL/dW_1**, the gradient of the training loss (the data term, without a penalty such as
  ``--l1``) with respect to the dense first-layer matrix, on a fixed batch (:func:`pull_batch`). For an MLP it is
  the first Linear layer's weight gradient. For a CNN or LCN it is the gradient with respect to the layer's
  *dense* matrix M (z = M x + b), not to its kernel: what an MLP standing at the same point of function space
  would feel. It is computed exactly by the chain rule through the layer's output, dL/dM = sum_b (dL/dz_b) x_b^T
  (:func:`first_layer_gradient`). Every first-layer and layer measure m has a ``grad_m`` twin, m(G), and:

  * ``grad_com_share_k`` (:func:`com_share`): how much of each unit's gradient energy falls inside the k-window
    around the unit's *current* weight centre of mass: does the pull reinforce where the field already is? Read
    against ``@chance`` (an evenly spread gradient) and ``@units`` (:func:`com_share_units`: another unit's
    window, which keeps where the gradient and the fields lie on the grid overall).
  * ``grad_conv_share`` / ``delta_conv_share`` and ``grad_local_share`` / ``delta_local_share``
    (:func:`subspace_shares`), where a unit layout is known (an embedded CNN or LCN): the share of ||G||^2 and
    ||ΔW||^2 in the convolutional subspace of that layout, and in its locally connected subspace, each beside the
    share of a random direction (the subspace's dimension over the layer's number of entries).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from probe.geometry import Geometry
from probe.losses import loss_fn
from probe.metrics.equivariance import conv_subspace_projection
from probe.metrics.locality import (_live_distributions, as_matrix, centres, energy_maps, unit_fields, window_sizes,
                                   window_sums)
from probe.seeding import PULL_STREAM  # the generator stream of the fixed batch

PULL_BATCH = 2048  # the fixed batch of the pull: the whole training set up to this size, else this many examples
COM_WINDOWS = (3, 5)  # grad_com_share_k


# -- ΔW ----------------------------------------------------------------------------------------------------------
def delta(W, W0) -> np.ndarray:
    """ΔW = W - W_0 as a float64 matrix; a ValueError when the shapes differ."""
    W, W0 = as_matrix(W), as_matrix(W0)
    if W.shape != W0.shape:
        raise ValueError(f"the layer has shape {W.shape}, its initialization {W0.shape}: no ΔW")
    return W - W0


# -- the centre-of-mass window share -----------------------------------------------------------------------------
def com_windows(W, geometry: Geometry, k: int) -> np.ndarray:
    """The start of each unit's k-window around its centre of mass, (m, d) ints, and -1 rows for units of W
    without energy.

    Per axis of length L, the window has kk = min(k, L) positions starting at round(mu - (kk - 1) / 2), mu the
    centre of mass of the unit's energy map e_i(s) = sum_c W_i(c, s)^2 (:func:`probe.metrics.locality.centres`:
    the circular mean on periodic grids); on periodic grids the start is taken mod L (the window wraps), on
    others it is clipped to 0 .. L - kk (the window stays inside the grid, as window_mass's windows do).
    """
    E = energy_maps(unit_fields(W, geometry))
    live = E.reshape(len(E), -1).sum(axis=1) > 0
    starts = np.full((len(E), geometry.ndim), -1, dtype=np.int64)
    if not live.any():
        return starts
    mus = centres(_live_distributions(E), geometry)
    for a, (L, kk) in enumerate(zip(geometry.spatial, window_sizes(geometry, k))):
        s = np.round(mus[a] - (kk - 1) / 2).astype(np.int64)
        if kk == L:  # the window is the whole axis
            s = np.zeros_like(s)
        starts[live, a] = np.mod(s, L) if geometry.periodic else np.clip(s, 0, L - kk)
    return starts


def com_share(G, W, geometry: Geometry, k: int) -> float:
    """grad_com_share_k = mean_i sum_{s in K_i} g_i(s) / sum_s g_i(s).

    g_i(s) = sum_c G_i(c, s)^2 is unit i's gradient energy at position s and K_i the k (1-D) or k x k (2-D)
    window around the centre of mass of the unit's current weights W_i (:func:`com_windows`). The mean runs
    over units with both weight and gradient energy. 1 when every unit's gradient lies inside that window (the
    pull sharpens the field where it is); its chance level, the expectation for an isotropic (i.i.d. Gaussian)
    G, is exactly :func:`com_share_chance` = |K| / |S| (each unit's share is then Beta(C|K|/2, C(|S|-|K|)/2)).
    """
    G, W = as_matrix(G), as_matrix(W)
    if G.shape != W.shape:
        raise ValueError(f"gradient of shape {G.shape} for weights of shape {W.shape}")
    starts = com_windows(W, geometry, k)
    g = energy_maps(unit_fields(G, geometry))  # (m, *S)
    tot = g.reshape(len(g), -1).sum(axis=1)
    use = (starts[:, 0] >= 0) & (tot > 0)
    if not use.any():
        return float("nan")
    sums = window_sums(g[use], geometry, k)  # (m_used, *starts): the window starts index this array
    inside = sums[(np.arange(len(sums)), *starts[use].T)]
    return float(np.mean(inside / tot[use]))


def com_share_units(G, W, geometry: Geometry, k: int, seed: int) -> float:
    """grad_com_share_k@units: :func:`com_share` with each unit's gradient read in the window of *another* unit's
    weights (a random derangement of the units, seeded by ``seed`` and :data:`PULL_STREAM`); NaN for one unit.

    Why beside :func:`com_share_chance`: |K| / |S| assumes the gradient's energy is spread evenly over the grid.
    When it is not (the data's variance, hence every unit's gradient, peaks in the middle of the grid) and the
    centres of mass gather there too (those of random weights on an open grid do), com_share exceeds chance with
    no relation between a unit's pull and its own field; pairing G_i with W_j, j != i, keeps both marginals and
    breaks only that relation."""
    G, W = as_matrix(G), as_matrix(W)
    m = len(W)
    if m < 2:
        return float("nan")
    order = np.random.default_rng([seed, PULL_STREAM, k]).permutation(m)
    perm = np.empty(m, dtype=np.int64)
    perm[order] = np.roll(order, -1)  # one cycle through every unit: no unit keeps its own window
    return com_share(G, W[perm], geometry, k)


def com_share_chance(geometry: Geometry, k: int) -> float:
    """|K| / |S|: the expected grad_com_share_k of an isotropic gradient (:func:`com_share`)."""
    return float(np.prod(window_sizes(geometry, k)) / geometry.n_positions)


# -- the convolutional and locally connected subspaces of a known layout ------------------------------------------
def subspace_dims(index: np.ndarray) -> dict[str, int]:
    """The dimensions of the two subspaces of a layout (:func:`probe.metrics.equivariance.conv_layout`'s index):
    ``conv`` = the number of distinct kernel taps that land on the grid (one shared number each), ``local`` = the
    number of entries some tap lands on (one free number each, as a locally connected layer has), ``all`` =
    the layer's number of entries m n."""
    held = index >= 0
    return {"conv": int(np.unique(index[held]).size), "local": int(held.sum()), "all": int(index.size)}


def subspace_shares(M, index: np.ndarray) -> dict[str, float]:
    """The shares of ||M||_F^2 in the convolutional and locally connected subspaces of a known unit layout.

    conv_share = ||P_conv M||_F^2 / ||M||_F^2 with P_conv the exact orthogonal projector onto the convolutions of
    the layout (:func:`probe.metrics.equivariance.conv_subspace_projection`: each tap gets the mean of M over the
    entries holding it); local_share = ||M ⊙ 1[entry in a window]||_F^2 / ||M||_F^2, the projector onto the
    locally connected matrices of the same windows (every entry a tap lands on is free). conv <= local <= 1:
    the convolutions are a subspace of the locally connected matrices. Both are 1 for an M in the subspace and,
    for an isotropic random M (i.i.d. Gaussian), dim / (m n) in expectation (:func:`subspace_dims`;
    :func:`random_shares`), the level a direction that ignores the layout reaches.
    """
    M = as_matrix(M)
    if M.shape != index.shape:
        raise ValueError(f"a matrix of shape {M.shape} does not fit a layout of shape {index.shape}")
    total = float((M**2).sum())
    if total == 0:
        return {"conv_share": float("nan"), "local_share": float("nan")}
    held = index >= 0
    return {"conv_share": float((conv_subspace_projection(M, index) ** 2).sum()) / total,
            "local_share": float((M[held] ** 2).sum()) / total}


def random_shares(index: np.ndarray) -> dict[str, float]:
    """The expected :func:`subspace_shares` of an isotropic random direction: dim / (m n) for each subspace."""
    d = subspace_dims(index)
    return {"conv_share": d["conv"] / d["all"], "local_share": d["local"] / d["all"]}


def shared_chance(shares: dict[str, float], index: np.ndarray) -> float:
    """conv_share@local = local_share(M) * dim_conv / dim_local: the expected conv_share of a matrix with M's
    local share whose part in the locally connected subspace is an isotropic random direction there (local,
    but with no sharing across positions).

    Why: the convolutions lie inside the locally connected matrices, so P_conv M = P_conv(P_local M) and any
    local matrix, shared or not, reads a conv_share far above :func:`random_shares`' dim_conv / (m n) (by about
    m n / dim_local, ~8 for a kernel of 5 on 40 positions). Read against this null, conv_share says whether
    the matrix is *shared* beyond being local; against the random direction's, only that it is local or shared.
    """
    d = subspace_dims(index)
    return float(shares["local_share"] * d["conv"] / d["local"])


# -- the gradient of the dense first layer ------------------------------------------------------------------------
def first_layer_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module whose weights are ``model.first_layer_dense()``, for the image models whose first layer is linear
    in its input (z = M x + b): an MLP's first Linear (the readout of a depth-0 MLP), a bottleneck MLP's embedding,
    a CNN's or LCN's first local layer. None for other models."""
    first = getattr(model, "first_layer_module", None)
    return first() if callable(first) else None


@contextmanager
def _dense_probe(module: torch.nn.Module, D: torch.Tensor):
    """Add x -> D x_flat to ``module``'s output while inside: with D = 0 the forward pass is unchanged, and
    dL/dD is dL/dM for the module's dense matrix M (its output, flattened, is M x_flat + b in the row order of
    :func:`probe.models.conv.local_dense`, channel-major: unit (o, p) = o P + p)."""

    def hook(mod, args, out):
        x = args[0].reshape(len(args[0]), -1)
        return out + (x @ D.T).reshape(out.shape)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def first_layer_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str,
                         chunk: int = 4096) -> torch.Tensor:
    """G = dL/dM, L the mean training loss (``loss``: ce or mse, as the trainer's) on (x, y) and M the model's
    dense first layer (``first_layer_dense``), as an (m, n) float tensor on the model's device.

    Exact by the chain rule: a zero matrix D is added to the layer's dense map (:func:`_dense_probe`) and
    autograd returns dL/dD = sum_b (dL/dz_b) x_b^T. No parameter's ``.grad`` is touched, so calling it inside the
    training loop leaves the optimizer's state alone. Batches larger than ``chunk`` are summed in chunks,
    weighted by their size (the loss is a mean). Runs in float32 (no autocast) and in the model's current mode.
    """
    module = first_layer_module(model)
    if module is None:
        raise ValueError(f"{type(model).__name__}: the pull needs a first layer linear in its input (an MLP, a "
                         "bottleneck MLP, a CNN or an LCN)")
    W = model.first_layer_dense()
    D = torch.zeros(W.shape, dtype=W.dtype, device=W.device, requires_grad=True)
    G = torch.zeros_like(W)
    n = len(x)
    with _dense_probe(module, D), torch.enable_grad():
        for i in range(0, n, chunk):
            xb, yb = x[i : i + chunk], y[i : i + chunk]
            part = loss_fn(model(xb), yb, loss) * (len(xb) / n)
            G += torch.autograd.grad(part, D)[0]
    return G


def pull_batch(task, seed: int, size: int = PULL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch of the pull: the whole training set (``task.x_train``) when it has <= ``size`` examples,
    else ``size`` of them drawn without replacement by ``np.random.default_rng([seed, PULL_STREAM])``, in index
    order: the same examples at every step of a run."""
    n = len(task.x_train)
    if n <= size:
        return task.x_train, task.y_train
    idx = np.sort(np.random.default_rng([seed, PULL_STREAM]).choice(n, size, replace=False))
    idx = torch.as_tensor(idx, device=task.x_train.device)
    return task.x_train[idx], task.y_train[idx]
