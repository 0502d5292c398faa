"""Space tiling and filter match: do localized fields cover the input evenly, and are they a CNN's filters?

Ingrosso & Goldt (2022) report that fully connected networks trained on NLGP inputs learn localized fields that tile
the input space and resemble the filters of a CNN trained on the same task. These two measures read those two
claims off a first layer, each against its own null.
"""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.locality import as_matrix, energy_maps, window_sums
from probe.metrics.surrogates import phase_randomize
from probe.seeding import TILING_STREAM

TILING_DRAWS = 20  # random placements averaged in the tiling null
LOCALIZED_K, LOCALIZED_MASS = 5, 0.5  # a unit is localized when its best 5-window holds half its energy or more


def _localized(E: np.ndarray, geometry: Geometry, k: int, mass: float) -> np.ndarray:
    """The energy distributions p_i = e_i / sum e_i of the units whose best k-window holds at least ``mass``."""
    tot = E.reshape(len(E), -1).sum(1)
    live = tot > 0
    E, tot = E[live], tot[live]
    if not len(E):
        return E
    best = window_sums(E, geometry, k).reshape(len(E), -1).max(1) / tot
    P = E / tot.reshape(-1, *[1] * (E.ndim - 1))
    return P[best >= mass - 1e-12]


def _evenness(P: np.ndarray) -> float:
    """1 - TV(c, u): c the mean of the distributions P (their coverage of the positions), u uniform."""
    c = P.reshape(len(P), -1).mean(0)
    return float(1.0 - 0.5 * np.abs(c - 1.0 / c.size).sum())


def tiling(W, geometry: Geometry, k: int = LOCALIZED_K, mass: float = LOCALIZED_MASS, draws: int = TILING_DRAWS,
           seed: int = 0) -> dict[str, float]:
    """How evenly the localized units' fields cover the input positions, and the same for those fields at random
    centres.

    Per unit i, the energy distribution p_i(s) = e_i(s) / sum_s' e_i(s'), e_i(s) = sum_c w_i(c, s)^2 over the |S|
    positions s. The localized units L are those whose best window of k (k x k) positions holds at least ``mass``
    of their energy (defaults 5 and 0.5). Their coverage is c(s) = (1/|L|) sum_{i in L} p_i(s), and

        tiling = 1 - (1/2) sum_s |c(s) - 1/|S||

    one minus the total-variation distance of the coverage from uniform: 1 when the fields together cover every
    position equally (|S| copies of one field, one centred at each position of a periodic grid), low when they all
    sit in one place (one field copied to every unit: 1 - TV of that single field from uniform, 1/|S| for a
    one-pixel field). ``tiling@random`` is the null: the same fields, each moved by its own uniformly random
    circular shift on every axis (its centre drawn anew, its shape kept), mean over ``draws`` placements of
    seeded draws; tiling above it means the centres are spread more evenly than chance, below it clumped. (On an
    open grid the moved fields wrap around its ends as on a periodic one.) NaN (both) when fewer than two units
    are localized: no tiling to read.
    """
    F = geometry.fields(as_matrix(W))
    P = _localized(energy_maps(F), geometry, k, mass)
    if len(P) < 2:
        return {"tiling": float("nan"), "tiling@random": float("nan")}
    rng = np.random.default_rng([seed, TILING_STREAM])
    m, S = len(P), tuple(geometry.spatial)
    grids = np.meshgrid(*[np.arange(L) for L in S], indexing="ij")
    null = []
    for _ in range(draws):  # unit i moved by its own shift t_i: moved_i(s) = p_i(s - t_i), wrapping around
        shifts = [rng.integers(0, L, m) for L in S]
        idx = tuple((g[None] - t.reshape(-1, *[1] * len(S))) % L for g, t, L in zip(grids, shifts, S))
        null.append(_evenness(P[(np.arange(m).reshape(-1, *[1] * len(S)), *idx)]))
    return {"tiling": _evenness(P), "tiling@random": float(np.mean(null))}


def _filter_bank(filters, channels: int, spatial: tuple) -> np.ndarray:
    """Filters as (K, C, *k) float64, unit-norm; a (K, k) bank of one-channel 1-D filters is accepted too."""
    Fb = np.asarray(filters.detach().cpu() if hasattr(filters, "detach") else filters, dtype=np.float64)
    if Fb.ndim == len(spatial) + 1 and channels == 1:
        Fb = Fb[:, None]
    if Fb.ndim != len(spatial) + 2 or Fb.shape[1] != channels or any(k > L for k, L in zip(Fb.shape[2:], spatial)):
        raise ValueError(f"filters of shape {Fb.shape} do not fit fields of {channels} channels on {spatial}")
    norm = np.linalg.norm(Fb.reshape(len(Fb), -1), axis=1)
    Fb = Fb[norm > 0]
    return Fb / norm[norm > 0].reshape(-1, *[1] * (Fb.ndim - 1))


def _best_cosines(F: np.ndarray, bank: np.ndarray, periodic: bool) -> np.ndarray:
    """Per unit, max over filters f and shifts t of <w_i, f placed at t> / |w_i| (f unit-norm)."""
    m, C, *S = F.shape
    ks = bank.shape[2:]
    starts = [range(L) if periodic else range(L - k + 1) for L, k in zip(S, ks)]
    norms = np.linalg.norm(F.reshape(m, -1), axis=1)
    best = np.full(m, -np.inf)
    flat_bank = bank.reshape(len(bank), -1)
    for t in np.ndindex(*[len(r) for r in starts]):
        idx = [np.arange(t[a], t[a] + ks[a]) % S[a] for a in range(len(S))]
        crop = F[(slice(None), slice(None), *np.ix_(*idx))] if len(S) > 1 else F[:, :, idx[0]]
        best = np.maximum(best, (crop.reshape(m, -1) @ flat_bank.T).max(1))
    return np.where(norms > 0, best / np.where(norms > 0, norms, 1.0), np.nan)


def filter_match(W, geometry: Geometry, filters, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """How closely each unit's field is one of a CNN's first-layer filters, placed anywhere, against the same for
    phase-randomized fields.

    For unit i with field w_i (C x |S|) and the CNN's filters f_1 .. f_K (C x k each, k <= |S| per axis):

        match_i = max_{j, t} <w_i, T_t f_j> / (|w_i| |f_j|)

    T_t f_j the filter placed with its first tap at position t and zero elsewhere (every t on a periodic grid,
    wrapping around; on an open grid the t where it fits). ``filter_match`` is the mean of match_i over the units
    with a nonzero field. It is 1 exactly when every field is a filter at some place (a CNN's own filters, or an
    MLP that learned them), and falls both with the shape (a field that is not a filter) and with the energy a
    field has outside the filter's window (a non-local field matches no filter well). The null
    ``filter_match@phase``: the same for every field with its Fourier phases randomized
    (:func:`probe.metrics.nulls.phase_randomize`: its power spectrum, hence smoothness, kept; its place and shape
    drawn anew), mean over ``draws`` randomizations; a smooth field matches a smooth filter partly by its
    spectrum alone, and only the excess over this null is the filters' shape.
    """
    W = as_matrix(W)
    F = geometry.fields(W)
    bank = _filter_bank(filters, geometry.channels, tuple(geometry.spatial))
    ok = np.linalg.norm(F.reshape(len(F), -1), axis=1) > 0
    if not ok.any() or not len(bank):
        return {"filter_match": float("nan"), "filter_match@phase": float("nan")}
    own = float(np.nanmean(_best_cosines(F[ok], bank, geometry.periodic)))
    plain = geometry.without_perm()
    null = [float(np.nanmean(_best_cosines(plain.fields(phase_randomize(W, geometry, seed, j))[ok], bank,
                                           geometry.periodic))) for j in range(draws)]
    return {"filter_match": own, "filter_match@phase": float(np.mean(null))}
