"""The measures applied to one layer: the registry's first-layer measures as one flat dict, the spectral measures of
any matrix, and the checks every weight matrix passes first. :mod:`probe.metrics` re-exports all of it."""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.locality import as_matrix
from probe.metrics.registry import MEASURES, of_scope
from probe.metrics.sparsity import movement
from probe.metrics.spectral import non_dc_spectra, spectral_measures

# tables derived from the registry (probe/metrics/registry.py), one record per measure
FIRST_LAYER_MEASURES = {n: m.fn for n, m in of_scope("first").items()}  # name -> f(W, geometry), the first layer's
# the output keys of measures that return a dict (the others return their own name)
MEASURE_KEYS = {n: m.keys for n, m in MEASURES.items() if m.keys}
SPECTRAL_MEASURES = tuple(of_scope("layer"))  # the spectral measures' names: they apply to any matrix
UNIT_SPECTRA_MEASURES = ("spectral_entropy", "peak_frequency")  # both read non_dc_spectra: computed once for both


def first_layer_measures(W, geometry: Geometry, names=None, W0=None) -> dict[str, float]:
    """The first-layer measures of W as one flat dict of floats.

    Args:
        W: (m, n) first-layer weights in the geometry's layout.
        names: registry names to compute (default: all of :data:`FIRST_LAYER_MEASURES`).
        W0: the run's initialization; when given, ``movement`` = ||W - W0|| / ||W0|| is added.
    """
    names = list(FIRST_LAYER_MEASURES) if names is None else list(names)
    unknown = [n for n in names if n not in FIRST_LAYER_MEASURES]
    if unknown:
        raise ValueError(f"unknown measures {unknown}; known: {', '.join(FIRST_LAYER_MEASURES)}")
    W = checked_matrix(W)  # convert once, not once per measure
    out: dict[str, float] = {}
    shared = {}
    if sum(n in UNIT_SPECTRA_MEASURES for n in names) > 1 and geometry.n_positions >= 2:
        shared = {"spectra": non_dc_spectra(W, geometry)}
    for name in names:
        value = FIRST_LAYER_MEASURES[name](W, geometry, **(shared if name in UNIT_SPECTRA_MEASURES else {}))
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


def layer_measures(W, evals: np.ndarray | None = None) -> dict[str, float]:
    """``effective_rank``, ``stable_rank`` and ``alpha`` of any weight matrix, from one eigendecomposition
    (:func:`probe.metrics.spectral.spectral_measures`; ``evals``: W's eigenvalues when already computed). They do
    not change when rows or columns are permuted."""
    return defined(spectral_measures(checked_matrix(W), evals))
