"""Phase-randomized surrogates of first-layer fields: the fields of the ``phase`` null (:mod:`probe.metrics.nulls`),
apart from the nulls so that a measure whose own null needs them (:mod:`probe.metrics.tiling`) can import them
without the registry's import cycle (nulls -> layer -> registry -> the measures)."""

from __future__ import annotations

import numpy as np

from probe.geometry import Geometry
from probe.metrics.equivariance import flat_from_fields
from probe.metrics.locality import as_matrix
from probe.seeding import PHASE_STREAM


def phase_randomize(W, geometry: Geometry, seed: int = 0, draw: int = 0) -> np.ndarray:
    """W with every unit's Fourier phases randomized: the ``phase`` reference.

    Per unit i, with F_i(c, f) the discrete Fourier transform of channel c of its field over the grid (1-D or
    2-D, ``numpy.fft.rfftn``): F'_i(c, f) = F_i(c, f) N_i(f) / |N_i(f)|, N_i the transform of a seeded white
    Gaussian field, then back (``irfftn``). N_i is the transform of a real field, so the phases it adds are
    odd in f (and 0 or pi at the zero and Nyquist frequencies), and F' is real. |F'_i(c, f)| = |F_i(c, f)|:
    every unit keeps the power spectrum of each of its channels (hence its norm and smoothness), and the
    channels of one unit get the same added phase, so their cross-spectra are kept too (Prichard & Theiler's
    multivariate surrogate); where on the grid its energy sits is drawn anew. A local field becomes a
    stationary one with its spectrum; a smooth non-local field stays what it was, in distribution.

    On non-periodic grids the transform treats the field as one period of a periodic one: a field whose two
    edges differ has the power of that jump at high frequencies, which the surrogate spreads over the grid
    instead of keeping it at the edge. The bias this leaves is small and was measured on smooth random fields
    cut from a periodic field twice as long (40 of 80 positions, correlation length 6 pixels, 200 units): the
    null's window_mass_3 is 0.236 against the fields' 0.222 (the null errs toward reading them as not local) and
    its shift_match 0.89 against 0.91 (toward reading them as equivariant); at correlation length 3 both agree
    within 0.02 (tests/test_nulls.py). MNIST-1D's grid (40 positions) is not periodic.

    ``draw`` > 0 draws other phases from the same seed (generator seeded (seed, 1, draw); draw 0 is (seed, 1)).

    Returns W' in the layout of ``geometry.without_perm()`` (fields in the original position order).
    """
    F = geometry.fields(as_matrix(W))
    axes = tuple(range(2, F.ndim))
    rng = np.random.default_rng([seed, PHASE_STREAM] if draw == 0 else [seed, PHASE_STREAM, draw])
    N = np.fft.rfftn(rng.standard_normal((len(F), 1, *geometry.spatial)), axes=axes)
    mag = np.abs(N)
    U = np.divide(N, mag, out=np.ones_like(N), where=mag > 0)
    Fp = np.fft.irfftn(np.fft.rfftn(F, axes=axes) * U, s=geometry.spatial, axes=axes)
    return flat_from_fields(Fp, geometry.without_perm())
