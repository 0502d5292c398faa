"""Locality of first-layer receptive fields (docs/design.md §4.4).

Notation (docs/design.md §4.2): W is m x n, F = geometry.fields(W) has shape (m, C, *S), the energy map of unit i
is e_i(s) = sum_c F[i, c, s]^2 and p_i = e_i / sum_s e_i(s).

Units whose weights are all zero (pruned away, dead) have no p_i; every mean here is over the other
units, and a layer without any live unit gives nan.

Besides the measures, this module holds the small grid helpers the other measure modules share:
:func:`as_matrix`, :func:`unit_fields`, :func:`energy_maps`, :func:`centres`, :func:`offsets` and
:func:`window_sums`.
"""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry

# -- shared helpers ----------------------------------------------------------------------------------


def as_matrix(W) -> np.ndarray:
    """W as a float64 numpy matrix; torch tensors are detached and moved to the CPU."""
    if hasattr(W, "detach"):
        W = W.detach().cpu().double().numpy()
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"weights must be a matrix (m x n), got shape {W.shape}")
    return W


def unit_fields(W, geometry: Geometry) -> np.ndarray:
    """Receptive fields F (m, C, *S) in float64, in the original (unshuffled) position order."""
    return geometry.fields(as_matrix(W))


def energy_maps(F: np.ndarray) -> np.ndarray:
    """e_i(s) = sum_c F[i, c, s]^2, shape (m, *S)."""
    return np.einsum("ic...,ic...->i...", F, F)


def _live_distributions(E: np.ndarray) -> np.ndarray:
    """p_i = e_i / sum_s e_i for the units with nonzero energy, shape (m_live, *S)."""
    totals = E.reshape(len(E), -1).sum(axis=1)
    live = totals > 0
    if not live.all():  # (indexing copies: skip it in the common case)
        E, totals = E[live], totals[live]
    return E / totals.reshape(-1, *([1] * (E.ndim - 1)))


def _marginal(p: np.ndarray, axis: int) -> np.ndarray:
    """Marginal of p (m, *S) on grid axis ``axis``: shape (m, S[axis])."""
    other = tuple(a + 1 for a in range(p.ndim - 1) if a != axis)
    return p.sum(axis=other) if other else p


def centres(p: np.ndarray, geometry: Geometry) -> list[np.ndarray]:
    """Centre of mass mu_i of each distribution p_i (m, *S), one (m,) array per grid axis.

    On periodic grids the centre is the circular mean per axis: mu = L/(2 pi) arg sum_s p(s) e^{2 pi i s/L}
    (the ordinary mean of positions would put a field that wraps around the edge in the middle of the
    grid). A field with no preferred direction (e.g. flat) gets an arbitrary but finite centre.
    """
    mus = []
    for a, L in enumerate(geometry.spatial):
        q = _marginal(p, a)
        s = np.arange(L)
        if geometry.periodic:
            z = q @ np.exp(2j * np.pi * s / L)
            mus.append(np.mod(np.angle(z) * L / (2 * np.pi), L))
        else:
            mus.append(q @ s)
    return mus


def offsets(mu: np.ndarray, L: int, periodic: bool) -> np.ndarray:
    """Signed offsets s - mu_i of every position s on one axis of length L, shape (m, L).

    On periodic axes the offset is the circular one, in [-L/2, L/2).
    """
    d = np.arange(L)[None, :] - mu[:, None]
    if periodic:
        d = np.mod(d + L / 2, L) - L / 2
    return d


def window_sizes(geometry: Geometry, k: int) -> tuple[int, ...]:
    """Per-axis window length: k, or the whole axis if the grid is shorter than k."""
    if k < 1:
        raise ValueError(f"window size k must be positive, got {k}")
    return tuple(min(k, L) for L in geometry.spatial)


def _along(a: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """The view a[..., start:stop, ...] on ``axis``."""
    return a[(slice(None),) * axis + (slice(start, stop),)]


def window_sums(E: np.ndarray, geometry: Geometry, k: int) -> np.ndarray:
    """Sums of E (m, *S) over every k (1-D) or k x k (2-D) window, shape (m, *starts).

    Window starts run over every position on periodic axes (windows wrap around) and over
    0 .. L - k on the others (windows stay inside the grid). An axis shorter than k is summed whole.
    Computed as k shifted slices per axis rather than a cumulative sum, so that an exact window mass of
    1 comes out as 1 up to rounding, without cancellation.
    """
    out = E
    for a, (L, kk) in enumerate(zip(geometry.spatial, window_sizes(geometry, k))):
        ax = a + 1
        if kk == L:
            out = out.sum(axis=ax, keepdims=True)
            continue
        if geometry.periodic:
            out = np.concatenate([out, _along(out, ax, 0, kk - 1)], axis=ax)
        n_starts = out.shape[ax] - kk + 1
        acc = _along(out, ax, 0, n_starts).copy()
        for j in range(1, kk):
            acc += _along(out, ax, j, j + n_starts)
        out = acc
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


# -- measures ----------------------------------------------------------------------------------------


def distributions(W, geometry: Geometry) -> np.ndarray:
    """p_i = e_i / sum_s e_i(s) of the live units of W, shape (m_live, *S): what the locality measures read.
    :func:`probe.metrics.first_layer_measures` computes it once and passes it to each of them as ``p``."""
    return _live_distributions(energy_maps(unit_fields(W, geometry)))


def unit_ipr(W, geometry: Geometry, p: np.ndarray | None = None) -> np.ndarray:
    """Per-unit inverse participation ratio sum_s p_i(s)^2 of the live units, shape (m_live,). ``p``:
    :func:`distributions` of W, when already computed (W is then not read)."""
    p = distributions(W, geometry) if p is None else p
    return (p.reshape(len(p), -1) ** 2).sum(axis=1)


def ipr(W, geometry: Geometry, p: np.ndarray | None = None) -> float:
    """ipr = mean_i sum_s p_i(s)^2.

    1/|S| for a flat field, 1 for a single pixel, exactly (C + 2) / (C |S| + 2) in expectation for i.i.d.
    Gaussian weights (:func:`ipr_gaussian`), and (C + kappa - 1) / (C |S|) to first order for i.i.d. weights of
    kurtosis kappa (:func:`ipr_iid`: PyTorch's default uniform init, kappa = 9/5, gives less than Gaussian
    weights). Measures concentration, not contiguity: it does not change when input positions are permuted.
    ``p``: :func:`distributions` of W, when already computed.
    """
    return _mean(unit_ipr(W, geometry, p))


def ipr_gaussian(geometry: Geometry) -> float:
    """The exact expectation of a unit's ipr for i.i.d. Gaussian weights, (C + 2) / (C |S| + 2).

    e(s) = sum_c w[c, s]^2 is chi-square with C degrees of freedom, so p = e / sum_s e is Dirichlet with |S|
    parameters C/2, and E p(s)^2 = (C/2)(C/2 + 1) / ((C|S|/2)(C|S|/2 + 1)); summed over s this is
    (C + 2) / (C |S| + 2) (3 / (|S| + 2) for C = 1; 0.071 for |S| = 40). To first order in 1/|S| it is the
    (C + 2) / (C |S|) of :func:`ipr_iid` with kappa = 3.
    """
    C, P = geometry.channels, geometry.n_positions
    return (C + 2) / (C * P + 2)


def ipr_iid(geometry: Geometry, kurtosis: float) -> float:
    """E[ipr] to first order in 1/|S| for i.i.d. zero-mean weights of kurtosis kappa = E w^4 / (E w^2)^2:
    |S| E e(s)^2 / (E sum_s e(s))^2 = (C + kappa - 1) / (C |S|).

    kappa = 3 for Gaussian weights ((C + 2) / (C |S|); the exact value is :func:`ipr_gaussian`), 9/5 for
    uniform ones such as PyTorch's default Linear and Conv init U(-1/sqrt(fan_in), 1/sqrt(fan_in)):
    (C + 4/5) / (C |S|), 0.045 for C = 1 and |S| = 40 against 0.071 for Gaussian weights. So a layer "at the
    Gaussian null" may still be above its own initialization's level.
    """
    C, P = geometry.channels, geometry.n_positions
    return (C + kurtosis - 1) / (C * P)


def ipr_frac_above(W, geometry: Geometry, threshold: float | None = None, p: np.ndarray | None = None) -> float:
    """Share of live units with sum_s p_i(s)^2 > threshold.

    Args:
        threshold: default 2 (C + 2) / (C |S| + 2), twice the random-Gaussian expectation (:func:`ipr_gaussian`). A
            random unit rarely gets there (for C = 1 its ipr fluctuates by about sqrt(8 / (3 |S|)) relative: 0.26 at
            |S| = 40, where 0.3% of Gaussian units pass), so the share counts the few localized units
            that a layer mean hides.
        p: :func:`distributions` of W, when already computed.
    """
    if threshold is None:
        threshold = 2 * ipr_gaussian(geometry)
    return _mean(unit_ipr(W, geometry, p) > threshold)


def spread(W, geometry: Geometry, p: np.ndarray | None = None) -> float:
    """spread = mean_i sqrt(sum_s p_i(s) |s - mu_i|^2), in pixels.

    mu_i is the centre of mass (:func:`centres`: circular mean per axis on periodic grids) and |s - mu|
    the euclidean distance over the grid axes, with circular per-axis offsets on periodic grids. 0 for a
    single pixel; for a flat field about L / sqrt(12) on a 1-D grid of length L, sqrt(2) times that on
    an L x L grid. ``p``: :func:`distributions` of W, when already computed.
    """
    p = distributions(W, geometry) if p is None else p
    var = np.zeros(len(p))
    # |s - mu|^2 is a sum over axes, so the variance only needs each axis' marginal
    for a, mu in enumerate(centres(p, geometry)):
        d = offsets(mu, geometry.spatial[a], geometry.periodic)
        var += (_marginal(p, a) * d**2).sum(axis=1)
    return _mean(np.sqrt(var))


def window_mass(W, geometry: Geometry, k: int, p: np.ndarray | None = None) -> float:
    """window_mass_k = mean_i max_window sum_{s in window} p_i(s).

    Windows are k (1-D) or k x k (2-D) and wrap around periodic grids; on other grids they stay inside
    it (see :func:`window_sums`). 1 for any field whose support fits in one window; about k^d / |S| for
    a flat field; 1 when k covers the grid. ``p``: :func:`distributions` of W, when already computed.
    """
    p = distributions(W, geometry) if p is None else p
    if not len(p):
        return float("nan")
    sums = window_sums(p, geometry, k)
    return _mean(sums.reshape(len(p), -1).max(axis=1))
