"""Measures of how close weights and models come to convolutional structure (DESIGN §3).

Every measure is a pure function of weights (numpy arrays or torch tensors, float64 inside) plus the
input :class:`~probe.geometry.Geometry`; functional measures take a model and a batch instead.

- :data:`WEIGHT_MEASURES`: name -> f(W, geometry) for first-layer weights; each returns a float, or a
  dict of floats whose keys are listed in :data:`MEASURE_KEYS`.
- :func:`first_layer_measures`: the registry on one matrix, as one flat dict of floats.
- :func:`layer_measures`: the spectral measures that apply to any layer.
- :func:`references`: the same first-layer measures on the nulls every number is read against.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from probe.geometry import Geometry
from probe.metrics.equivariance import conv_distance, flat_from_fields, shift_match
from probe.metrics.functional import lie_derivative, shift_consistency
from probe.metrics.locality import as_matrix, ipr, ipr_frac_above, spread, window_mass
from probe.metrics.sparsity import displacement, hoyer, movement, zero_frac
from probe.metrics.spectral import (
    alpha,
    effective_rank,
    input_pc_share,
    peak_frequency,
    spectral_entropy,
    spectral_measures,
    stable_rank,
)

WEIGHT_MEASURES = {
    "ipr": ipr,
    "ipr_frac_above": ipr_frac_above,
    "spread": spread,
    "window_mass_3": partial(window_mass, k=3),
    "window_mass_5": partial(window_mass, k=5),
    "hoyer": hoyer,
    "zero_frac": zero_frac,
    "displacement": displacement,
    "shift_match": shift_match,
    "conv_distance_3": partial(conv_distance, k=3),
    "conv_distance_5": partial(conv_distance, k=5),
    "spectral_entropy": spectral_entropy,
    "peak_frequency": peak_frequency,
}

# the output keys of registry entries that return a dict (the others return their own name)
MEASURE_KEYS = {
    "displacement": ("displacement_mean", "displacement_median"),
    "shift_match": ("shift_match", "shift_match_units"),
}

LAYER_MEASURES = ("effective_rank", "stable_rank", "alpha")


def first_layer_measures(W, geometry: Geometry, names=None, W0=None) -> dict[str, float]:
    """The first-layer measures of W as one flat dict of floats.

    Args:
        W: (m, n) first-layer weights in the geometry's layout.
        names: registry names to compute (default: all of :data:`WEIGHT_MEASURES`).
        W0: the run's initialization; when given, ``movement`` = ||W - W0|| / ||W0|| is added.
    """
    names = list(WEIGHT_MEASURES) if names is None else list(names)
    unknown = [n for n in names if n not in WEIGHT_MEASURES]
    if unknown:
        raise ValueError(f"unknown measures {unknown}; known: {', '.join(WEIGHT_MEASURES)}")
    W = checked_matrix(W)  # convert once, not once per measure
    out: dict[str, float] = {}
    for name in names:
        value = WEIGHT_MEASURES[name](W, geometry)
        if isinstance(value, dict):
            out.update({k: float(v) for k, v in value.items()})
        else:
            out[name] = float(value)
    if W0 is not None:
        out["movement"] = movement(W, checked_matrix(W0, "initial weights"))
    return defined(out)


def checked_matrix(W, what: str = "weights") -> np.ndarray:
    """W as float64, refusing what no measure can read: NaN or inf entries, or no nonzero weight at all."""
    W = as_matrix(W)
    if W.size == 0:
        raise ValueError(f"{what} of shape {W.shape} are empty")
    if not np.isfinite(W).all():
        raise ValueError(f"{what} contain NaN or inf: a diverged run has no structure to measure")
    if not W.any():
        raise ValueError(f"{what} are all zero: no receptive field to measure")
    return W


def defined(values: dict[str, float]) -> dict[str, float]:
    """Leave out measures that are undefined for this layer rather than report NaN: hoyer for n = 1,
    spectra of fields with no energy beyond the mean (one position, constant fields), alpha with too few
    eigenvalues for a power-law fit. A report shows them as missing, never as a number."""
    return {k: v for k, v in values.items() if np.isfinite(v)}


def layer_measures(W) -> dict[str, float]:
    """``effective_rank``, ``stable_rank`` and ``alpha`` of any weight matrix, from one eigendecomposition
    (:func:`probe.metrics.spectral.spectral_measures`, memoized by content: a matrix met again is not decomposed
    again). They do not change when rows or columns are permuted."""
    return defined(spectral_measures(checked_matrix(W)))


def permute_positions(W, geometry: Geometry, perm) -> np.ndarray:
    """W with its input positions permuted (all channels of a position move together).

    Returns W' in the layout of ``geometry.without_perm()`` whose fields are fields(W)[:, :, perm]: the
    same concentration per unit, contiguity destroyed.
    """
    F = geometry.fields(as_matrix(W))
    m = len(F)
    F = F.reshape(m, geometry.channels, -1)[:, :, np.asarray(perm)]
    return flat_from_fields(F.reshape(m, geometry.channels, *geometry.spatial), geometry.without_perm())


def references(W, geometry: Geometry, W0=None, seed: int = 0, names=None) -> dict[str, dict[str, float]]:
    """The first-layer measures on the references every measure is read against (DESIGN §1).

    Returns a dict of :func:`first_layer_measures` results:
        ``gaussian``: seeded i.i.d. Gaussian weights of W's shape, scaled to W's root-mean-square
            (most measures are scale-free; this keeps the others comparable).
        ``permuted``: W with its input positions permuted by a seeded permutation
            (:func:`permute_positions`): the null for contiguity. ipr, hoyer and zero_frac are
            unchanged there by construction; spread, window_mass, shift_match and conv_distance are not.
        ``init``: W0, the run's initialization, when given.
    """
    W = checked_matrix(W)
    rng = np.random.default_rng(seed)
    rms = float(np.sqrt(np.mean(W**2))) or 1.0
    gaussian = rng.standard_normal(W.shape) * rms
    perm = rng.permutation(geometry.n_positions)
    out = {
        "gaussian": first_layer_measures(gaussian, geometry, names),
        "permuted": first_layer_measures(permute_positions(W, geometry, perm), geometry.without_perm(), names),
    }
    if W0 is not None:
        out["init"] = first_layer_measures(W0, geometry, names)
    return out


__all__ = [
    "WEIGHT_MEASURES",
    "MEASURE_KEYS",
    "LAYER_MEASURES",
    "first_layer_measures",
    "layer_measures",
    "references",
    "permute_positions",
    "input_pc_share",
    "lie_derivative",
    "shift_consistency",
    "movement",
    "stable_rank",
    "effective_rank",
    "alpha",
]
