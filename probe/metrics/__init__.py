"""Measures of how close weights and models come to convolutional structure (docs/design.md §4).

Every measure is a pure function of weights (numpy arrays or torch tensors, float64 inside) plus the
input :class:`~probe.geometry.Geometry`; functional measures take a model and a batch instead.

- :data:`~probe.metrics.registry.MEASURES`: one record per measure (function, keys, label, cost, trackable).
- :data:`WEIGHT_MEASURES`: name -> f(W, geometry) for first-layer weights; each returns a float, or a
  dict of floats whose keys are listed in :data:`MEASURE_KEYS`.
- :func:`first_layer_measures`: the registry on one matrix, as one flat dict of floats.
- :func:`layer_measures`: the spectral measures that apply to any layer.
- :func:`references`: the same first-layer measures on the nulls every number is read against.
"""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.functional import lie_derivative, shift_consistency
from probe.metrics.locality import as_matrix
from probe.metrics.registry import MEASURES, of_scope
from probe.metrics.sparsity import movement
from probe.metrics.spectral import (
    alpha,
    effective_rank,
    eigenvalues,
    input_pc_share,
    stable_rank,
)

# tables derived from the registry (probe/metrics/registry.py), one record per measure
WEIGHT_MEASURES = {n: m.fn for n, m in of_scope("first").items()}  # name -> f(W, geometry)
# the output keys of measures that return a dict (the others return their own name)
MEASURE_KEYS = {n: m.keys for n, m in MEASURES.items() if m.keys}
LAYER_MEASURES = tuple(of_scope("layer"))  # the spectral measures, which apply to any matrix


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
    """``effective_rank``, ``stable_rank`` and ``alpha`` of any weight matrix, from one eigendecomposition."""
    W = checked_matrix(W)
    evals = eigenvalues(W)
    return defined({
        "effective_rank": effective_rank(W, evals),
        "stable_rank": stable_rank(W, evals),
        "alpha": alpha(W, evals),
    })


from probe.metrics.nulls import (  # noqa: E402  (they use the registry above)
    lcn_fields, null_draws, permute_positions, phase_randomize, references)

__all__ = [
    "WEIGHT_MEASURES",
    "MEASURE_KEYS",
    "LAYER_MEASURES",
    "first_layer_measures",
    "layer_measures",
    "references",
    "null_draws",
    "permute_positions",
    "phase_randomize",
    "lcn_fields",
    "input_pc_share",
    "lie_derivative",
    "shift_consistency",
    "movement",
    "stable_rank",
    "effective_rank",
    "alpha",
]
