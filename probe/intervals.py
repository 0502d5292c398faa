"""The one 95% interval over seeds the project reports: Student's t on the mean of n independent runs.

For values x_1 .. x_n (one measure, or one paired difference to a null, over n seeds):

    mean = (1/n) sum_i x_i,    sd = sqrt( sum_i (x_i - mean)^2 / (n - 1) ),
    interval = mean -+ t_{(1 + level)/2, n-1} sd / sqrt(n)

Seeds are independent draws of the whole training run, and with 3-5 of them the normal quantile 1.96 would be
too narrow: t_{0.975} is 4.30 at n = 3 and 2.78 at n = 5. Non-finite values (a run that did not finish, a measure
undefined on it) are left out before n is counted; n = 1 gives no interval (NaN bounds). :mod:`probe.sweep.stats`
(stats.csv of a sweep), :mod:`probe.sweep.claims` (the numbers the docs quote) and the mechanism scripts all
call this module, so a number in a doc and the same number in a script's printout agree.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def t_quantile(n: int, level: float = LEVEL) -> float:
    """t_{(1 + level)/2, n - 1}: the half-width factor of the t interval of a mean of n values (NaN for n < 2)."""
    if n < 2:
        return float("nan")
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, n - 1))


def interval(values, level: float = LEVEL) -> dict:
    """``n, mean, sd, ci_low, ci_high`` of the finite numbers among ``values`` (module docstring)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "sd": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else float("nan")
    half = t_quantile(n, level) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def mean_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of :func:`interval`: the tuple the mechanism scripts print and draw."""
    s = interval(values, level)
    return s["mean"], s["ci_low"], s["ci_high"]
