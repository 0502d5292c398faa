"""Measures of how close weights and models come to convolutional structure (docs/design.md §4).

Every measure is a pure function of weights (numpy arrays or torch tensors, float64 inside) plus the
input :class:`~probe.geometry.Geometry`; functional measures take a model and a batch instead.

- :data:`~probe.metrics.registry.MEASURES`: one record per measure (function, keys, label, cost, trackable).
- :data:`FIRST_LAYER_MEASURES`: name -> f(W, geometry) for first-layer weights; each returns a float, or a
  dict of floats whose keys are listed in :data:`MEASURE_KEYS`.
- :func:`first_layer_measures` (:mod:`probe.metrics.layer`): the registry on one matrix, as one flat dict of floats.
- :func:`layer_measures`: the spectral measures that apply to any layer.
- :func:`references`: the same first-layer measures on the nulls every number is read against.
"""

from __future__ import annotations

from probe.metrics.functional import lie_derivative, shift_consistency
from probe.metrics.layer import (
                                 FIRST_LAYER_MEASURES,
                                 MEASURE_KEYS,
                                 SPECTRAL_MEASURES,
                                 checked_matrix,
                                 defined,
                                 first_layer_measures,
                                 layer_measures,
)
from probe.metrics.nulls import lcn_fields, null_draws, permute_positions, phase_randomize, references
from probe.metrics.sparsity import movement
from probe.metrics.spectral import alpha, effective_rank, input_pc_share, stable_rank

__all__ = [
    "FIRST_LAYER_MEASURES",
    "MEASURE_KEYS",
    "SPECTRAL_MEASURES",
    "first_layer_measures",
    "layer_measures",
    "checked_matrix",
    "defined",
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
