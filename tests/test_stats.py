"""Statistics over seeds (probe/sweep/stats.py): the t interval and the paired difference to a null, on numbers whose
answer is known by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from probe.sweep.stats import interval, seed_stats, t_quantile


def test_t_interval_of_known_values():
    # x = 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.3027, half-width 4.3027 / sqrt(3) = 2.4841
    r = interval([1.0, 2.0, 3.0])
    assert r["n"] == 3 and r["mean"] == 2.0 and r["sd"] == pytest.approx(1.0)
    assert t_quantile(3) == pytest.approx(4.302653, abs=1e-6)
    assert r["ci_low"] == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-6)
    assert r["ci_high"] == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-6)
    # the t interval is wider than the normal one at small n, and one value has no interval
    assert t_quantile(5) > 1.96
    one = interval([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["ci_low"])
    assert interval([np.nan, None, 4.0, 6.0])["n"] == 2  # missing values are left out


def test_one_interval_for_sweeps_claims_and_mechanism_scripts():
    # the mechanism scripts' (mean, low, high) is the same t interval as stats.csv's, not the normal 1.96 one they
    # printed before (1 +- 1.96 / sqrt(3) would be [-0.13, 2.13]; t gives [-1.48, 3.48] for 0, 1, 2)
    from probe.intervals import mean_interval

    m, lo, hi = mean_interval([0.0, 1.0, 2.0])
    assert m == 1.0 and lo == pytest.approx(1 - 4.302653 / math.sqrt(3), abs=1e-6)
    assert hi == pytest.approx(1 + 4.302653 / math.sqrt(3), abs=1e-6)
    r = interval([0.0, 1.0, 2.0])
    assert (lo, hi) == (r["ci_low"], r["ci_high"])


def test_paired_difference_cancels_what_the_seeds_share():
    # a measure and its null that both move with the seed by a lot, and differ by exactly 0.03 +- 0.001: the
    # paired difference's interval is tight and excludes 0, while the two intervals side by side overlap
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.05, 5)
    eps = np.array([0.001, -0.001, 0.0, 0.0005, -0.0005])
    df = pd.DataFrame({"run": [f"s{i}" for i in range(5)], "status": "done", "model": "mlp", "seed": range(5),
                       "wm": 0.3 + shared + 0.03 + eps, "wm@phase": 0.3 + shared})
    st = seed_stats(df, ["model", "seed"])
    own = st[(st.measure == "wm") & (st.null == "")].iloc[0]
    null = st[(st.measure == "wm@phase") & (st.null == "")].iloc[0]
    diff = st[(st.measure == "wm") & (st.null == "phase")].iloc[0]
    assert diff["n"] == 5 and diff["mean"] == pytest.approx(0.03 + eps.mean())
    assert diff["sd"] == pytest.approx(np.std(eps, ddof=1))
    assert 0 < diff["ci_low"] < 0.03 < diff["ci_high"] < 0.032
    assert own["ci_low"] < null["ci_high"]  # unpaired, the two overlap: pairing is what detects the effect
    assert "seed" not in st.columns and set(st["model"]) == {"mlp"}


def test_settings_are_kept_apart_and_failed_runs_left_out():
    df = pd.DataFrame({"run": list("abcdef"), "status": ["done"] * 5 + ["failed"], "seed": [0, 1, 2, 0, 1, 2],
                       "width": [8, 8, 8, 64, 64, 64], "acc": [0.1, 0.2, 0.3, 0.7, 0.8, 99.0]})
    st = seed_stats(df, ["width", "seed"])
    by = {w: r for w, r in zip(st["width"], st.to_dict("records"))}
    assert by[8]["n"] == 3 and by[8]["mean"] == pytest.approx(0.2)
    assert by[64]["n"] == 2 and by[64]["mean"] == pytest.approx(0.75)  # the failed run's 99 is not counted
