"""Property test: every measure, on any matrix a checkpoint could hold, returns finite numbers or raises a
clear ValueError; never a silent NaN."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.geometry import Geometry
from probe.metrics import first_layer_measures, layer_measures, references

geometries = st.one_of(
    st.builds(lambda c, l, p: Geometry(c, (l,), p), st.integers(1, 3), st.integers(1, 12), st.booleans()),
    st.builds(lambda c, h, w, p: Geometry(c, (h, w), p), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6), st.booleans()),
)


@st.composite
def layers(draw):
    geo = draw(geometries)
    m = draw(st.integers(1, 9))
    kind = draw(st.sampled_from(["normal", "zero_rows", "constant_rows", "huge", "tiny", "all_zero", "sparse"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    W = rng.normal(size=(m, geo.n_inputs))
    if kind == "zero_rows":
        W[rng.random(m) < 0.5] = 0
    elif kind == "constant_rows":
        W[:] = rng.normal(size=(m, 1))
    elif kind == "huge":
        W *= 1e150
    elif kind == "tiny":
        W *= 1e-150
    elif kind == "all_zero":
        W[:] = 0
    elif kind == "sparse":
        W *= rng.random(W.shape) < 0.1
    return W, geo


def _check(values: dict):
    assert values  # something is always defined for a layer that has weights
    for k, v in values.items():
        assert isinstance(v, float), k
        assert math.isfinite(v), f"{k} = {v}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_first_layer_measures_are_finite_or_a_clear_error(layer):
    W, geo = layer
    try:
        values = first_layer_measures(W, geo, W0=np.ones_like(W))
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        return
    _check(values)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_layer_measures_and_references_are_finite_or_a_clear_error(layer):
    W, geo = layer
    try:
        _check(layer_measures(W))
        for ref in references(W, geo, names=["ipr", "window_mass_3", "shift_match"]).values():
            _check(ref)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)


def test_an_all_zero_layer_is_a_clear_error_not_nan():
    with pytest.raises(ValueError, match="zero"):
        first_layer_measures(np.zeros((4, 10)), Geometry(1, (10,)), names=["ipr"])
