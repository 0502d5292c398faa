"""Locality measures on constructions whose answer is known exactly (docs/design.md §4.4), and the registry."""

import numpy as np
import pytest
import torch

from probe.geometry import Geometry
from probe.metrics import (
    MEASURE_KEYS,
    FIRST_LAYER_MEASURES,
    first_layer_measures,
    permute_positions,
    references,
)
from probe.metrics.equivariance import circular_conv_matrix
from probe.metrics.locality import centres, ipr, ipr_frac_above, ipr_gaussian, ipr_iid, spread, window_mass

G1 = Geometry(channels=2, spatial=(24,), periodic=True)
G2 = Geometry(channels=3, spatial=(10, 10), periodic=True)


def conv_1d(seed=0, c_out=3, c_in=2, k=3, L=24):
    kernel = np.random.default_rng(seed).standard_normal((c_out, c_in, k))
    return kernel, circular_conv_matrix(kernel, (L,))


def conv_2d(seed=0, c_out=4, c_in=3, k=3, L=10):
    kernel = np.random.default_rng(seed).standard_normal((c_out, c_in, k, k))
    return kernel, circular_conv_matrix(kernel, (L, L))


def ipr_closed_form(kernel):
    """Mean over filters of sum_a e(a)^2 / (sum_a e(a))^2, e(a) = sum_c kernel[o, c, a]^2."""
    e = (kernel**2).sum(axis=1).reshape(len(kernel), -1)
    return float(np.mean((e**2).sum(axis=1) / e.sum(axis=1) ** 2))


def one_hot_fields(geometry, positions):
    """One unit per position, all weight on that pixel of channel 0."""
    F = np.zeros((len(positions), geometry.channels, *geometry.spatial))
    for i, s in enumerate(positions):
        F[(i, 0, *np.atleast_1d(s))] = 1.0
    return geometry.flatten_fields(F)


# -- ipr ---------------------------------------------------------------------------------------------


def test_ipr_of_single_pixel_is_one():
    W = one_hot_fields(G2, [(0, 0), (3, 7), (9, 9)])
    assert ipr(W, G2) == pytest.approx(1.0)


def test_ipr_of_flat_field_is_one_over_grid_size():
    W = np.ones((5, G2.n_inputs)) * np.arange(1, 6)[:, None]
    assert ipr(W, G2) == pytest.approx(1 / 100)


def test_ipr_of_random_gaussian_is_near_its_expectation():
    g = Geometry(channels=3, spatial=(16, 16))
    W = np.random.default_rng(0).standard_normal((400, g.n_inputs))
    expected = ipr_gaussian(g)
    assert expected == pytest.approx(5 / (3 * 256 + 2))
    assert ipr(W, g) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("C,L", [(1, 8), (2, 5), (1, 40)])
def test_exact_gaussian_ipr_matches_monte_carlo_where_the_first_order_form_does_not(C, L):
    # (C + 2) / (C |S| + 2) exactly; the first-order (C + 2) / (C |S|) is 25% off at C = 1, |S| = 8
    g = Geometry(channels=C, spatial=(L,))
    W = np.random.default_rng(1).standard_normal((200_000, g.n_inputs))
    mc = ipr(W, g)
    assert mc == pytest.approx((C + 2) / (C * L + 2), rel=0.005)
    if L < 10:
        assert abs(mc - (C + 2) / (C * L)) > 0.1 * mc


def test_uniform_init_has_less_ipr_than_gaussian_weights():
    # PyTorch's default init, U(-1/sqrt(n), 1/sqrt(n)): kurtosis 9/5, ipr (C + 4/5) / (C |S|) to first order
    g = Geometry(channels=1, spatial=(40,))
    W = np.random.default_rng(2).uniform(-1, 1, size=(50_000, 40))
    assert ipr(W, g) == pytest.approx(ipr_iid(g, 9 / 5), rel=0.03)
    assert ipr(W, g) == pytest.approx(0.046, abs=0.002)
    assert ipr_gaussian(g) == pytest.approx(0.071, abs=0.001)


@pytest.mark.parametrize("make", [conv_1d, conv_2d])
def test_ipr_of_dense_conv_equals_closed_form_from_kernel(make):
    kernel, W = make()
    g = G1 if kernel.ndim == 3 else G2
    assert ipr(W, g) == pytest.approx(ipr_closed_form(kernel), rel=1e-12)


def test_ipr_frac_above_counts_localized_units_only():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((10, G2.n_inputs))
    W[:3] = one_hot_fields(G2, [(1, 1), (2, 2), (3, 3)])
    assert ipr_frac_above(W, G2) == pytest.approx(0.3)
    assert ipr_frac_above(W, G2, threshold=0.0) == 1.0


def test_all_zero_units_are_left_out():
    W = one_hot_fields(G2, [(4, 4), (5, 5)])
    W0 = np.vstack([W, np.zeros((3, G2.n_inputs))])
    for name in ("ipr", "spread", "window_mass_3", "hoyer", "spectral_entropy"):
        assert FIRST_LAYER_MEASURES[name](W0, G2) == pytest.approx(FIRST_LAYER_MEASURES[name](W, G2)), name


def test_torch_tensor_gives_the_same_value_as_numpy():
    _, W = conv_2d()
    assert ipr(torch.tensor(W, dtype=torch.float64), G2) == ipr(W, G2)


# -- spread and centres ------------------------------------------------------------------------------


def test_spread_of_single_pixel_is_zero():
    W = one_hot_fields(G2, [(0, 0), (5, 9)])
    assert spread(W, G2) == pytest.approx(0.0, abs=1e-12)


def test_spread_of_flat_1d_field_is_uniform_std():
    g = Geometry(channels=1, spatial=(40,), periodic=False)
    W = np.ones((1, 40))
    assert spread(W, g) == pytest.approx(np.std(np.arange(40)))


def test_spread_is_circular_on_periodic_grids_only():
    # two neighbouring pixels across the edge: 0.5 px apart on a ring, 11.5 px on a line
    F = np.zeros((1, 1, 24))
    F[0, 0, [0, 23]] = 1.0
    W = F.reshape(1, 24)
    ring, line = Geometry(1, (24,), periodic=True), Geometry(1, (24,), periodic=False)
    assert spread(W, ring) == pytest.approx(0.5)
    assert spread(W, line) == pytest.approx(11.5)
    assert centres(np.array([[0.5] + [0.0] * 22 + [0.5]]), ring)[0][0] == pytest.approx(23.5)


def test_spread_uses_euclidean_distance_over_both_axes():
    # four pixels at the corners of a 2 x 2 square: each sqrt(0.5) from the centre
    F = np.zeros((1, 3, 10, 10))
    F[0, 0, 4:6, 6:8] = 1.0
    assert spread(G2.flatten_fields(F), G2) == pytest.approx(np.sqrt(0.5))


# -- window_mass -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [conv_1d, conv_2d])
@pytest.mark.parametrize("k", [3, 5])
def test_window_mass_of_conv_is_one_for_k_at_least_kernel(make, k):
    kernel, W = make(k=3)
    g = G1 if kernel.ndim == 3 else G2
    assert window_mass(W, g, k) == pytest.approx(1.0, abs=1e-12)


def test_window_mass_of_conv_is_below_one_for_k_below_kernel():
    _, W = conv_2d(k=5)
    assert window_mass(W, G2, 3) < 0.95


def test_window_mass_is_one_when_k_covers_grid():
    W = np.random.default_rng(0).standard_normal((6, G1.n_inputs))
    assert window_mass(W, G1, 24) == pytest.approx(1.0)
    assert window_mass(W, G1, 100) == pytest.approx(1.0)


def test_window_mass_wraps_on_periodic_grids_only():
    F = np.zeros((1, 1, 24))
    F[0, 0, [0, 23]] = 1.0
    W = F.reshape(1, 24)
    assert window_mass(W, Geometry(1, (24,), periodic=True), 3) == pytest.approx(1.0)
    assert window_mass(W, Geometry(1, (24,), periodic=False), 3) == pytest.approx(0.5)


def test_window_mass_of_flat_field_is_window_share():
    W = np.ones((2, G2.n_inputs))
    assert window_mass(W, G2, 3) == pytest.approx(9 / 100)


# -- invariances and nulls ---------------------------------------------------------------------------


def test_every_measure_is_unchanged_when_hidden_units_are_permuted():
    _, W = conv_2d(k=3)
    W = W + 0.01 * np.random.default_rng(3).standard_normal(W.shape)  # no exact ties
    order = np.random.default_rng(4).permutation(len(W))
    a = first_layer_measures(W, G2)
    b = first_layer_measures(W[order], G2)
    assert a.keys() == b.keys()
    for key in a:
        tol = 1e-6 if key == "shift_match" else 1e-9  # its cosine matrix is float32
        assert b[key] == pytest.approx(a[key], rel=tol, abs=1e-12), key


def test_input_permutation_keeps_ipr_and_destroys_contiguity():
    _, W = conv_2d(k=3)
    perm = np.random.default_rng(5).permutation(G2.n_positions)
    Wp = permute_positions(W, G2, perm)
    conv, shuffled = first_layer_measures(W, G2), first_layer_measures(Wp, G2)
    assert shuffled["ipr"] == pytest.approx(conv["ipr"])
    assert shuffled["spread"] > 2 * conv["spread"]
    assert shuffled["window_mass_3"] < 0.6 * conv["window_mass_3"]
    assert shuffled["shift_match"] < 0.7 * conv["shift_match"]
    assert shuffled["conv_distance_3"] > 0.9


def test_geometry_perm_is_undone_so_a_shuffled_conv_scores_as_the_conv():
    _, W = conv_2d(k=3)
    perm = np.random.default_rng(6).permutation(G2.n_positions)
    # the model sees x_seen[c, s] = x[c, perm[s]], so the same layer has W_seen[:, (c, s)] = W[:, (c, perm[s])]
    cols = (np.arange(G2.channels)[:, None] * G2.n_positions + np.asarray(perm)[None, :]).ravel()
    W_seen = W[:, cols]
    shuffled = G2.permuted(perm)
    a, b = first_layer_measures(W, G2), first_layer_measures(W_seen, shuffled)
    for key in a:
        tol = 1e-6 if key == "shift_match" else 1e-9  # its cosine matrix is float32
        assert b[key] == pytest.approx(a[key], rel=tol, abs=1e-12), key
    # and seen without the perm it is no conv at all
    assert first_layer_measures(W_seen, G2, names=["window_mass_3"])["window_mass_3"] < 0.6


# -- registry ----------------------------------------------------------------------------------------


def test_first_layer_measures_returns_the_contract_keys_as_floats():
    _, W = conv_1d()
    out = first_layer_measures(W, G1, W0=W + 1.0)
    expected = set()
    for name in FIRST_LAYER_MEASURES:
        expected.update(MEASURE_KEYS.get(name, (name,)))
    for key in ("ipr", "ipr_frac_above", "spread", "window_mass_3", "window_mass_5", "hoyer", "zero_frac",
                "shift_match", "shift_match_units", "conv_distance_3", "conv_distance_5",
                "spectral_entropy", "peak_frequency"):
        assert key in expected
    assert set(out) == expected | {"movement"}
    assert all(isinstance(v, float) for v in out.values())


def test_first_layer_measures_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown measures.*'iprr'"):
        first_layer_measures(np.zeros((2, G1.n_inputs)), G1, names=["iprr"])


def test_references_hold_the_nulls():
    _, W = conv_2d(k=3)
    W0 = np.random.default_rng(7).standard_normal(W.shape)
    refs = references(W, G2, W0=W0, seed=0, names=["ipr", "window_mass_3", "conv_distance_3"])
    assert set(refs) == {"gaussian", "permuted", "phase", "lcn", "init"}
    assert set(refs["phase"]) == {"ipr", "window_mass_3"}  # the phase null is drawn for its measures only
    assert set(refs["lcn"]) == {"conv_distance_3"}
    assert refs["lcn"]["conv_distance_3"] > 0.9  # the same windows, nothing shared
    conv = first_layer_measures(W, G2, names=["ipr", "window_mass_3", "conv_distance_3"])
    assert refs["gaussian"]["ipr"] == pytest.approx(ipr_gaussian(G2), rel=0.1)
    assert refs["permuted"]["ipr"] == pytest.approx(conv["ipr"])
    assert refs["permuted"]["window_mass_3"] < conv["window_mass_3"]
    assert refs["init"] == first_layer_measures(W0, G2, names=["ipr", "window_mass_3", "conv_distance_3"])
    assert refs["gaussian"]["conv_distance_3"] > 0.95
    # seeded: the same call gives the same references
    assert references(W, G2, seed=0, names=["ipr"])["gaussian"]["ipr"] == refs["gaussian"]["ipr"]


# -- shared intermediates ----------------------------------------------------------------------------


def _layers_to_share_on():
    """Random, heavy-tailed, structured and partly dead layers, on 1-D and 2-D grids, with and without a stored
    input permutation and a channels-last layout."""
    rng = np.random.default_rng(11)
    _, conv2 = conv_2d(k=3)
    _, conv1 = conv_1d()
    pruned = rng.standard_normal((40, G2.n_inputs)) * (rng.random((40, G2.n_inputs)) < 0.1)
    pruned[:5] = 0.0  # dead units
    perm = rng.permutation(G2.n_positions)
    last = Geometry(channels=3, spatial=(10, 10), periodic=False, channels_last=True)
    return [
        (rng.standard_normal((64, G2.n_inputs)), G2),
        (rng.standard_t(2, (64, G2.n_inputs)), G2),
        (conv2, G2),
        (conv1, G1),
        (pruned, G2),
        (conv2, G2.permuted(perm)),
        (rng.standard_normal((30, last.n_inputs)) + 0.3, last),
        (rng.uniform(-1, 1, (50, G1.n_inputs)), Geometry(channels=2, spatial=(24,), periodic=False)),
    ]


@pytest.mark.parametrize("case", range(8))
def test_first_layer_measures_shares_intermediates_without_changing_a_bit(case):
    """first_layer_measures computes the energy maps, distributions and unit spectra once and passes them to
    the measures that read them: every value must equal, exactly, the measure computed alone from W."""
    W, geometry = _layers_to_share_on()[case]
    together = first_layer_measures(W, geometry)
    alone = {}
    for name, fn in FIRST_LAYER_MEASURES.items():
        value = fn(W, geometry)
        alone.update(value if isinstance(value, dict) else {name: value})
    alone = {k: float(v) for k, v in alone.items() if np.isfinite(v)}
    assert together.keys() == alone.keys()
    for key in alone:
        assert together[key] == alone[key], key  # the same bits, not approximately
    # and a subset that shares nothing gets the same values as the whole set
    for name in ("ipr", "conv_distance_3", "window_mass_5"):
        assert first_layer_measures(W, geometry, [name])[name] == together[name]


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (-np.inf, "NaN or inf")])
def test_checked_matrix_refuses_any_non_finite_entry(bad, message):
    from probe.metrics import checked_matrix

    W = np.random.default_rng(0).standard_normal((7, 5))
    checked_matrix(W)
    for i, j in [(0, 0), (6, 4), (3, 2)]:
        V = W.copy()
        V[i, j] = bad
        with pytest.raises(ValueError, match=message):
            checked_matrix(V)


def test_checked_matrix_refuses_all_zero_and_empty_but_not_one_nonzero_entry():
    from probe.metrics import checked_matrix

    for zero in (np.zeros((4, 3)), -np.zeros((4, 3))):
        with pytest.raises(ValueError, match="all zero"):
            checked_matrix(zero)
    with pytest.raises(ValueError, match="empty"):
        checked_matrix(np.zeros((0, 3)))
    for value in (1e-300, -2.0):
        W = np.zeros((4, 3))
        W[2, 1] = value
        assert checked_matrix(W) is not None
