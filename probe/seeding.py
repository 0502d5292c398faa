"""Seeded random streams: every random draw that must be reproducible from (seed, step) comes from here.

A stream is a ``torch.Generator`` seeded with ``seed * STRIDE + offset``. The offsets in use, far enough apart that
no two streams of one seed meet in any run shorter than 2^40 steps:

- ``epoch``: the order of the training examples in that epoch (:class:`probe.run.loop.Batches`; the shift
  augmentation's sampler reproduces it);
- ``AUGMENT + step``: the shifts drawn by the augmentation at that step;
- ``SAMPLER + step``: the fresh examples NLGP's online sampler draws at that step; ``step``: those of an online
  sequence sampler (sequence tasks have no epochs, so this never meets an epoch's stream);
- ``TRAIN_SET``, ``TEST_SET``: the fixed splits of the generated sequence tasks (7: the relevant bits of parity).
- ``CLONE_TRAIN``: the class-conditional Gaussian clone's training set (:mod:`probe.tasks.clone`); ``CLONE_TEST``
  of seed 0: its test set, the same for every run (as a real test set is), also where ``clone_acc`` scores a
  run trained on the real data.
- ``PRUNE + round``: the random masks of the random-pruning control (:func:`probe.run.procedures.imp` with
  ``criterion = "random"``), one stream per pruning round.

The references and samples of the measures draw from NumPy instead: ``numpy.random.default_rng([seed, S])`` with
``S`` one of the numbers below (the Gaussian matrix and the permutation of :func:`probe.metrics.nulls.null_draws`
come from ``default_rng(seed)`` itself):

- ``PHASE_STREAM``: the phases of the ``phase`` reference; ``LCN_STREAM``: the local fields of the ``lcn`` one;
- ``GAUSSIAN_SPECTRUM_STREAM``: the Gaussian reference's spectrum (:func:`probe.metrics.spectral.gaussian_eigenvalues`);
- ``PULL_STREAM``: the fixed batch and unit orders of the pull (:mod:`probe.metrics.pull`). It has the number of the
  Gaussian spectra: the two draw unrelated things (chi-squares, a sample of examples) for different measures, and
  the stored runs' values depend on both, so neither was renumbered;
- ``TILING_STREAM``: the random placements of ``tiling@random`` (:func:`probe.metrics.tiling.tiling`);
- ``STEP_STREAM``, ``REALIZED_STREAM``: the random directions and unit derangements of the step's nulls
  (:func:`probe.metrics.step.step_pull`, :func:`probe.metrics.step.realized_change`);
- ``INTERVENTION_STREAM``: the ``@permuted`` draws of ``time_sharing_iv`` (:mod:`probe.metrics.intervention`);
- ``SUBSPACE_PERTURB_STREAM``: the off-subspace perturbation of the stability procedure, drawn from
  ``default_rng([seed, layer, SUBSPACE_PERTURB_STREAM])``;
- ``PATCH_SPLIT_STREAM``: the train/test split of the patches task's image blocks, from
  ``default_rng([data_seed, PATCH_SPLIT_STREAM])`` (a data seed: it never meets a measure's stream).

Fixed seeds of a ``torch.Generator`` outside the streams above:

- ``DETECT_SEED``: the clone of the training set that ``clone_detect_acc``'s discriminator sees
  (:mod:`probe.metrics.second_order`), the same for every run;
- ``NLGP_SEED_STRIDE``: NLGP's fixed training and test sets are drawn from seeds ``NLGP_SEED_STRIDE * seed + 1``
  and ``+ 2`` (:mod:`probe.tasks.nlgp`).
"""

from __future__ import annotations

import torch

STRIDE = 1_000_003  # a prime: seeds s and s + 1 never share a stream
SAMPLER = 17
AUGMENT = TRAIN_SET = 2**40
TEST_SET = 2**41
CLONE_TRAIN = 2**42
CLONE_TEST = 2**42 + 1
PRUNE = 2**43
PHASE_STREAM, LCN_STREAM, GAUSSIAN_SPECTRUM_STREAM = 1, 2, 3  # NumPy streams (module docstring)
PULL_STREAM = 3  # the Gaussian spectra's number too: see the module docstring
TILING_STREAM = 4
STEP_STREAM, REALIZED_STREAM = 7, 8
INTERVENTION_STREAM = 11
SUBSPACE_PERTURB_STREAM = 14
PATCH_SPLIT_STREAM = 2  # of a data seed, not a run's seed
DETECT_SEED = 20_261
NLGP_SEED_STRIDE = 10_007


def stream(seed: int, offset: int) -> torch.Generator:
    """The CPU generator of stream ``offset`` of ``seed`` (module docstring)."""
    return torch.Generator().manual_seed(int(seed) * STRIDE + int(offset))


class EpochOrder:
    """The trainer's epoch order of a fixed training set of n examples (:class:`probe.run.loop.Batches`): the batch
    of step t is slice i of epoch e's permutation, (e, i) = divmod(t, max(1, n // B)), B = min(batch, n), the
    permutation drawn from ``stream(seed, e)``. Samplers that transform the trainer's own batches (augmentations,
    orbits) call it so that they see the same examples as a run without them. Keeps the current epoch's
    permutation (on the CPU; the indices are returned there)."""

    def __init__(self):
        self._epoch, self._perm = -1, None

    def __call__(self, seed: int, step: int, n: int, batch: int) -> torch.Tensor:
        B = min(batch, n)
        epoch, i = divmod(step, max(1, n // B))
        if epoch != self._epoch:
            self._perm, self._epoch = torch.randperm(n, generator=stream(seed, epoch)), epoch
        return self._perm[i * B : (i + 1) * B]
