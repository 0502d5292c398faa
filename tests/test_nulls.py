"""The references (probe/metrics/nulls.py) on the constructions that fooled the measures read against the old ones:
smooth random fields without translation structure, unshared random local fields with short crops, one
filter copied at one position, and PyTorch's uniform initialization."""

import numpy as np
import pytest

from probe.geometry import Geometry
from probe.metrics import first_layer_measures, references
from probe.metrics.equivariance import circular_conv_matrix, conv_distance, conv_fit, shift_match
from probe.metrics.locality import ipr_gaussian, ipr_iid
from probe.metrics.nulls import (
    default_linear_init,
    init_seed_measures,
    init_seeds,
    lcn_fields,
    phase_measures,
    phase_randomize,
)

G40 = Geometry(channels=1, spatial=(40,), periodic=True)
G40_OPEN = Geometry(channels=1, spatial=(40,), periodic=False)
G2 = Geometry(channels=3, spatial=(12, 12), periodic=True)
NAMES = ["shift_match", "window_mass_3", "window_mass_5", "spread"]


def smooth_fields(m, geometry, ell, seed=0, crop=1):
    """m stationary Gaussian random fields with a Gaussian covariance of length ``ell`` pixels: smooth, with no
    place and no translation structure (the set is not closed under shifts). With ``crop`` > 1 they are drawn on
    a periodic grid ``crop`` times longer and cut to the geometry's: non-periodic fields for an open grid."""
    S = tuple(n * crop for n in geometry.spatial)
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((m, geometry.channels, *S))
    axes = tuple(range(2, Z.ndim))
    k2 = sum(np.meshgrid(*[np.fft.fftfreq(n) ** 2 for n in S], indexing="ij"))
    F = np.real(np.fft.ifftn(np.fft.fftn(Z, axes=axes) * np.exp(-2 * (np.pi * ell) ** 2 * k2), axes=axes))
    F = F[(slice(None), slice(None), *[slice(0, n) for n in geometry.spatial])]
    return geometry.flatten_fields(F)


def local_unshared(m, geometry, k, seed=0):
    """m random fields, each on one random k (k x k) window inside the grid: a locally connected layer."""
    rng = np.random.default_rng(seed)
    F = np.zeros((m, geometry.channels, *geometry.spatial))
    for i in range(m):
        s = [rng.integers(0, n - k + 1) for n in geometry.spatial]
        F[(i, slice(None), *[slice(a, a + k) for a in s])] = rng.standard_normal((geometry.channels,) + (k,) * len(s))
    return geometry.flatten_fields(F)


# -- the phase reference ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("g", [G40, G40_OPEN, G2, Geometry(channels=2, spatial=(7, 10), channels_last=True)])
def test_phase_randomize_keeps_every_power_spectrum_and_is_real(g):
    W = np.random.default_rng(0).standard_normal((30, g.n_inputs))
    Wp = phase_randomize(W, g, seed=3)
    assert Wp.shape == W.shape and np.isrealobj(Wp)
    axes = tuple(range(2, 2 + g.ndim))
    power = lambda V: np.abs(np.fft.fftn(g.fields(V), axes=axes)) ** 2  # noqa: E731
    np.testing.assert_allclose(power(Wp), power(W), rtol=1e-9, atol=1e-9)
    assert np.abs(Wp - W).max() > 0.1  # and the fields did change
    np.testing.assert_array_equal(phase_randomize(W, g, seed=3), Wp)  # seeded
    assert not np.allclose(phase_randomize(W, g, seed=4), Wp)


def test_phase_randomize_undoes_a_shuffle_and_keeps_cross_channel_spectra():
    g = G2.permuted(np.random.default_rng(1).permutation(G2.n_positions))
    W = np.random.default_rng(2).standard_normal((10, g.n_inputs))
    F = g.fields(W)  # original order
    Fp = g.without_perm().fields(phase_randomize(W, g, seed=0))
    X, Xp = np.fft.fft2(F), np.fft.fft2(Fp)
    np.testing.assert_allclose(X[:, 0] * X[:, 1].conj(), Xp[:, 0] * Xp[:, 1].conj(), rtol=1e-9, atol=1e-8)


def test_phase_randomized_single_pixels_lose_their_place():
    F = np.zeros((50, 1, 40))
    F[np.arange(50), 0, np.arange(50) % 40] = 1.0
    W = G40.flatten_fields(F)
    assert first_layer_measures(W, G40, ["window_mass_3"])["window_mass_3"] == 1.0
    assert phase_measures(W, G40, 0, ["window_mass_3"])["window_mass_3"] < 0.3


@pytest.mark.parametrize("g,ell,crop", [(G40, 3.0, 1), (G40_OPEN, 3.0, 2), (G2, 1.5, 1)])
def test_smooth_random_fields_score_within_noise_of_their_phase_null(g, ell, crop):
    # the construction that fooled shift_match, window_mass and spread read against the permuted null
    W = smooth_fields(200, g, ell, seed=0, crop=crop)
    value = first_layer_measures(W, g, NAMES)
    nulls = [phase_measures(W, g, s, NAMES) for s in range(4)]
    permuted = references(W, g, seed=0, names=NAMES)["permuted"]
    for name in NAMES:
        draws = np.array([n[name] for n in nulls])
        scale = 0.03 if name != "spread" else 0.03 * np.mean(draws)
        assert abs(value[name] - draws.mean()) < max(3 * draws.std(), scale), name
    assert value["shift_match"] > permuted["shift_match"] + 0.15  # what the permuted null mistook for structure


def test_shift_match_of_a_convolution_stands_far_above_its_phase_null():
    K = smooth_fields(4, Geometry(channels=3, spatial=(5, 5), periodic=True), 1.0, seed=5)
    W = circular_conv_matrix(K.reshape(4, 3, 5, 5), G2.spatial)
    assert shift_match(W, G2)["shift_match"] >= 0.99
    assert phase_measures(W, G2, 0, ["shift_match"])["shift_match"] < 0.7


def test_local_bumps_beat_their_phase_null_on_window_mass_and_spread():
    rng = np.random.default_rng(7)
    s = np.arange(40)
    F = np.exp(-0.5 * ((s[None, :] - rng.uniform(0, 40, (100, 1))) / 1.5) ** 2)[:, None, :]
    W = G40_OPEN.flatten_fields(F * rng.choice([-1, 1], (100, 1, 1)))
    v, ph = first_layer_measures(W, G40_OPEN, NAMES), phase_measures(W, G40_OPEN, 0, NAMES)
    assert v["window_mass_5"] > ph["window_mass_5"] + 0.4
    assert v["spread"] < ph["spread"] / 3


# -- shift_match: no self-matches -------------------------------------------------------------------------------
def test_shift_match_pairs_no_unit_with_itself():
    # one smooth field alone has no partner but itself: undefined, not 1
    W = smooth_fields(1, G40, 5.0)
    assert np.isnan(shift_match(W, G40)["shift_match"])
    assert "shift_match" not in first_layer_measures(W, G40, ["shift_match"])
    # two copies of a smooth field are each other's partners (copies are a degenerate case)
    assert shift_match(np.vstack([W, W]), G40)["shift_match"] > 0.9


# -- conv_distance needs translation, and is calibrated on short crops ------------------------------------------
@pytest.mark.parametrize("g,k,m", [(G40_OPEN, 3, 100), (G40_OPEN, 3, 640), (G40_OPEN, 5, 320), (G40_OPEN, 5, 640),
                                   (Geometry(channels=1, spatial=(12, 12)), 3, 300),
                                   (Geometry(channels=3, spatial=(12, 12)), 5, 300)])
def test_unshared_random_local_fields_are_not_convolutional(g, k, m):
    # before: 0.17 (k = 3), 0.45 (k = 5, 640 units), 0.66 (320 units) in 1-D with one channel
    assert conv_distance(local_unshared(m, g, k), g, k) >= 0.9


@pytest.mark.parametrize("k", [3, 5])
def test_exact_convolution_with_short_crops_is_convolutional(k):
    W = circular_conv_matrix(np.random.default_rng(0).standard_normal((16, 1, k)), (40,))
    assert conv_distance(W, G40, k) <= 0.05


def test_one_filter_copied_at_one_position_shares_nothing():
    F = np.zeros((100, 1, 40))
    F[:, 0, 10:15] = np.random.default_rng(1).standard_normal(5) * np.random.default_rng(2).standard_normal((100, 1))
    W = G40_OPEN.flatten_fields(F)
    assert conv_distance(W, G40_OPEN, 5) == pytest.approx(1.0)  # before: 0.000
    F[50:] = np.roll(F[50:], 7, axis=2)  # the same filter at a second position: now it is shared
    fit = conv_fit(G40_OPEN.flatten_fields(F), G40_OPEN, 5)
    assert fit.distance == pytest.approx(0.0, abs=1e-7) and fit.n_filters == 1


# -- the lcn reference -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("g,k", [(G40, 3), (G40, 5), (G2, 3)])
def test_lcn_reference_of_a_convolution_is_local_and_unshared(g, k):
    C = g.channels
    W = circular_conv_matrix(np.random.default_rng(3).standard_normal((8, C) + (k,) * g.ndim), g.spatial)
    L = lcn_fields(W, g, k, seed=0)
    assert first_layer_measures(L, g, [f"window_mass_{k}"])[f"window_mass_{k}"] == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.norm(L, axis=1), np.linalg.norm(W, axis=1))
    refs = references(W, g, names=[f"conv_distance_{k}"])
    assert conv_distance(W, g, k) <= 0.05
    assert refs["lcn"][f"conv_distance_{k}"] >= 0.9


def test_many_short_local_fields_match_their_shifts_by_chance_as_the_lcn_null_says():
    # 640 unshared random 5-tap fields: shift_match is high (every shifted field finds a close local partner)
    # though nothing is shared; the lcn null scores the same, a stride-1 convolution far more
    W = local_unshared(640, G40_OPEN, 5, seed=4)
    value = shift_match(W, G40_OPEN)["shift_match"]
    null = references(W, G40_OPEN, names=["shift_match"])
    assert value > null["phase"]["shift_match"] + 0.2  # the phase null cannot see this: it is for smooth fields
    assert value == pytest.approx(null["lcn"]["shift_match"], abs=0.05)
    conv = circular_conv_matrix(np.random.default_rng(5).standard_normal((16, 1, 5)), (40,))
    assert (shift_match(conv, G40)["shift_match"]
            > references(conv, G40, names=["shift_match"])["lcn"]["shift_match"] + 0.15)


# -- the init_seeds reference ------------------------------------------------------------------------------------
def test_init_seeds_reads_the_uniform_initializer_not_gaussian_weights():
    W = np.random.default_rng(0).standard_normal((400, 40))
    refs = references(W, G40_OPEN, names=["ipr", "hoyer"], init_build=lambda s: default_linear_init((400, 40), s))
    init = refs["init_seeds"]
    assert init["ipr"] == pytest.approx(ipr_iid(G40_OPEN, 9 / 5), rel=0.05)  # 0.045
    assert refs["gaussian"]["ipr"] == pytest.approx(ipr_gaussian(G40_OPEN), rel=0.05)  # 0.071
    assert init["hoyer"] == pytest.approx(0.16, abs=0.01)
    assert refs["gaussian"]["hoyer"] == pytest.approx(0.24, abs=0.015)


def test_init_seeds_are_other_seeds_averaged_and_reproducible():
    seen = []

    def build(s):
        seen.append(s)
        return default_linear_init((50, 40), s)

    a = init_seed_measures(build, G40_OPEN, seed=3, names=["ipr", "shift_match"])
    assert seen == init_seeds(3) and 3 not in seen and len(seen) >= 2
    assert set(a) == {"ipr"}  # shift_match is not a measure an initializer is read against
    one = [first_layer_measures(default_linear_init((50, 40), s), G40_OPEN, ["ipr"])["ipr"] for s in seen]
    assert a["ipr"] == pytest.approx(np.mean(one))



def test_the_final_phase_reference_averages_twenty_draws_and_its_sd_falls():
    """references() reads the phase null as the mean of phase_draws(m) randomizations (20 below 1024 units): the
    mean of draws 0..19, draw 0 the single draw of old; across seeds the mean's sd is well below one draw's."""
    from probe.metrics.nulls import PHASE_DRAWS, phase_draws

    assert phase_draws(100) == PHASE_DRAWS == 20 and phase_draws(4096) == 1
    rng = np.random.default_rng(0)
    W = np.exp(-0.5 * ((np.arange(40) - rng.integers(0, 40, (100, 1))) / 2.0) ** 2) * rng.standard_normal((100, 1))
    names = ["window_mass_3", "shift_match"]
    ref = references(W, G40, seed=5, names=names)["phase"]
    draws = [first_layer_measures(phase_randomize(W, G40, 5, j), G40, names) for j in range(20)]
    for k in names:
        assert ref[k] == pytest.approx(np.mean([d[k] for d in draws]), abs=1e-12)
    assert phase_measures(W, G40, 5, names) == draws[0]
    assert draws[1] != draws[0]
    one = [phase_measures(W, G40, s, names)["window_mass_3"] for s in range(8)]
    avg = [phase_measures(W, G40, s, names, draws=20)["window_mass_3"] for s in range(8)]
    assert np.std(avg) < 0.5 * np.std(one)
