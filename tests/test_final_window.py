"""probe.metrics.final_window on constructions with exactly known readings."""

import numpy as np
import pytest

from probe.geometry import Geometry
from probe.metrics.final_window import (
    final_window_reading,
    final_windows,
    window_energy_share,
    window_mass_change,
    window_members,
)

GEO = Geometry(channels=1, spatial=(40,))
K = 3


def _local_layer(starts, rng, L=40):
    """One unit per start, its weights on positions start .. start + 2 only."""
    W = np.zeros((len(starts), L))
    for i, s in enumerate(starts):
        W[i, s:s + K] = rng.normal(size=K) + 2.0
    return W


def test_window_members_cover_k_positions_each():
    M = window_members(GEO, K)
    assert M.shape == (38, 40)  # non-periodic: windows stay inside the grid
    assert (M.sum(axis=1) == K).all()
    Mp = window_members(Geometry(channels=1, spatial=(40,), periodic=True), K)
    assert Mp.shape == (40, 40) and Mp[39, [39, 0, 1]].all()  # the last window wraps around


def test_final_windows_find_each_units_support():
    rng = np.random.default_rng(0)
    starts = [0, 5, 12, 20, 37]
    assert list(final_windows(_local_layer(starts, rng), GEO, K)) == starts


def test_step_inside_the_final_window_reads_one_and_spread_step_reads_the_window_share():
    rng = np.random.default_rng(1)
    starts = [0, 6, 12, 18, 24, 30]
    W_final = _local_layer(starts, rng)
    c = final_windows(W_final, GEO, K)
    D_in = _local_layer(starts, rng)  # each unit's step inside its own final window
    assert window_energy_share(D_in, c, GEO, K) == pytest.approx(1.0)
    D_flat = np.ones((len(starts), 40))  # spread evenly: the window's share of the grid
    assert window_energy_share(D_flat, c, GEO, K) == pytest.approx(K / 40)


def test_step_in_another_units_window_reads_the_units_null():
    rng = np.random.default_rng(2)
    starts = [0, 6, 12, 18, 24, 30]  # disjoint windows
    W_final = _local_layer(starts, rng)
    D_own = _local_layer(starts, rng)
    D_other = _local_layer(starts[1:] + starts[:1], rng)  # unit i steps inside unit i+1's final window
    own = final_window_reading(W_final, D_own, W_final, GEO, K, draws=20, seed=0)
    other = final_window_reading(W_final, D_other, W_final, GEO, K, draws=20, seed=0)
    assert own["share"] == pytest.approx(1.0)
    assert own["share@units"] == pytest.approx(0.0)  # another unit's window holds none of a unit's own step
    assert other["share"] == pytest.approx(own["share@units"])
    assert own["share@random"] < 0.2  # a random window rarely meets a 3-position step


def test_mass_change_is_signed():
    """A step that grows the weights inside the final window reads positive, one that shrinks them negative, one
    that rescales the whole field zero; the energy share reads the first two alike."""
    rng = np.random.default_rng(3)
    starts = [4, 14, 24]
    W = _local_layer(starts, rng) + 0.3 * rng.normal(size=(3, 40))  # weights everywhere, mass mostly in the window
    c = final_windows(W, GEO, K)
    members = window_members(GEO, K)[c]
    grow, shrink = 0.1 * W * members, -0.1 * W * members
    assert window_mass_change(W, grow, c, GEO, K) > 0
    assert window_mass_change(W, shrink, c, GEO, K) < 0
    assert window_mass_change(W, 0.1 * W, c, GEO, K) == pytest.approx(0.0, abs=1e-12)
    assert window_energy_share(grow, c, GEO, K) == pytest.approx(window_energy_share(shrink, c, GEO, K))
    # the first-order change agrees with a small finite step
    m = lambda M: np.mean((M ** 2 * members).sum(axis=1) / (M ** 2).sum(axis=1))
    D = rng.normal(size=W.shape)
    eps = 1e-6
    assert window_mass_change(W, D, c, GEO, K) == pytest.approx((m(W + eps * D) - m(W - eps * D)) / (2 * eps),
                                                                 rel=1e-5)


def test_two_channels_sum_energy_over_channels():
    geo = Geometry(channels=2, spatial=(10,))
    W = np.zeros((2, 20))
    W[0, [2, 3, 12, 13]] = 1.0  # channel-first layout: positions 2, 3 in both channels
    W[1, [7, 8, 17]] = 1.0
    c = final_windows(W, geo, K)
    assert window_energy_share(W, c, geo, K) == pytest.approx(1.0)


def test_bad_input():
    W = np.ones((3, 40))
    with pytest.raises(ValueError, match="draws"):
        final_window_reading(W, W, W, GEO, K, draws=1)
    with pytest.raises(ValueError, match="null kind"):
        from probe.metrics.final_window import null_windows

        null_windows(np.zeros(3, dtype=int), GEO, K, "bogus", np.random.default_rng(0))


def test_an_update_that_makes_the_final_field_points_there_by_construction():
    """Why the early readings are also taken with leave-one-out windows: an update that alone puts each field in
    its window reads 1 in the final windows of W_0 + D, and reads at the random-window null in those of
    (W_0 + D) - D = W_0, a field with no relation to the update."""
    rng = np.random.default_rng(4)
    W0 = 0.1 * rng.normal(size=(30, 40))
    D = _local_layer(list(rng.integers(0, 38, size=30)), rng)
    full = final_window_reading(W0, D, W0 + D, GEO, K, draws=20, seed=0)
    loo = final_window_reading(W0, D, (W0 + D) - D, GEO, K, draws=20, seed=0)
    assert full["share"] > 0.95
    assert abs(loo["share"] - loo["share@random"]) < 0.1
    assert loo["share"] < 0.2
