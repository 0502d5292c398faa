"""Translation-structure measures: shift_match and conv_distance on exact convolutions and their nulls."""

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from probe.geometry import Geometry
from probe.metrics import permute_positions
from probe.metrics.equivariance import (
    circular_conv_matrix,
    conv_distance,
    conv_fit,
    conv_reconstruction,
    flat_from_fields,
    shift_match,
)

G1 = Geometry(channels=2, spatial=(24,), periodic=True)
G2 = Geometry(channels=3, spatial=(10, 10), periodic=True)


def kernel(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# -- the dense convolution helper, against PyTorch ---------------------------------------------------


@pytest.mark.parametrize("k", [3, 5])
def test_circular_conv_matrix_matches_torch_conv1d(k):
    K = kernel((4, 2, k))
    x = np.random.default_rng(1).standard_normal((5, 2, 24))
    W = circular_conv_matrix(K, (24,))
    xt = Fn.pad(torch.tensor(x), (k // 2, k // 2), mode="circular")
    expected = Fn.conv1d(xt, torch.tensor(K)).numpy().reshape(5, -1)
    np.testing.assert_allclose(x.reshape(5, -1) @ W.T, expected, atol=1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_circular_conv_matrix_matches_torch_conv2d(k):
    K = kernel((3, 2, k, k))
    x = np.random.default_rng(2).standard_normal((4, 2, 9, 7))
    W = circular_conv_matrix(K, (9, 7))
    xt = Fn.pad(torch.tensor(x), (k // 2,) * 4, mode="circular")
    expected = Fn.conv2d(xt, torch.tensor(K)).numpy().reshape(4, -1)
    np.testing.assert_allclose(x.reshape(4, -1) @ W.T, expected, atol=1e-12)


def test_circular_conv_matrix_names_a_kernel_that_does_not_fit_the_grid():
    with pytest.raises(ValueError, match="does not fit a 2-D grid"):
        circular_conv_matrix(np.zeros((2, 2, 3)), (8, 8))


def test_flat_from_fields_inverts_geometry_fields_with_perm():
    g = Geometry(channels=2, spatial=(3, 4), channels_last=True).permuted(np.random.default_rng(0).permutation(12))
    W = np.random.default_rng(1).standard_normal((5, g.n_inputs))
    np.testing.assert_array_equal(flat_from_fields(g.fields(W), g), W)


# -- shift_match -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,g", [((3, 2, 3), G1), ((4, 3, 3, 3), G2), ((2, 3, 5, 5), G2)])
def test_shift_match_of_dense_conv_is_one(shape, g):
    W = circular_conv_matrix(kernel(shape), g.spatial)
    out = shift_match(W, g)
    assert out["shift_match"] >= 0.99
    assert out["shift_match_units"] == len(W)


def test_shift_match_of_random_weights_is_near_its_null():
    W = np.random.default_rng(3).standard_normal((300, G2.n_inputs))
    assert shift_match(W, G2)["shift_match"] < 0.25


def test_shift_match_subsample_finds_partners_among_all_rows():
    # 400 conv units, 64 shifted rows matched against all 400: every partner is there
    W = circular_conv_matrix(kernel((4, 3, 3, 3)), G2.spatial)
    out = shift_match(W, G2, max_units=64)
    assert out["shift_match_units"] == 64
    assert out["shift_match"] >= 0.99


def test_shift_match_is_invariant_to_unit_order_with_subsampling():
    W = circular_conv_matrix(kernel((4, 3, 3, 3)), G2.spatial)
    W = W + 0.05 * np.random.default_rng(4).standard_normal(W.shape)
    order = np.random.default_rng(5).permutation(len(W))
    a, b = shift_match(W, G2, max_units=50), shift_match(W[order], G2, max_units=50)
    assert b["shift_match"] == pytest.approx(a["shift_match"], rel=1e-6)  # cosines are float32
    assert shift_match(W, G2, max_units=50, seed=1)["shift_match"] != a["shift_match"]


def test_phase_shifted_sinusoids_are_equivariant_but_not_local():
    # every phase of a plane wave (2 cycles across x, 1 down y) on a 16 x 16 ring: closed under shifts
    g = Geometry(channels=1, spatial=(16, 16), periodic=True)
    y, x = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    phases = 2 * np.pi * np.arange(16) / 16
    W = np.stack([np.cos(2 * np.pi * (2 * x + y) / 16 + p).ravel() for p in phases])
    from probe.metrics import first_layer_measures

    out = first_layer_measures(W, g)
    assert out["shift_match"] >= 0.99
    assert out["ipr"] == pytest.approx(1.5 / 256)  # sum cos^4 / (sum cos^2)^2
    assert out["window_mass_5"] < 0.15
    assert out["conv_distance_5"] > 0.9


def test_input_permuted_conv_loses_its_shift_match():
    W = circular_conv_matrix(kernel((4, 3, 3, 3)), G2.spatial)
    Wp = permute_positions(W, G2, np.random.default_rng(6).permutation(G2.n_positions))
    assert shift_match(Wp, G2)["shift_match"] < 0.5


# -- conv_distance -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,g", [((3, 2, 3), G1), ((3, 2, 5), G1), ((4, 3, 3, 3), G2), ((2, 3, 5, 5), G2)])
@pytest.mark.parametrize("k", [3, 5])
def test_conv_distance_of_dense_conv_is_zero_for_k_at_least_kernel(shape, g, k):
    W = circular_conv_matrix(kernel(shape), g.spatial)
    d = conv_distance(W, g, k)
    if k >= shape[-1]:
        assert d == pytest.approx(0.0, abs=1e-7)
        assert conv_fit(W, g, k).n_filters == shape[0]
    else:
        assert d > 0.2  # a 5-tap kernel does not fit a 3-window


def test_conv_distance_of_small_kernel_in_large_window_needs_alignment():
    # a 2-tap kernel fits a 5-window at 4 offsets; the crops must still line up across positions
    K = np.array([[[1.0, 2.0, 0.0]], [[0.0, 2.0, -1.0]]])  # two orthogonal 2-tap filters, C = 1
    g = Geometry(channels=1, spatial=(17,), periodic=True)
    fit = conv_fit(circular_conv_matrix(K, g.spatial), g, 5)
    assert fit.distance == pytest.approx(0.0, abs=1e-7)
    assert fit.n_filters == 2


def test_conv_distance_treats_negated_filters_as_one_filter():
    K = kernel((1, 3, 3, 3))
    W = circular_conv_matrix(np.concatenate([K, -2.0 * K]), G2.spatial)
    fit = conv_fit(W, G2, 3)
    assert fit.distance == pytest.approx(0.0, abs=1e-7)
    assert fit.n_filters == 1


def test_conv_distance_of_random_weights_is_one():
    W = np.random.default_rng(8).standard_normal((200, G2.n_inputs))
    assert conv_distance(W, G2, 3) == pytest.approx(1.0, abs=0.02)
    assert conv_distance(W, G2, 5) == pytest.approx(1.0, abs=0.02)


def test_conv_distance_of_locally_connected_layer_without_sharing_is_one():
    W = circular_conv_matrix(kernel((4, 3, 3, 3)), G2.spatial)
    lcn = W * np.random.default_rng(9).standard_normal(W.shape)  # same supports, unshared weights
    assert conv_distance(lcn, G2, 3) > 0.95


def test_conv_distance_grows_with_noise():
    W = circular_conv_matrix(kernel((4, 3, 3, 3)), G2.spatial)
    noise = np.random.default_rng(10).standard_normal(W.shape)
    noise *= np.abs(W) > 0  # noise on the kernel entries only, so crops stay local
    ds = [conv_distance(W + eps * noise, G2, 3) for eps in (0.0, 0.05, 0.1)]
    assert ds[0] < ds[1] < ds[2] < 0.3


def test_conv_reconstruction_distance_equals_conv_distance():
    W = circular_conv_matrix(kernel((3, 3, 5, 5)), G2.spatial)
    W = W + 0.1 * np.random.default_rng(11).standard_normal(W.shape)
    g = G2.permuted(np.random.default_rng(12).permutation(G2.n_positions))
    Wc = conv_reconstruction(W, g, 3)
    assert np.linalg.norm(W - Wc) / np.linalg.norm(W) == pytest.approx(conv_distance(W, g, 3), rel=1e-9)


def test_conv_seen_through_a_shuffle_scores_as_the_conv():
    W = circular_conv_matrix(kernel((2, 3, 3, 3)), G2.spatial)
    perm = np.random.default_rng(13).permutation(G2.n_positions)
    cols = (np.arange(3)[:, None] * G2.n_positions + perm[None, :]).ravel()
    W_seen, g = W[:, cols], G2.permuted(perm)
    assert conv_distance(W_seen, g, 3) == pytest.approx(0.0, abs=1e-7)
    assert shift_match(W_seen, g)["shift_match"] >= 0.99
    assert conv_distance(W_seen, G2, 3) > 0.9


def test_content_keys_are_the_keyed_blake2b_digests_of_each_rows_bytes():
    """content_keys hashes each row where it lies; the keys must be those of the row's bytes copied out (the
    subsample of shift_match and the tie-breaks of conv_distance depend on them), for any row order, layout and
    dtype handed in, and identical rows must share a key."""
    import hashlib

    from probe.metrics.equivariance import content_keys

    rng = np.random.default_rng(2)
    V = rng.standard_normal((50, 17))
    V[7] = V[3]
    for seed in (0, 5, -1):
        salt = int(seed).to_bytes(8, "little", signed=True)
        expected = np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest(),
                                            "little") for row in V], dtype=np.uint64)
        assert np.array_equal(content_keys(V, seed), expected)
        assert np.array_equal(content_keys(np.asfortranarray(V), seed), expected)  # a copy in C order is hashed
        assert np.array_equal(content_keys(V[::-1], seed), expected[::-1])
        assert np.array_equal(content_keys(V.astype(np.float32), seed), content_keys(V.astype(np.float32)
                                                                                       .astype(np.float64), seed))
    keys = content_keys(V)
    assert keys[7] == keys[3] and len(np.unique(keys)) == 49
