"""The references every measure is read against (docs/design.md §4.3): the one place that draws them.

- ``gaussian``: i.i.d. Gaussian weights of the layer's shape, scaled to its root-mean-square (most measures are
  scale-free; this keeps the others comparable);
- ``permuted``: the layer's own weights with their input positions permuted (all channels of a position move
  together): the same concentration per unit, contiguity destroyed. ipr, hoyer and zero_frac are unchanged by
  construction, and so is every spectral measure (a column permutation keeps the singular values);
- ``init``: the run's own initialization, when it is at hand.

The Gaussian matrix and the permutation come from one generator seeded ``seed``, in that order
(:func:`null_draws`), so `probe analyze`, tracking and the demo report the same numbers for the same seed.
"""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.layer import LAYER_MEASURES, checked_matrix, first_layer_measures, layer_measures
from probe.metrics.equivariance import flat_from_fields
from probe.metrics.locality import as_matrix


def null_draws(shape: tuple, n_positions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, perm): a standard Gaussian matrix of ``shape``, then a permutation of ``n_positions`` input positions,
    both from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal(shape)
    return G, rng.permutation(n_positions)


def permute_positions(W, geometry: Geometry, perm) -> np.ndarray:
    """W with its input positions permuted (all channels of a position move together).

    Returns W' in the layout of ``geometry.without_perm()`` whose fields are fields(W)[:, :, perm]: the
    same concentration per unit, contiguity destroyed.
    """
    F = geometry.fields(as_matrix(W))
    m = len(F)
    F = F.reshape(m, geometry.channels, -1)[:, :, np.asarray(perm)]
    return flat_from_fields(F.reshape(m, geometry.channels, *geometry.spatial), geometry.without_perm())


def references(W, geometry: Geometry, W0=None, seed: int = 0, names=None,
               layer_names=()) -> dict[str, dict[str, float]]:
    """The first-layer measures ``names`` (default: all of :func:`first_layer_measures`) and the spectral measures
    ``layer_names`` (of :data:`LAYER_MEASURES`) of W's references (module docstring).

    Returns ``{"gaussian": {...}, "permuted": {...}}``, and ``"init"`` when W0 is given.
    """
    W = checked_matrix(W)
    G, perm = null_draws(W.shape, geometry.n_positions, seed)
    gaussian = G * (float(np.sqrt(np.mean(W**2))) or 1.0)
    out = {
        "gaussian": first_layer_measures(gaussian, geometry, names),
        "permuted": first_layer_measures(permute_positions(W, geometry, perm), geometry.without_perm(), names),
    }
    if W0 is not None:
        out["init"] = first_layer_measures(W0, geometry, names)
    layer_names = [n for n in layer_names if n in LAYER_MEASURES]
    if layer_names:
        own = layer_measures(W)  # the permuted reference's spectrum is W's own: never recomputed
        for key, M in (("gaussian", gaussian), ("permuted", None), ("init", W0)):
            if key in out:
                lm = own if M is None else layer_measures(M)
                out[key].update({k: lm[k] for k in layer_names if k in lm})
    return out
