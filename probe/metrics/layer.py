"""The measures applied to one layer: the registry's first-layer measures as one flat dict, the spectral measures of
any matrix, and the checks every weight matrix passes first. :mod:`probe.metrics` re-exports all of it."""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.locality import _live_distributions, as_matrix, energy_maps, unit_fields
from probe.metrics.registry import MEASURES, of_scope
from probe.metrics.sparsity import movement
from probe.metrics.spectral import non_dc_spectra, spectral_measures

# tables derived from the registry (probe/metrics/registry.py), one record per measure
FIRST_LAYER_MEASURES = {n: m.fn for n, m in of_scope("first").items()}  # name -> f(W, geometry), the first layer's
# the output keys of measures that return a dict (the others return their own name)
MEASURE_KEYS = {n: m.keys for n, m in MEASURES.items() if m.keys}
SPECTRAL_MEASURES = tuple(of_scope("layer"))  # the spectral measures' names: they apply to any matrix
UNIT_SPECTRA_MEASURES = ("spectral_entropy", "peak_frequency")  # both read non_dc_spectra: computed once for both
# the measures that read the fields' energy maps e_i(s) (argument ``energy``), and those that read only their
# normalized p_i = e_i / sum_s e_i (argument ``p``): computed once for all of them
ENERGY_MEASURES = ("displacement", "conv_distance_3", "conv_distance_5")
DISTRIBUTION_MEASURES = ("ipr", "ipr_frac_above", "spread", "window_mass_3", "window_mass_5")


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
    shared = _shared(W, geometry, names)
    for name in names:
        value = FIRST_LAYER_MEASURES[name](W, geometry, **shared.get(name, {}))
        if isinstance(value, dict):
            out.update({k: float(v) for k, v in value.items()})
        else:
            out[name] = float(value)
    if W0 is not None:
        out["movement"] = movement(W, checked_matrix(W0, "initial weights"))
    return defined(out)


def _shared(W: np.ndarray, geometry: Geometry, names: list[str]) -> dict[str, dict]:
    """measure name -> the intermediates to pass it: the unit spectra, the energy maps, the distributions p_i, each
    computed here once where two or more of ``names`` read it. Each is what the measure would compute from W
    itself, by the same operations, so the values are the same to the last bit (tests/test_locality.py)."""
    out: dict[str, dict] = {}
    if sum(n in UNIT_SPECTRA_MEASURES for n in names) > 1 and geometry.n_positions >= 2:
        spectra = non_dc_spectra(W, geometry)
        out.update({n: {"spectra": spectra} for n in names if n in UNIT_SPECTRA_MEASURES})
    readers = [n for n in names if n in ENERGY_MEASURES or n in DISTRIBUTION_MEASURES]
    if len(readers) > 1:
        E = energy_maps(unit_fields(W, geometry))
        p = _live_distributions(E) if sum(n in DISTRIBUTION_MEASURES for n in names) > 0 else None
        out.update({n: {"energy": E} if n in ENERGY_MEASURES else {"p": p} for n in readers})
    return out


def checked_matrix(W, what: str = "weights") -> np.ndarray:
    """W as float64, refusing what no measure can read: NaN or inf entries, or no nonzero weight at all."""
    W = as_matrix(W)
    if W.size == 0:
        raise ValueError(f"{what} of shape {W.shape} are empty")
    # two reductions read W once each and allocate nothing: the minimum and maximum are NaN where any entry is,
    # infinite where any entry is, and both 0 only where every entry is
    lo, hi = W.min(), W.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{what} contain NaN or inf: a diverged run has no structure to measure")
    if lo == 0 and hi == 0:
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
