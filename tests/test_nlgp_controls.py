"""NLGP's higher-order controls (probe/tasks/nlgp.py, ``kurtosis=``): one covariance, four kinds of marginal."""

import math

import numpy as np
import pytest
import torch

from probe.config import ConfigError
from probe.tasks import make_task
from probe.tasks.nlgp import (SINH_B, T_DOF, reference_covariances, sinh_covariance, sinh_input_covariance)

N = 20000
OPTS = dict(size=40, xi0=1.0, xi1=3.0, gain=3.0, n_train=N, n_test=1)
# the marginals' excess kurtosis in theory (module docstring): erf at gain 3 (quadrature), 0, sinh at b, t_nu
B2 = SINH_B**2
THEORY = {"negative": -1.834, "zero": 0.0,
          "positive": (math.exp(8 * B2) - 4 * math.exp(2 * B2) + 3) / (2 * (math.exp(2 * B2) - 1) ** 2) - 3,
          "elliptical": 6 / (T_DOF - 4)}


def draw(kurtosis, seed=0, **kw):
    t = make_task("nlgp", {**OPTS, **kw, "kurtosis": kurtosis}, seed=seed)
    return t.x_train.double().numpy(), t.y_train.numpy(), t


def excess_kurtosis(x):
    """Pooled over pixels (every pixel has mean 0 and variance 1 by construction): E[x^4] / E[x^2]^2 - 3."""
    return float((x**4).mean() / (x**2).mean() ** 2 - 3)


@pytest.mark.parametrize("kurtosis", list(THEORY))
def test_each_control_has_the_intended_kurtosis_sign_and_value(kurtosis):
    x, _, _ = draw(kurtosis)
    k = excess_kurtosis(x)
    sign = {"negative": -1, "zero": 0, "positive": 1, "elliptical": 1}[kurtosis]
    if sign:
        assert sign * k > 0.7, k  # the sign, with margin
    # and the value (20000 examples; the sampling s.e. of the pooled estimate is below 0.1 for all four)
    assert k == pytest.approx(THEORY[kurtosis], abs=0.25), (k, THEORY[kurtosis])


@pytest.mark.parametrize("kurtosis", list(THEORY))
def test_each_control_keeps_the_reference_covariance_to_sampling_error(kurtosis):
    x, y, task = draw(kurtosis, seed=1)
    refs = reference_covariances(1, OPTS["size"], OPTS["xi0"], OPTS["xi1"], OPTS["gain"], True)
    for c, R in enumerate(refs):
        xc = x[y == c]
        prods = xc[:, :, None] * xc[:, None, :]  # E[x_s x_t] = R_st (mean 0): its s.e. from the products' spread
        se = prods.std(0) / math.sqrt(len(xc))
        iu = np.triu_indices(R.shape[0])
        z = ((prods.mean(0) - R) / se)[iu]
        assert np.abs(z).max() < 5.5, (kurtosis, c, np.abs(z).max())
        # the test has power: a covariance 10% off (an elliptical radius without its (nu - 2) factor is 25% off)
        assert np.abs(((prods.mean(0) - 1.1 * R) / se)[iu]).max() > 5.5
    if kurtosis != "negative":
        assert task.info["kurtosis"] == kurtosis and task.info["covariance_error"] < 1e-12


def test_the_sinh_construction_is_exact_where_its_input_covariance_is_psd_and_close_where_clipped():
    R = reference_covariances(1, 40, 1.0, 3.0, 3.0, True)[1]
    assert np.abs(sinh_covariance(sinh_input_covariance(R)) - R).max() < 1e-12
    # gain 0 with xi = 3: asinh(R sinh(b^2)) / b^2 has negative eigenvalues; clipped, Cov(x) misses R by < 1e-3
    t = make_task("nlgp", {"gain": 0.0, "kurtosis": "positive", "n_train": 10, "n_test": 1})
    assert 1e-6 < t.info["covariance_error"] < 1e-3


def test_the_sinh_covariance_formula_by_monte_carlo():
    # E[sinh(b u1) sinh(b u2)] = e^{b^2} sinh(b^2 rho): at b = 1, rho = 0.5, Cov(x) = 0.443, not 0.5
    g = torch.Generator().manual_seed(0)
    rho, b, n = 0.5, 1.0, 400_000
    u1 = torch.randn(n, generator=g, dtype=torch.float64)
    u2 = rho * u1 + math.sqrt(1 - rho**2) * torch.randn(n, generator=g, dtype=torch.float64)
    p = torch.sinh(b * u1) * torch.sinh(b * u2) / (math.exp(b * b) * math.sinh(b * b))
    predicted = float(sinh_covariance(np.array(rho), b))
    assert abs(float(p.mean()) - predicted) < 4 * float(p.std()) / math.sqrt(n)
    assert abs(predicted - rho) > 10 * float(p.std()) / math.sqrt(n)  # the test tells the formula from linear


def direction_stat(x):
    """Per example q = D sum_s (x_s / |x|)^4: a function of the direction x / |x| alone."""
    d = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x.shape[1] * (d**4).sum(1)


def two_sample_z(a, b):
    return (a.mean() - b.mean()) / math.sqrt(a.var() / len(a) + b.var() / len(b))


def test_elliptical_directions_are_the_gaussian_s_and_the_test_sees_other_controls():
    gauss, _, _ = draw("zero", seed=2)
    ell, _, _ = draw("elliptical", seed=3)  # independent draws: a comparison of distributions
    assert abs(two_sample_z(direction_stat(ell), direction_stat(gauss))) < 4
    # the same statistic separates the non-elliptical controls from the Gaussian: the test has power
    for other, sign in (("positive", 1), ("negative", -1)):
        x, _, _ = draw(other, seed=3)
        assert sign * two_sample_z(direction_stat(x), direction_stat(gauss)) > 8, other
    # by construction, at one seed the elliptical field is the Gaussian field times one positive radius per example
    same, _, _ = draw("elliptical", seed=2)
    ratio = same / gauss
    assert (ratio > 0).all() and np.allclose(ratio, ratio[:, :1], rtol=1e-4)


def test_zero_is_nlgp_gauss_and_negative_is_the_nlgp():
    kw = dict(n_train=200, n_test=50)
    z = make_task("nlgp", {**kw, "kurtosis": "zero"}, seed=4)
    assert torch.equal(z.x_train, make_task("nlgp-gauss", kw, seed=4).x_train)
    assert torch.equal(make_task("nlgp", {**kw, "kurtosis": "negative"}, seed=4).x_train,
                       make_task("nlgp", kw, seed=4).x_train)


def test_fresh_batches_follow_the_control():
    t = make_task("nlgp", {"kurtosis": "elliptical", "fresh": True, "n_train": 10, "n_test": 10}, seed=0)
    x, _ = t.sampler(0, 5, 4000)
    assert excess_kurtosis(x.double().numpy()) > 0.5


def test_an_unknown_kurtosis_is_one_line():
    with pytest.raises(ConfigError, match="kurtosis must be one of negative, zero, positive, elliptical, got 'big'"):
        make_task("nlgp", {"kurtosis": "big"})
