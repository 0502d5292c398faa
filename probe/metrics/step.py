"""The pull along the step: does the update the optimizer applies make the first layer more structured?

The energy shares of :mod:`probe.metrics.pull` (``grad_com_share_k``, ``grad_conv_share``, ``grad_local_share``)
say *where the gradient's energy sits*. They cannot say whether a step makes a field more local: a gradient that
prunes each field's tails and one that shrinks each field's core put their energy in different places, yet the
first raises window mass and the second lowers it; a gradient that pulls weights back into a subspace and one
that pushes them out have the same energy there; and under Adam the gradient is not the step taken. This module
reads the change of a structure measure S of the first layer W (any scalar function of the matrix: window mass,
the distance to the convolutions of a layout, ...) along the update D the optimizer applies (D = W_{t+1} - W_t):

- ``dS`` = S'(W)[D] = d/dh S(W + h D) at h = 0, the first-order change of S over the step, by a central difference
  (S(W + e D) - S(W - e D)) / (2 e), e = :data:`REL_H` ||W|| / ||D|| (a relative step small enough for
  first order, large enough against float rounding; :func:`directional_change`). Its sign says toward (+, for a
  measure where high is structured) or away; a step parallel to each unit's own weights changes no
  scale-free per-unit measure (window mass, ipr) and so reads 0 exactly, whatever its energy.
- ``dS@random``: the same along isotropic random directions R of the same norm ||R|| = ||D||, mean and sd over
  ``draws`` draws: what a step that ignores the structure does (near 0 to first order; its sd is the scale
  against which dS is read).
- ``dS@units``: the same along D with its rows (units) exchanged by a random derangement: another unit's step
  applied to each unit, which keeps how the steps lie on the grid overall and breaks only the relation between a
  unit's step and its own field; mean and sd over draws.
- the realized change ``S(W_{t+k}) - S(W_t)`` over the next k steps (:func:`realized_change`), against the same
  displacement's norm in random directions and the displacement with its units exchanged.
- ``step_norm`` = ||D||_F, ``step_parallel_share`` = sum_i <D_i, W_i>^2 / ||W_i||^2 / ||D||^2, the share of the
  step that rescales each unit's existing field (read beside the gradient's norm, which the caller measures).

Every effect is reported as dS minus its null's mean with the null's sd: :func:`effect_interval` gives a normal
interval over draws (dS is one number; the null's spread is the uncertainty).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from probe.metrics.locality import as_matrix
from probe.seeding import REALIZED_STREAM, STEP_STREAM

REL_H = 1e-4  # the central difference's step, relative to ||W|| / ||D||
DRAWS = 20  # random directions and unit derangements per null


def _derangement(m: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of m >= 2 items with no fixed point (one cycle through a shuffled order)."""
    order = rng.permutation(m)
    perm = np.empty(m, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def directional_change(S: Callable[[np.ndarray], float], W, D, rel_h: float = REL_H) -> float:
    """S'(W)[D] = d/dh S(W + h D) at h = 0, by a central difference with e = rel_h ||W|| / ||D|| (module
    docstring): the first-order change of S when the whole step D is taken. 0 for D = 0; NaN when S is undefined
    at either side."""
    W, D = as_matrix(W), as_matrix(D)
    if W.shape != D.shape:
        raise ValueError(f"a step of shape {D.shape} for weights of shape {W.shape}")
    nd, nw = np.linalg.norm(D), np.linalg.norm(W)
    if nd == 0:
        return 0.0
    e = rel_h * (nw if nw > 0 else 1.0) / nd
    return float((S(W + e * D) - S(W - e * D)) / (2 * e))


def parallel_share(W, D) -> float:
    """sum_i <D_i, W_i>^2 / ||W_i||^2 over units with weights, divided by ||D||^2: the share of the step along each
    unit's own weights (a rescaling of the existing field); NaN for D = 0."""
    W, D = as_matrix(W), as_matrix(D)
    nw = (W**2).sum(axis=1)
    tot = float((D**2).sum())
    if tot == 0:
        return float("nan")
    live = nw > 0
    return float(((D[live] * W[live]).sum(axis=1) ** 2 / nw[live]).sum() / tot)


def step_pull(S: Callable[[np.ndarray], float], W, D, draws: int = DRAWS, seed: int = 0) -> dict[str, float]:
    """dS along the applied step D, beside its nulls (module docstring): ``dS``, ``dS@random`` and
    ``dS@random_sd`` (random directions of norm ||D||), ``dS@units`` and ``dS@units_sd`` (each unit given another
    unit's step; left out for one unit), ``step_norm`` and ``step_parallel_share``."""
    W, D = as_matrix(W), as_matrix(D)
    rng = np.random.default_rng([seed, STEP_STREAM])
    nd = np.linalg.norm(D)
    out = {"dS": directional_change(S, W, D), "step_norm": float(nd), "step_parallel_share": parallel_share(W, D)}
    rand = []
    for _ in range(draws):
        R = rng.standard_normal(W.shape)
        rand.append(directional_change(S, W, R * (nd / np.linalg.norm(R))))
    out["dS@random"], out["dS@random_sd"] = float(np.mean(rand)), float(np.std(rand, ddof=1)) if draws > 1 else 0.0
    if len(W) >= 2:
        units = [directional_change(S, W, D[_derangement(len(W), rng)]) for _ in range(draws)]
        out["dS@units"], out["dS@units_sd"] = float(np.mean(units)), float(np.std(units, ddof=1)) if draws > 1 else 0.0
    return out


def realized_change(S: Callable[[np.ndarray], float], W_t, W_tk, draws: int = DRAWS, seed: int = 0) -> dict[str, float]:
    """The change of S over the next k steps, S(W_{t+k}) - S(W_t) (``dS_k``), beside the same displacement's norm
    taken in random directions (``dS_k@random``, ``dS_k@random_sd``) and the displacement with its units exchanged
    (``dS_k@units``, ``dS_k@units_sd``), and ``move_norm`` = ||W_{t+k} - W_t||."""
    W_t, W_tk = as_matrix(W_t), as_matrix(W_tk)
    if W_t.shape != W_tk.shape:
        raise ValueError(f"weights of shapes {W_t.shape} and {W_tk.shape}: not the same layer")
    rng = np.random.default_rng([seed, REALIZED_STREAM])
    D = W_tk - W_t
    nd = np.linalg.norm(D)
    s0 = S(W_t)
    out = {"dS_k": float(S(W_tk) - s0), "move_norm": float(nd)}
    rand = []
    for _ in range(draws):
        R = rng.standard_normal(W_t.shape)
        rand.append(S(W_t + R * (nd / np.linalg.norm(R))) - s0)
    out["dS_k@random"], out["dS_k@random_sd"] = float(np.mean(rand)), float(np.std(rand, ddof=1))
    if len(W_t) >= 2:
        units = [S(W_t + D[_derangement(len(W_t), rng)]) - s0 for _ in range(draws)]
        out["dS_k@units"], out["dS_k@units_sd"] = float(np.mean(units)), float(np.std(units, ddof=1))
    return out


def effect_interval(value: float, null_mean: float, null_sd: float, z: float = 1.96) -> tuple[float, float, float]:
    """(effect, low, high): value - null_mean with the normal interval +- z null_sd (the null's spread over draws
    is the uncertainty of a single measured value against it)."""
    eff = value - null_mean
    return float(eff), float(eff - z * null_sd), float(eff + z * null_sd)


# -- the convolutional and locally connected subspaces, signed -----------------------------------------------------
def local_distance(M, index: np.ndarray) -> float:
    """||M ⊙ 1[no tap]||_F / ||M||_F: the relative distance of M to the locally connected matrices of a layout
    (:func:`probe.metrics.equivariance.conv_layout`'s index); NaN for M = 0."""
    M = as_matrix(M)
    n = np.linalg.norm(M)
    return float(np.linalg.norm(M[index < 0]) / n) if n > 0 else float("nan")


def subspace_step(M, D, index: np.ndarray, draws: int = DRAWS, seed: int = 0) -> dict[str, float]:
    """The signed pull toward a layout's subspaces: the first-order change along the step D of the relative
    distance of M to the convolutions (``conv_dist_change``, :func:`probe.metrics.equivariance.conv_subspace_distance`)
    and to the locally connected matrices (``local_dist_change``, :func:`local_distance`), each with its random-
    direction null (mean and sd, ``@random``, ``@random_sd``) and another unit's step (``@units``). Negative: the
    step moves M toward the subspace; positive: out of it. Unlike the energy shares it tells a step that pulls
    weights in from one that pushes them out (both have the same energy in the subspace)."""
    held = index >= 0
    taps = index[held]
    counts = np.bincount(taps).astype(np.float64)
    used = counts > 0

    def conv_dist(A):  # = conv_subspace_distance(A, index): ||A - P A||^2 = ||A||^2 - sum_taps (tap sum)^2 / n_tap
        tot = float((A**2).sum())
        sums = np.bincount(taps, weights=A[held], minlength=len(counts))
        return float(np.sqrt(max(1.0 - (sums[used] ** 2 / counts[used]).sum() / tot, 0.0))) if tot > 0 else float("nan")

    def local_dist(A):
        tot = float((A**2).sum())
        return float(np.sqrt(max(1.0 - float((A[held] ** 2).sum()) / tot, 0.0))) if tot > 0 else float("nan")

    M = as_matrix(M)
    if M.shape != index.shape:
        raise ValueError(f"a matrix of shape {M.shape} does not fit a layout of shape {index.shape}")
    out = {}
    for name, S in (("conv_dist_change", conv_dist), ("local_dist_change", local_dist)):
        r = step_pull(S, M, D, draws, seed)
        out[name] = r["dS"]
        for k in ("@random", "@random_sd", "@units", "@units_sd"):
            if f"dS{k}" in r:
                out[f"{name}{k}"] = r[f"dS{k}"]
    return out


def local_conv_share_null(M, index: np.ndarray) -> float:
    """conv_share@local, computed: the expected conv_share of M with the sign of every entry in the layout's windows
    drawn at random (each entry keeps its magnitude, so the layout's energy stays where M has it; sharing across
    positions is destroyed), over ||M||_F^2:

        E ||P_conv(eps ⊙ M)||^2 / ||M||^2 = sum_taps (sum_{e holds tap} M_e^2) / n_tap / ||M||^2,

    n_tap the number of entries holding the tap (P_conv gives each tap the mean over its entries, and the cross
    terms vanish in expectation). Exact for any layout, open grids with zero padding included, where the scaled
    form local_share x dim_conv / dim_local (:func:`probe.metrics.pull.shared_chance`) assumes every entry holds
    the same energy and misreads a matrix whose energy sits on taps held by fewer entries. NaN for M = 0."""
    M = as_matrix(M)
    if M.shape != index.shape:
        raise ValueError(f"a matrix of shape {M.shape} does not fit a layout of shape {index.shape}")
    total = float((M**2).sum())
    if total == 0:
        return float("nan")
    held = index >= 0
    n_taps = int(index.max()) + 1 if held.any() else 0
    energy = np.bincount(index[held], weights=M[held] ** 2, minlength=n_taps)
    counts = np.bincount(index[held], minlength=n_taps)
    return float((energy[counts > 0] / counts[counts > 0]).sum() / total)
