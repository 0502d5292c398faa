"""Functional translation measures: Lie derivative against finite differences, shift consistency."""

import numpy as np
import pytest
import torch

from probe.geometry import Geometry
from probe.metrics.functional import (
    lie_derivative,
    lie_ratio,
    shift_consistency,
    translate,
    translation_generator,
)

G1 = Geometry(channels=2, spatial=(16,), periodic=True)
G2 = Geometry(channels=2, spatial=(8, 10), periodic=True)


class ConvGAP(torch.nn.Module):
    """Circular conv -> (optional ReLU) -> global average pool -> linear readout: shift invariant."""

    def __init__(self, geometry, relu=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        conv = torch.nn.Conv2d if geometry.ndim == 2 else torch.nn.Conv1d
        self.geometry, self.relu = geometry, relu
        self.conv = conv(geometry.channels, 8, 3, padding=1, padding_mode="circular", dtype=torch.float64)
        self.head = torch.nn.Linear(8, 5, dtype=torch.float64)

    def forward(self, x):
        h = self.conv(x.reshape(len(x), *self.geometry.input_shape))
        h = torch.relu(h) if self.relu else h
        return self.head(h.flatten(2).mean(dim=2))


def mlp(n, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(n, 64, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(64, 5, dtype=torch.float64)
    )


def smooth_inputs(geometry, B=16, seed=0):
    """Random inputs smoothed along the grid, so that sub-pixel shifts are well defined."""
    x = torch.randn(B, geometry.channels, *geometry.spatial, generator=torch.Generator().manual_seed(seed))
    for d in range(geometry.ndim):
        x = (x + x.roll(1, 2 + d) + x.roll(-1, 2 + d)) / 3
    return x.double().reshape(B, -1)


# -- translations ------------------------------------------------------------------------------------


@pytest.mark.parametrize("g", [G1, G2])
def test_integer_fourier_translation_is_a_circular_shift(g):
    x = smooth_inputs(g, B=3)
    grid = x.numpy().reshape(3, g.channels, *g.spatial)
    for axis in range(g.ndim):
        moved = translate(x, g, 2.0, axis).reshape(grid.shape)
        np.testing.assert_allclose(moved, np.roll(grid, 2, axis=2 + axis), atol=1e-12)


def test_translations_compose_on_odd_grids():
    # (on even grids the Nyquist component only moves at integer t, see translate)
    g = Geometry(channels=2, spatial=(15,), periodic=True)
    x = smooth_inputs(g, B=2).numpy()
    np.testing.assert_allclose(translate(translate(x, g, 0.3), g, 0.45), translate(x, g, 0.75), atol=1e-12)


def test_linear_interpolation_moves_a_ramp_on_non_periodic_grids():
    g = Geometry(channels=1, spatial=(6,), periodic=False)
    x = np.arange(6.0)[None, :]
    np.testing.assert_allclose(translate(x, g, 0.25), [[0, 0.75, 1.75, 2.75, 3.75, 4.75]])
    np.testing.assert_allclose(translation_generator(x, g), [[-0.5, -1, -1, -1, -1, -0.5]])


@pytest.mark.parametrize(
    "g",
    [G1, G2, Geometry(2, (8, 10), periodic=False), G2.permuted(np.random.default_rng(0).permutation(80)),
     Geometry(3, (12,), periodic=True, channels_last=True)],
)
def test_translation_generator_matches_finite_differences_of_translate(g):
    x = smooth_inputs(g, B=4).numpy()
    h = 1e-5
    for axis in range(g.ndim):
        fd = (translate(x, g, h, axis) - translate(x, g, -h, axis)) / (2 * h)
        np.testing.assert_allclose(translation_generator(x, g, axis), fd, atol=1e-7)


# -- Lie derivative ----------------------------------------------------------------------------------


@pytest.mark.parametrize("g", [G1, G2, Geometry(2, (8, 10), periodic=False)])
def test_lie_derivative_matches_finite_differences(g):
    f = mlp(g.n_inputs)
    x = smooth_inputs(g, B=8)
    h = 1e-5
    expected = 0.0
    for axis in range(g.ndim):
        plus = f(torch.tensor(translate(x, g, h, axis)))
        minus = f(torch.tensor(translate(x, g, -h, axis)))
        expected += (((plus - minus) / (2 * h)) ** 2).sum().item() / (5 * 8)
    expected /= g.ndim
    assert lie_derivative(f, x, g, batch_size=3) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("g", [G1, G2])
def test_lie_derivative_of_linear_conv_with_global_pool_is_zero(g):
    f = ConvGAP(g, relu=False)
    x = smooth_inputs(g)
    assert lie_derivative(f, x, g) == pytest.approx(0.0, abs=1e-20)
    assert lie_derivative(mlp(g.n_inputs), x, g) > 1e-4


def test_lie_derivative_takes_numpy_inputs_in_the_models_dtype():
    f64 = mlp(G1.n_inputs)
    f32 = mlp(G1.n_inputs).float()
    x = smooth_inputs(G1).numpy()
    assert lie_derivative(f32, x, G1) == pytest.approx(lie_derivative(f64, x, G1), rel=1e-3)


# -- shift consistency -------------------------------------------------------------------------------


def varied_inputs(geometry, B, seed):
    """Noise plus a random offset per input and channel, so that a pooled model's predictions vary."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, geometry.channels, geometry.n_positions, generator=gen, dtype=torch.float64)
    x = x + 3 * torch.randn(B, geometry.channels, 1, generator=gen, dtype=torch.float64)
    return x.reshape(B, -1)


def n_classes_predicted(f, x):
    return len(torch.unique(f(x).argmax(dim=-1)))


@pytest.mark.parametrize("g", [G1, G2])
def test_shift_consistency_of_conv_with_global_pool_is_one(g):
    x = varied_inputs(g, 64, seed=1)
    f = ConvGAP(g)
    assert n_classes_predicted(f, x) >= 3  # not trivially constant
    out = shift_consistency(f, x, g, batch_size=20)
    assert {k: v for k, v in out.items() if k.startswith("shift")} == {
        "shift_consistency_1": 1.0, "shift_consistency_2": 1.0, "shift_consistency_3": 1.0}
    # a random move of the same size does change predictions: the invariance is to shifts, not to everything
    assert out["noise_consistency_3"] < 1.0


def test_shift_consistency_of_random_mlp_is_lower():
    x = varied_inputs(G2, 200, seed=2)
    f = mlp(G2.n_inputs)
    assert n_classes_predicted(f, x) >= 3
    out = shift_consistency(f, x, G2, shifts=(1, 3))
    assert set(out) == {"shift_consistency_1", "shift_consistency_3", "noise_consistency_1", "noise_consistency_3"}
    assert out["shift_consistency_1"] < 0.8 and out["shift_consistency_3"] < 0.8


def test_shift_consistency_shifts_the_image_not_the_shuffled_vector():
    # a model g of images, seen through a shuffle: f(x_seen) = g(x) with x[c, perm[s]] = x_seen[c, s]
    perm = np.random.default_rng(3).permutation(G2.n_positions)
    g = mlp(G2.n_inputs)
    cols = torch.tensor((np.arange(2)[:, None] * 80 + np.argsort(perm)[None, :]).ravel())

    def f(x_seen):
        return g(x_seen[:, cols])

    x = varied_inputs(G2, 128, seed=4)
    x_seen = x.reshape(128, 2, 80)[:, :, torch.tensor(perm)].reshape(128, -1)
    assert torch.equal(f(x_seen), g(x))
    on_image = shift_consistency(g, x, G2)
    assert shift_consistency(f, x_seen, G2.permuted(perm)) == on_image
    assert shift_consistency(f, x_seen, G2) != on_image


def test_a_model_that_predicts_one_class_is_consistent_under_shifts_and_noise_alike():
    # the trivial init null of shift_consistency: an untrained net predicting one class keeps it under any move
    x = varied_inputs(G1, 100, seed=5)
    bias = torch.nn.Linear(G1.n_inputs, 5, dtype=torch.float64)
    with torch.no_grad():
        bias.weight.mul_(1e-6)
        bias.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0]))
    out = shift_consistency(bias, x, G1)
    assert out["shift_consistency_1"] == 1.0 and out["noise_consistency_1"] == 1.0


# -- the Lie ratio: scale-free -----------------------------------------------------------------------


@pytest.mark.parametrize("g", [G1, G2])
def test_lie_ratio_does_not_change_with_the_logits_scale_where_the_lie_derivative_does(g):
    x = smooth_inputs(g, B=32)
    f = mlp(g.n_inputs)

    def f10(z):
        return 10 * f(z)

    assert lie_derivative(f10, x, g) == pytest.approx(100 * lie_derivative(f, x, g), rel=1e-9)
    assert lie_ratio(f10, x, g) == pytest.approx(lie_ratio(f, x, g), rel=1e-9)


@pytest.mark.parametrize("g", [G1, G2])
def test_lie_ratio_is_zero_for_an_invariant_model_and_near_one_for_a_random_linear_map(g):
    x = smooth_inputs(g, B=64)
    assert lie_ratio(ConvGAP(g, relu=False), x, g) == pytest.approx(0.0, abs=1e-12)
    torch.manual_seed(1)
    linear = torch.nn.Linear(g.n_inputs, 200, dtype=torch.float64)  # isotropic: no preferred direction
    assert lie_ratio(linear, x, g) == pytest.approx(1.0, abs=0.15)
    assert lie_ratio(linear, x, g, seed=1) != lie_ratio(linear, x, g, seed=0)  # seeded directions


def test_a_measure_undefined_for_the_model_is_left_out_not_nan():
    # a model that ignores its input: the Lie ratio's random-direction sensitivity is 0, the ratio undefined
    from types import SimpleNamespace

    from probe.analysis.function import function_measures

    task = SimpleNamespace(geometry=G1, loss="ce", x_test=varied_inputs(G1, 32, seed=6))

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.arange(5, dtype=torch.float64))

        def forward(self, x):
            return self.b.expand(len(x), 5) * 1.0

    out = function_measures(Constant(), task, n=32)
    assert "lie_ratio" not in out and out["lie_derivative"] == 0.0
    assert all(np.isfinite(v) for v in out.values())
