"""Early steps read in the units' final windows: does the early pull point where each field ends up?

For a first layer W_T at the end of training, unit i's *final window* c_i is the window of k positions (k x k on
2-D grids; the windows of :func:`probe.metrics.locality.window_sums`) that holds the most of its final energy
e_i(s) = sum_c W_T[i, c, s]^2. An earlier update D of the first layer (Adam's applied step, or a gradient) is read
in those windows two ways, averaged over the units whose step (and, for the signed reading, whose weights) is
nonzero:

- ``window_energy_share``: E_i = sum_{s in c_i} d_i(s) / sum_s d_i(s), d_i(s) = sum_c D[i, c, s]^2: how much of
  unit i's step's energy falls in its final window. 1 for a step entirely inside it; k / |S| (the window's share
  of the grid) for a step spread evenly.
- ``window_mass_change``: the first-order change of the share of unit i's current weights W that lies in c_i,
  m_i(W) = sum_{s in c_i} e_i(s) / sum_s e_i(s), along D: dm_i = 2 (<W_c, D_c> - m_i <W, D>) / ||W_i||^2, where
  W_c, D_c are the unit's entries in c_i. Positive when the step moves the weights' mass into the window the field
  ends in (the signed reading: a step that grows the window's weights reads positive, one that shrinks them
  negative, where the energy share reads both alike).

Nulls read the same step in other windows: ``random`` draws each unit's window uniformly among all windows of
the grid; ``units`` gives each unit another unit's final window (a random derangement). Each is averaged over
``draws`` draws (mean and sd over draws reported). A step whose energy sits in another unit's final window reads
what the ``units`` null reads for a step in its own: the measure is specific to each unit's own final field.
"""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.locality import energy_maps, unit_fields, window_sums


def window_members(geometry: Geometry, k: int) -> np.ndarray:
    """Boolean (n_windows, |S|): which grid positions each k-window covers (windows as
    :func:`probe.metrics.locality.window_sums`, wrapping on periodic grids)."""
    n = int(np.prod(geometry.spatial))
    eye = np.eye(n).reshape(n, *geometry.spatial)
    return window_sums(eye, geometry, k).reshape(n, -1).T > 0.5


def final_windows(W_final, geometry: Geometry, k: int = 3) -> np.ndarray:
    """Each unit's final window: the index (into :func:`window_members`) of the k-window holding the most of its
    energy in W_final, shape (m,). Ties go to the first window."""
    E = energy_maps(unit_fields(W_final, geometry))
    return window_sums(E, geometry, k).reshape(len(E), -1).argmax(axis=1)


def _energy(M, geometry: Geometry) -> np.ndarray:
    """d_i(s), flattened over the grid: shape (m, |S|)."""
    E = energy_maps(unit_fields(M, geometry))
    return E.reshape(len(E), -1)


def window_energy_share(D, windows: np.ndarray, geometry: Geometry, k: int = 3) -> float:
    """mean_i sum_{s in window_i} d_i(s) / sum_s d_i(s) over the units with a nonzero step (module docstring);
    ``windows`` holds one window index per unit. NaN when no unit moves."""
    members = window_members(geometry, k)
    d = _energy(D, geometry)
    tot = d.sum(axis=1)
    live = tot > 0
    if not live.any():
        return float("nan")
    inside = (d * members[np.asarray(windows)]).sum(axis=1)
    return float(np.mean(inside[live] / tot[live]))


def window_mass_change(W, D, windows: np.ndarray, geometry: Geometry, k: int = 3) -> float:
    """mean_i dm_i: the first-order change, along D, of the share of unit i's energy in W that lies in its window
    (module docstring), over the units with nonzero weights and step; NaN when there are none."""
    members = window_members(geometry, k)
    F = unit_fields(W, geometry).reshape(len(windows), -1, int(np.prod(geometry.spatial)))
    G = unit_fields(D, geometry).reshape(F.shape)
    mask = members[np.asarray(windows)][:, None, :]  # (m, 1, |S|), broadcast over channels
    w2 = (F * F).sum(axis=(1, 2))
    live = (w2 > 0) & ((G * G).sum(axis=(1, 2)) > 0)
    if not live.any():
        return float("nan")
    m = (F * F * mask).sum(axis=(1, 2))[live] / w2[live]
    wd_c = (F * G * mask).sum(axis=(1, 2))[live]
    wd = (F * G).sum(axis=(1, 2))[live]
    return float(np.mean(2 * (wd_c - m * wd) / w2[live]))


def _derangement(m: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn permutation without fixed points (m >= 2), by rejection."""
    while True:
        p = rng.permutation(m)
        if not (p == np.arange(m)).any():
            return p


def null_windows(windows: np.ndarray, geometry: Geometry, k: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One draw of the null's windows: ``random`` (uniform over the grid's windows, per unit) or ``units`` (another
    unit's final window: a derangement of ``windows``)."""
    windows = np.asarray(windows)
    if kind == "random":
        return rng.integers(0, len(window_members(geometry, k)), size=len(windows))
    if kind == "units":
        if len(windows) < 2:
            raise ValueError("the units null needs at least 2 units")
        return windows[_derangement(len(windows), rng)]
    raise ValueError(f"null kind must be 'random' or 'units', got {kind!r}")


def final_window_reading(W, D, W_final, geometry: Geometry, k: int = 3, draws: int = 20, seed: int = 0) -> dict:
    """Both readings of the step D (taken at weights W) in the final windows of W_final, with their ``random`` and
    ``units`` nulls over ``draws`` draws each: keys ``share``, ``share@random``, ``share@random_sd``,
    ``share@units``, ``share@units_sd``, and the same for ``dm`` (:func:`window_mass_change`)."""
    if draws < 2:
        raise ValueError(f"draws must be >= 2 (the null's sd), got {draws}")
    c = final_windows(W_final, geometry, k)
    out = {"share": window_energy_share(D, c, geometry, k), "dm": window_mass_change(W, D, c, geometry, k)}
    for kind in ("random", "units"):
        rng = np.random.default_rng([seed, 0 if kind == "random" else 1])
        sh, dm = [], []
        for _ in range(draws):
            cn = null_windows(c, geometry, k, kind, rng)
            sh.append(window_energy_share(D, cn, geometry, k))
            dm.append(window_mass_change(W, D, cn, geometry, k))
        out[f"share@{kind}"], out[f"share@{kind}_sd"] = float(np.mean(sh)), float(np.std(sh, ddof=1))
        out[f"dm@{kind}"], out[f"dm@{kind}_sd"] = float(np.mean(dm)), float(np.std(dm, ddof=1))
    return out
