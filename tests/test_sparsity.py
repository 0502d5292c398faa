"""Sparsity measures and weight movement on constructions with known answers (docs/design.md §4.4)."""

import numpy as np
import pytest
import torch

from probe.geometry import Geometry
from probe.metrics.equivariance import circular_conv_matrix
from probe.metrics.sparsity import displacement, displacement_histogram, hoyer, movement, zero_frac

G2 = Geometry(channels=2, spatial=(12, 12), periodic=True)


def test_hoyer_of_one_hot_rows_is_one():
    W = np.zeros((3, 50))
    W[[0, 1, 2], [4, 20, 49]] = [1.0, -2.0, 0.5]
    assert hoyer(W) == pytest.approx(1.0)


def test_hoyer_of_equal_magnitude_rows_is_zero():
    W = np.sign(np.random.default_rng(0).standard_normal((4, 64)))
    assert hoyer(W) == pytest.approx(0.0, abs=1e-12)


def test_hoyer_of_gaussian_rows_matches_half_normal_ratio():
    n = 4000
    W = np.random.default_rng(1).standard_normal((50, n))
    expected = (np.sqrt(n) - np.sqrt(2 * n / np.pi)) / (np.sqrt(n) - 1)
    assert hoyer(W) == pytest.approx(expected, rel=0.02)


def test_hoyer_leaves_out_pruned_units():
    W = np.zeros((4, 50))
    W[0, 3] = 1.0
    assert hoyer(W) == pytest.approx(1.0)


def test_zero_frac_counts_exact_zeros_only():
    W = np.ones((4, 25))
    W[0, :10] = 0.0
    W[1, 0] = 1e-300  # tiny is not zero
    assert zero_frac(W) == pytest.approx(10 / 100)
    assert zero_frac(torch.zeros(3, 3)) == 1.0


def test_movement_is_zero_at_init_and_relative_to_init_norm():
    W0 = np.random.default_rng(2).standard_normal((8, 10))
    assert movement(W0, W0) == 0.0
    assert movement(3 * W0, W0) == pytest.approx(2.0)
    assert movement(torch.tensor(W0 + W0), torch.tensor(W0)) == pytest.approx(1.0)


def test_movement_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"movement: W has shape \(2, 3\) but W0 has shape \(3, 2\)"):
        movement(np.zeros((2, 3)), np.zeros((3, 2)))


def test_displacement_of_sparse_conv_is_bounded_by_kernel_radius():
    # every unit's support is a 3 x 3 square holding its centre: no connection is 3 px away (at most 2 sqrt 2)
    kernel = np.random.default_rng(3).standard_normal((2, 2, 3, 3))
    W = circular_conv_matrix(kernel, (12, 12))
    d = displacement(W, G2)
    assert d["displacement_mean"] < 2.0
    hist = displacement_histogram(W, G2)
    assert sum(hist.values()) == pytest.approx(1.0)
    assert all(share == 0 for b, share in hist.items() if int(b) >= 3)


def test_displacement_of_single_pixel_is_zero_and_dense_layer_is_far():
    F = np.zeros((2, 2, 12, 12))
    F[0, 1, 3, 4] = 1.0
    F[1, 0, 11, 0] = -1.0
    d = displacement(G2.flatten_fields(F), G2)
    assert d == {"displacement_mean": pytest.approx(0.0, abs=1e-9), "displacement_median": pytest.approx(0.0, abs=1e-9)}
    dense = displacement(np.random.default_rng(4).standard_normal((20, G2.n_inputs)), G2)
    assert dense["displacement_mean"] > 3.0


def test_displacement_histogram_bins_are_integer_pixel_distances():
    g = Geometry(channels=1, spatial=(20,), periodic=False)
    W = np.zeros((1, 20))
    W[0, [5, 7, 9]] = 1.0  # centre 7: distances 2, 0, 2
    hist = displacement_histogram(W, g)
    assert hist["0"] == pytest.approx(1 / 3)
    assert hist["2"] == pytest.approx(2 / 3)
    assert len(hist) == 20  # distances 0 .. 19 on a line of 20
    assert displacement(W, g)["displacement_median"] == pytest.approx(2.0)
