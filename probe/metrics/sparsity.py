"""Sparsity of first-layer weights and how far training moved them (docs/design.md §4.4).

Notation (docs/design.md §4.2): W is m x n with rows w_i; fields F = geometry.fields(W) of shape (m, C, *S).
All-zero rows (pruned-away units) are left out of the per-unit means, as in :mod:`locality`.
"""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.locality import as_matrix, centres, energy_maps, offsets, unit_fields


def hoyer(W, geometry: Geometry | None = None) -> float:
    """hoyer = mean_i (sqrt(n) - |w_i|_1 / |w_i|_2) / (sqrt(n) - 1).

    0 for a row with equal magnitudes, 1 for a row with one nonzero weight. For i.i.d. rows, |w|_1 / |w|_2 ->
    sqrt(n) E|w| / sqrt(E w^2) for large n, so hoyer -> (1 - r) sqrt(n) / (sqrt(n) - 1) with r = E|w| / sqrt(E w^2):
    r = sqrt(2/pi) for Gaussian weights (1 - r = 0.20; 0.24 at n = 40), r = sqrt(3)/2 for uniform ones such as
    PyTorch's default init (1 - r = 0.13; 0.16 at n = 40). ``geometry`` is unused (rows are compared as flat
    vectors); it is accepted so that every weight measure has the signature f(W, geometry).
    """
    W = as_matrix(W)
    n = W.shape[1]
    if n < 2:
        return float("nan")
    l1, l2 = np.abs(W).sum(axis=1), np.linalg.norm(W, axis=1)
    live = l2 > 0
    ratio = l1[live] / l2[live]
    h = (np.sqrt(n) - ratio) / (np.sqrt(n) - 1)
    return float(h.mean()) if h.size else float("nan")


def zero_frac(W, geometry: Geometry | None = None) -> float:
    """Share of weights that are exactly 0 (pruned or beta-LASSO layers; 0 for a dense layer)."""
    W = as_matrix(W)
    return float(np.mean(W == 0)) if W.size else float("nan")


def movement(W, W0) -> float:
    """movement = ||W - W_0||_F / ||W_0||_F: how far training took the layer from its initialization W_0.

    Lazy training keeps it near 0. nan when W_0 is all zero.
    """
    W, W0 = as_matrix(W), as_matrix(W0)
    if W.shape != W0.shape:
        raise ValueError(f"movement: W has shape {W.shape} but W0 has shape {W0.shape}")
    norm0 = np.linalg.norm(W0)
    return float(np.linalg.norm(W - W0) / norm0) if norm0 > 0 else float("nan")


def _displacements(W, geometry: Geometry, energy: np.ndarray | None = None) -> np.ndarray:
    """|s - mu_i| for every surviving connection position (i, s), pooled over units, 1-D array.

    mu_i is unit i's energy centre (:func:`probe.metrics.locality.centres`), distances are euclidean
    with circular per-axis offsets on periodic grids. A position s survives for unit i when any of its C
    weights is nonzero; each surviving position counts once. ``energy``: the energy maps of W
    (:func:`probe.metrics.locality.energy_maps`), when already computed.
    """
    F = unit_fields(W, geometry)
    E = energy_maps(F) if energy is None else energy
    alive = (F != 0).any(axis=1)  # (m, *S): positions with a surviving connection
    totals = E.reshape(len(E), -1).sum(axis=1)
    live = totals > 0
    if not live.all():  # (indexing copies: skip it in the common case)
        E, alive, totals = E[live], alive[live], totals[live]
    p = E / totals.reshape(-1, *([1] * geometry.ndim))
    d2 = np.zeros(E.shape)
    for a, mu in enumerate(centres(p, geometry)):
        d = offsets(mu, geometry.spatial[a], geometry.periodic) ** 2
        # broadcast the (m, L_a) offsets along the other grid axis
        d2 += d.reshape(len(d), *[L if b == a else 1 for b, L in enumerate(geometry.spatial)])
    return np.sqrt(d2[alive])


def displacement(W, geometry: Geometry, energy: np.ndarray | None = None) -> dict[str, float]:
    """Distance of surviving connections from their unit's energy centre, in pixels.

    Returns ``displacement_mean`` and ``displacement_median`` of |s - mu_i| over every surviving
    (nonzero) connection position, pooled over units (see :func:`displacement_histogram` for the bins).
    Meant for sparse layers: a pruned layer whose masks became local has small displacements; on a
    dense layer every position survives and the numbers only describe the grid, so read them against
    the references. ``energy``: the energy maps of W, when already computed.
    """
    d = _displacements(W, geometry, energy)
    if not d.size:
        return {"displacement_mean": float("nan"), "displacement_median": float("nan")}
    return {"displacement_mean": float(d.mean()), "displacement_median": float(np.median(d))}


def displacement_histogram(W, geometry: Geometry) -> dict[str, float]:
    """Share of surviving connections at each distance from their unit's energy centre.

    Key ``"b"`` holds the share with b <= |s - mu_i| < b + 1 (pixels), for b = 0 .. the largest
    distance the grid allows; the shares sum to 1 (empty dict for a layer without nonzero weights).
    """
    d = _displacements(W, geometry)
    if not d.size:
        return {}
    half = [L / 2 if geometry.periodic else L - 1 for L in geometry.spatial]
    n_bins = int(np.floor(np.sqrt(sum(h * h for h in half)))) + 1
    # round first: a distance of exactly 2 computed as 1.9999999999999998 belongs to bin 2, not bin 1
    counts = np.bincount(np.minimum(np.floor(np.round(d, 9)).astype(int), n_bins - 1), minlength=n_bins)
    return {str(b): float(c / d.size) for b, c in enumerate(counts)}
