"""The references every measure is read against (docs/design.md §4.3): the one place that draws them.

- ``gaussian``: i.i.d. Gaussian weights of the layer's shape, scaled to its root-mean-square (most measures are
  scale-free; this keeps the others comparable); its spectral measures come from a spectrum drawn from the exact
  distribution of the spectrum of such a matrix (:func:`probe.metrics.spectral.gaussian_eigenvalues`: no
  decomposition);
- ``permuted``: the layer's own weights with their input positions permuted (all channels of a position move
  together): the same concentration per unit, contiguity destroyed. ipr, hoyer and zero_frac are unchanged by
  construction, and so is every spectral measure (a column permutation keeps the singular values);
- ``phase``: each unit's field with its Fourier phases randomized (:func:`phase_randomize`): the same power
  spectrum per unit and channel, so the same smoothness, and no place. The null that tells locality from
  smoothness: a smooth field has most of its energy in any window of its correlation length and shifts onto
  itself, so ``spread``, ``window_mass_k`` and ``shift_match`` read as structure only where they beat it.
  Computed for :data:`PHASE_MEASURES` only: the per-unit spectra (``spectral_entropy``, ``peak_frequency``)
  are the field's own by construction, and the layer spectra are not recomputed (no eigendecomposition);
- ``lcn``: random local fields in the layer's own windows, not shared (:func:`lcn_fields`): what a locally
  connected layer with these windows scores, the null for weight sharing (``conv_distance_k``, with the
  windows of size k; ``shift_match``, with the windows of size 5: many short local fields find well-matching
  shifted partners by chance, so on a local layer shift_match reads as translation structure only where it
  beats this null; :data:`LCN_MEASURES`);
- ``init``: the run's own initialization, when it is at hand;
- ``init_seeds``: the model's own initializer on other seeds (:func:`init_seeds`, the mean over
  :data:`INIT_DRAWS` draws), for the measures an initializer sets (:data:`INIT_SEED_MEASURES`). PyTorch's
  default init is uniform, not Gaussian: its ipr is (C + 4/5) / (C |S|) to first order, 0.045 at C = 1,
  |S| = 40, and its hoyer 0.16 at n = 40, against the Gaussian null's exact (C + 2) / (C |S| + 2) = 0.071 and
  0.24 (:func:`probe.metrics.locality.ipr_iid`, :func:`probe.metrics.locality.ipr_gaussian`,
  :func:`probe.metrics.sparsity.hoyer`), so "ipr at the Gaussian null" can still be above the initializer's
  level. The caller builds the layer (``build(seed) -> W``: probe's model builder, or
  :func:`default_linear_init` for a plain state_dict); the seeds are chosen here.

The Gaussian matrix and the permutation come from one generator seeded ``seed``, in that order
(:func:`null_draws`); the phases, the local fields and the Gaussian spectra from the streams of
:mod:`probe.seeding` (``[seed, PHASE_STREAM]``, ``[seed, LCN_STREAM]``, ``[seed, GAUSSIAN_SPECTRUM_STREAM]``).

What to compute is described here once, as jobs (:func:`null_jobs`: which reference, which measures, on which
matrix drawn with which seed), and computed the same way everywhere: :func:`references` runs them in turn (tracking,
the demo), `probe analyze` runs them beside its other work on the machine's cores (:mod:`probe.analysis.jobs`).
So they report the same numbers for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from probe.geometry import Geometry
from probe.metrics.equivariance import _best_windows, _crop_index, flat_from_fields
from probe.metrics.layer import (
    FIRST_LAYER_MEASURES,
    SPECTRAL_MEASURES,
    checked_matrix,
    defined,
    first_layer_measures,
    layer_measures,
)
from probe.metrics.locality import as_matrix, energy_maps, window_sizes
from probe.metrics.registry import of_scope
from probe.metrics.spectral import gaussian_spectral_measures
from probe.metrics.surrogates import phase_randomize  # noqa: F401  (the phase null's fields; here with the others)
from probe.seeding import LCN_STREAM

# the first-layer measures each extra reference is computed for: those whose registry record names it (``nulls``)
_FIRST = of_scope("first")
PHASE_MEASURES = tuple(n for n, m in _FIRST.items() if "phase" in m.nulls)
# measure -> its lcn fields' window, by window (the order the reports list the lcn reference in), then by name
LCN_MEASURES = dict(sorted(((n, m.lcn_window) for n, m in _FIRST.items() if "lcn" in m.nulls), key=lambda x: x[::-1]))
INIT_SEED_MEASURES = tuple(n for n, m in _FIRST.items() if "init_seeds" in m.nulls)
INIT_DRAWS = 2  # initializations averaged in init_seeds
PHASE_DRAWS = 20  # phase randomizations averaged in the final phase reference of a layer of < PHASE_DRAWS_BELOW units
PHASE_DRAWS_BELOW = 1024  # from this many units on, one draw's sd is negligible (<= 0.002) and one draw is kept
INIT_SEED_OFFSET = 1000  # the first seed of init_seeds is the run's seed + this (no preset's grid comes near it)
NULL_KINDS = ("gaussian", "permuted", "phase", "lcn", "init_seeds")  # the references null_jobs can describe


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
    F = np.take(F.reshape(m, geometry.channels, -1), np.asarray(perm), axis=2)  # (take: 4x faster than [:, :, perm])
    return flat_from_fields(F.reshape(m, geometry.channels, *geometry.spatial), geometry.without_perm())


def lcn_fields(W, geometry: Geometry, k: int, seed: int = 0) -> np.ndarray:
    """Random local fields in W's own windows, not shared: the ``lcn`` reference for window size k.

    Unit i gets i.i.d. Gaussian weights on all C channels of its k (k x k) window of largest energy (the window
    :func:`probe.metrics.equivariance.conv_distance` crops it to), zero elsewhere, scaled to the norm of w_i
    (units without energy stay zero). It is what a locally connected layer with the same windows scores:
    local, and no filter shared, so conv_distance_k of it is the chance level of weight sharing for this
    layout (>= 0.9 by the calibration of conv_distance). Returns W' in the layout of ``geometry.without_perm()``.
    """
    F = geometry.fields(as_matrix(W))
    windows = _best_windows(energy_maps(F), geometry, k)
    rng = np.random.default_rng([seed, LCN_STREAM])
    crops = rng.standard_normal((len(F), geometry.channels, *window_sizes(geometry, k)))
    norm_w = np.linalg.norm(F.reshape(len(F), -1), axis=1)
    norm_c = np.linalg.norm(crops.reshape(len(F), -1), axis=1)
    crops *= (norm_w / norm_c).reshape(-1, *[1] * (crops.ndim - 1))
    out = np.zeros_like(F)
    out[_crop_index(F.shape, windows)] = crops
    return flat_from_fields(out, geometry.without_perm())


def init_seeds(seed: int, n: int = INIT_DRAWS) -> list[int]:
    """The seeds of the ``init_seeds`` reference: seed + INIT_SEED_OFFSET + j, j = 0 .. n - 1."""
    return [seed + INIT_SEED_OFFSET + j for j in range(n)]


def default_linear_init(shape: tuple, seed: int) -> np.ndarray:
    """PyTorch's default ``nn.Linear`` weight init for an (m, n) layer: i.i.d. U(-1/sqrt(n), 1/sqrt(n))
    (kaiming_uniform with a = sqrt(5)), kurtosis 9/5; the initializer assumed for a plain state_dict."""
    bound = 1.0 / np.sqrt(shape[1])
    return np.random.default_rng(seed).uniform(-bound, bound, size=shape)


def _mean_measures(draws: list[dict]) -> dict[str, float]:
    keys = [k for k in draws[0] if all(k in d for d in draws)]
    return {k: float(np.mean([d[k] for d in draws])) for k in keys}


def init_seed_measures(build: Callable[[int], np.ndarray], geometry: Geometry, seed: int = 0,
                       names=INIT_SEED_MEASURES) -> dict[str, float]:
    """The ``init_seeds`` reference: :data:`INIT_SEED_MEASURES` among ``names``, the mean over the layers
    ``build(s)`` for s in :func:`init_seeds` (``seed``): the model's own initializer on other seeds."""
    names = [n for n in names if n in INIT_SEED_MEASURES]
    if not names:
        return {}
    return _mean_measures([first_layer_measures(checked_matrix(build(s), "initial weights"), geometry, names)
                           for s in init_seeds(seed)])


def phase_draws(n_units: int) -> int:
    """How many phase randomizations the final ``phase`` reference of a layer of ``n_units`` units averages:
    :data:`PHASE_DRAWS` below :data:`PHASE_DRAWS_BELOW` units, else 1 (a draw's sd falls as 1/sqrt(units): 0.0005-
    0.002 for window_mass_k, shift_match and ipr at 1024 x 40, against 0.001-0.007 at 100 x 40)."""
    return PHASE_DRAWS if n_units < PHASE_DRAWS_BELOW else 1


def phase_measures(W, geometry: Geometry, seed: int = 0, names=PHASE_MEASURES, draws: int = 1) -> dict[str, float]:
    """The ``phase`` reference: :data:`PHASE_MEASURES` among ``names`` of :func:`phase_randomize` (W), the mean
    over ``draws`` randomizations (draw 0 .. draws - 1). One draw's sd is about 0.004-0.007 for window_mass_k and
    shift_match of a 100 x 40 layer, as large as some effects read against it: :func:`references` averages
    :func:`phase_draws` draws (sd / sqrt(20)); the per-step gradient null of tracking keeps one draw."""
    names = [n for n in names if n in PHASE_MEASURES]
    if not names:
        return {}
    return _mean_measures([first_layer_measures(phase_randomize(W, geometry, seed, j), geometry.without_perm(), names)
                           for j in range(max(int(draws), 1))])


def lcn_measures(W, geometry: Geometry, seed: int = 0, names=tuple(LCN_MEASURES)) -> dict[str, float]:
    """The ``lcn`` reference: each of :data:`LCN_MEASURES` among ``names`` on :func:`lcn_fields` (W, k) with its
    window size k (one draw of the fields per k)."""
    out: dict[str, float] = {}
    names = [n for n in names if n in LCN_MEASURES]
    for k in dict.fromkeys(LCN_MEASURES[n] for n in names):
        fields = lcn_fields(W, geometry, k, seed)
        out.update(first_layer_measures(fields, geometry.without_perm(), [n for n in names if LCN_MEASURES[n] == k]))
    return out


@dataclass(frozen=True)
class NullJob:
    """One reference of one matrix: ``run()`` returns the values of reference ``kind`` (a dict of measures). Jobs
    are independent of each other and of the order they run in (each draws from its own seeded generators)."""

    kind: str
    run: Callable[[], dict[str, float]]
    matrix: np.ndarray | None = None  # the drawn matrix measured (``gaussian``), for a caller that measures more


def null_jobs(W, geometry: Geometry, seed: int = 0, names=None, kinds=NULL_KINDS, scale: float | None = None,
              init_build: Callable[[int], np.ndarray] | None = None, draws: tuple | None = None) -> list[NullJob]:
    """The jobs that compute W's references ``kinds`` for the first-layer measures ``names`` (default: all of
    :func:`first_layer_measures`), in the order of :data:`NULL_KINDS`; a reference none of whose measures is among
    ``names`` gets no job, ``init_seeds`` only with ``init_build``.

    ``gaussian``: the measures of G * ``scale`` (default: the root-mean-square of W; the measures are scale-free,
    so a caller sharing one Gaussian reference between layers of one shape passes 1); ``permuted``, ``phase``,
    ``lcn``, ``init_seeds``: as the module docstring says. (G, perm) is drawn here (:func:`null_draws`) when
    ``gaussian`` or ``permuted`` is asked for, unless ``draws`` holds it (a caller measuring several checkpoints of
    one shape keeps them; G may be None when ``gaussian`` is not asked for); the jobs only read it."""
    W = checked_matrix(W)
    names = list(FIRST_LAYER_MEASURES) if names is None else list(names)
    jobs = []
    if "gaussian" in kinds or "permuted" in kinds:
        G, perm = null_draws(W.shape, geometry.n_positions, seed) if draws is None else draws
        if "gaussian" in kinds:
            s = (float(np.sqrt(np.mean(W**2))) or 1.0) if scale is None else float(scale)
            Gs = G * s if s != 1.0 else G
            jobs.append(NullJob("gaussian", lambda: first_layer_measures(Gs, geometry, names), Gs))
        if "permuted" in kinds:
            jobs.append(NullJob("permuted", lambda: first_layer_measures(permute_positions(W, geometry, perm),
                                                                         geometry.without_perm(), names)))
    phase = partial(phase_measures, draws=phase_draws(len(W)))  # the mean of several draws for a small layer
    for kind, fn, measures in (("phase", phase, PHASE_MEASURES), ("lcn", lcn_measures, LCN_MEASURES)):
        if kind in kinds and any(n in measures for n in names):
            jobs.append(NullJob(kind, lambda fn=fn: fn(W, geometry, seed, names)))
    if "init_seeds" in kinds and init_build is not None and any(n in INIT_SEED_MEASURES for n in names):
        jobs.append(NullJob("init_seeds", lambda: init_seed_measures(init_build, geometry, seed, names)))
    return jobs


def references(W, geometry: Geometry, W0=None, seed: int = 0, names=None, layer_names=(),
               init_build: Callable[[int], np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """The first-layer measures ``names`` (default: all of :func:`first_layer_measures`) and the spectral measures
    ``layer_names`` (of :data:`SPECTRAL_MEASURES`) of W's references (module docstring).

    Returns ``{"gaussian": {...}, "permuted": {...}}``, ``"phase"`` and ``"lcn"`` where a measure of theirs is
    among ``names``, ``"init"`` when W0 is given and ``"init_seeds"`` when ``init_build`` (seed -> the model's
    dense first layer at that seed's initialization) is.
    """
    W = checked_matrix(W)
    names = list(FIRST_LAYER_MEASURES) if names is None else list(names)
    out = {"gaussian": {}, "permuted": {}}
    for job in null_jobs(W, geometry, seed, names, ("gaussian", "permuted", "phase", "lcn")):
        values = job.run()
        if values or job.kind in out:
            out[job.kind] = values
    if W0 is not None:
        out["init"] = first_layer_measures(W0, geometry, names)
    for job in null_jobs(W, geometry, seed, names, ("init_seeds",), init_build=init_build):
        values = job.run()
        if values:
            out["init_seeds"] = values
    layer_names = [n for n in layer_names if n in SPECTRAL_MEASURES]
    if layer_names:
        own = layer_measures(W)  # the permuted reference's spectrum is W's own: never recomputed
        spectra = {"gaussian": defined(gaussian_spectral_measures(W.shape, seed)), "permuted": own}  # not decomposed
        for key, M in (("gaussian", None), ("permuted", None), ("init", W0)):
            if key in out:
                lm = spectra[key] if M is None else layer_measures(M)
                out[key].update({k: lm[k] for k in layer_names if k in lm})
    return out

