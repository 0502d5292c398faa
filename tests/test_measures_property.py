"""Property test: every measure, on any matrix a checkpoint could hold, either refuses it with its one-line
ValueError (NaN or inf entries, no nonzero weight: the README's "Measures" section) or returns finite floats in
the measure's range, the same at any scale; never a silent NaN, never another error."""

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.geometry import Geometry
from probe.metrics import first_layer_measures, layer_measures, references

NONFINITE = "weights contain NaN or inf: a diverged run has no structure to measure"
ALL_ZERO = "weights are all zero: no receptive field to measure"

# defined for every accepted first layer (movement: when W0 is given)
ALWAYS = {"ipr", "ipr_frac_above", "spread", "window_mass_3", "window_mass_5", "zero_frac", "displacement_mean",
          "displacement_median", "shift_match_units", "conv_distance_3", "conv_distance_5"}
# left out where undefined: hoyer for one input; the spectra for one position or fields with no energy beyond
# their mean (constant fields); shift_match for a single unit (no other unit to match, self-matches excluded)
SOMETIMES = {"hoyer", "spectral_entropy", "peak_frequency", "shift_match"}
UNIT = {"ipr_frac_above", "window_mass_3", "window_mass_5", "zero_frac", "conv_distance_3", "conv_distance_5", "hoyer",
        "spectral_entropy"}  # in [0, 1]
EPS = 1e-9

geometries = st.one_of(
    st.builds(lambda c, l, p: Geometry(c, (l,), p), st.integers(1, 3), st.integers(1, 12), st.booleans()),
    st.builds(lambda c, h, w, p: Geometry(c, (h, w), p), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6),
              st.booleans()),
)


@st.composite
def layers(draw):
    """(W at scale 1, the scale it is measured at, geometry)."""
    geo = draw(geometries)
    m = draw(st.integers(1, 9))
    kind = draw(st.sampled_from(["normal", "zero_rows", "constant_rows", "rescaled", "huge", "tiny", "all_zero",
                                 "sparse", "nonfinite"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    W, scale = rng.normal(size=(m, geo.n_inputs)), 1.0
    if kind == "zero_rows":
        W[rng.random(m) < 0.5] = 0
    elif kind == "constant_rows":
        W[:] = rng.normal(size=(m, 1))
    elif kind == "rescaled":
        scale = draw(st.sampled_from([0.5, 3.0]))
    elif kind == "huge":
        scale = 1e150
    elif kind == "tiny":
        scale = 1e-150
    elif kind == "all_zero":
        W[:] = 0
    elif kind == "sparse":
        W *= rng.random(W.shape) < 0.1
    elif kind == "nonfinite":  # a diverged run: one entry is enough
        W[rng.integers(m), rng.integers(geo.n_inputs)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return W, scale, geo


def refusal(W):
    """The one-line message W must be refused with, or None if every measure must accept it."""
    if not np.isfinite(W).all():
        return NONFINITE
    if not W.any():
        return ALL_ZERO
    return None


def refused(message):
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


def _check_ranges(values: dict, m: int, geo: Geometry):
    """Every value a finite float, in its measure's range (the README's "Measures" tables)."""
    for k, v in values.items():
        assert isinstance(v, float) and math.isfinite(v), f"{k} = {v!r}"
    for k in UNIT & set(values):
        assert -EPS <= values[k] <= 1 + EPS, (k, values[k])
    if "ipr" in values:  # (the lcn null holds only the measures it is a null of)
        assert 1 / geo.n_positions - EPS <= values["ipr"] <= 1 + EPS
    if "shift_match" in values:  # left out for a single unit
        assert -1 - EPS <= values["shift_match"] <= 1 + EPS
    assert values["shift_match_units"] == int(values["shift_match_units"]) and 1 <= values["shift_match_units"] <= m
    assert values.get("zero_frac", 0.0) < 1  # some weight is nonzero, or W was refused
    for k in ("spread", "displacement_mean", "displacement_median", "movement"):
        assert values.get(k, 0.0) >= 0, k
    assert values.get("peak_frequency", 1.0) >= 1


def _check_first_layer(values: dict, W, geo: Geometry):
    assert ALWAYS <= set(values) <= ALWAYS | SOMETIMES | {"movement"}, set(values) ^ ALWAYS
    assert ("hoyer" in values) == (W.shape[1] > 1)
    _check_ranges(values, len(W), geo)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_first_layer_measures_are_refused_in_one_line_or_finite_in_range_and_scale_free(layer):
    W1, scale, geo = layer
    W = W1 * scale
    message = refusal(W)
    if message:
        with refused(message):
            first_layer_measures(W, geo, W0=np.ones_like(W))
        return
    values = first_layer_measures(W, geo, W0=np.ones_like(W))
    _check_first_layer(values, W, geo)
    if scale != 1:  # the measures are scale-free (movement is relative to W0, so it is not)
        at_1 = first_layer_measures(W1, geo)
        assert set(at_1) == set(values) - {"movement"}
        for k, v in at_1.items():
            assert values[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_layer_measures_and_references_are_refused_in_one_line_or_finite_in_range(layer):
    W1, scale, geo = layer
    W = W1 * scale
    names = ["ipr", "window_mass_3", "shift_match"]
    message = refusal(W)
    if message:
        with refused(message):
            layer_measures(W)
        with refused(message):
            references(W, geo, names=names)
        return
    m, n = W.shape
    lm = layer_measures(W)
    assert {"effective_rank", "stable_rank"} <= set(lm) <= {"effective_rank", "stable_rank", "alpha"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in lm.values()), lm
    assert 1 - EPS <= lm["effective_rank"] <= min(m, n) + EPS and 1 - EPS <= lm["stable_rank"] <= min(m, n) + EPS
    if scale != 1:
        assert lm == pytest.approx(layer_measures(W1), rel=1e-9)
    refs = references(W, geo, names=names)
    assert set(refs) == {"gaussian", "permuted", "phase", "lcn"}
    for null, ref in refs.items():  # each null holds the asked measures it is a null of (phase, lcn: some of them)
        assert set(ref) <= {"ipr", "window_mass_3", "shift_match", "shift_match_units"}, null
        _check_ranges(ref, m, geo)
    for null in ("gaussian", "permuted"):
        assert {"ipr", "window_mass_3"} <= set(refs[null]), null
    # the permuted null moves input positions only: each field keeps its concentration
    assert refs["permuted"]["ipr"] == pytest.approx(first_layer_measures(W, geo, names=["ipr"])["ipr"], rel=1e-9)


@pytest.mark.parametrize("W0, message", [
    (np.zeros((4, 10)), "initial weights are all zero: no receptive field to measure"),
    (np.full((4, 10), np.nan), "initial weights contain NaN or inf: a diverged run has no structure to measure"),
])
def test_a_bad_initialization_is_refused_naming_the_initial_weights(W0, message):
    with refused(message):
        first_layer_measures(np.ones((4, 10)), Geometry(1, (10,)), names=["ipr"], W0=W0)


def test_an_all_zero_layer_is_a_clear_error_not_nan():
    with refused(ALL_ZERO):
        first_layer_measures(np.zeros((4, 10)), Geometry(1, (10,)), names=["ipr"])


def test_conv_distance_of_near_shared_local_fields_does_not_depend_on_their_scale():
    """100 units with 3-wide fields near 4 shared filters: every crop holds all of its unit's energy, so the
    clustering order rests on the tie-break; it used to hash the crops' bytes, and doubling the weights moved
    conv_distance_3 by up to 0.07."""
    rng = np.random.default_rng(0)
    filters = rng.normal(size=(4, 3))
    W = np.zeros((100, 40))
    for i, s in enumerate(rng.integers(0, 38, size=100)):
        W[i, s : s + 3] = filters[i % 4] + 0.05 * rng.normal(size=3)
    g = Geometry(1, (40,))
    at_1 = first_layer_measures(W, g, names=["conv_distance_3", "conv_distance_5"])
    assert 0.05 < at_1["conv_distance_3"] < 0.95  # neither an exact convolution nor unshared
    for scale in (2.0, 3.7, 1e-3):
        assert first_layer_measures(W * scale, g, names=["conv_distance_3", "conv_distance_5"]) == pytest.approx(
            at_1, rel=1e-9)
