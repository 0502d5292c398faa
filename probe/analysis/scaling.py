"""Sample-complexity exponents: how fast test error falls with the number of training examples.

A model's learning curve is read as a power law err(n) = a n^(-b): b is its sample-complexity exponent (the
larger, the faster more data helps). It is fitted by least squares on the log-log curve,

    log err_i = log a - b log n_i,

over the sizes n_i of one seed; the exponent is reported as the mean, the standard deviation (ddof 1) and the
mean's 95% Student's t interval of the per-seed fits, so the spread says how much of a difference between two
models the seeds can carry. Points with err = 0 have no logarithm and are left out of their seed's fit; a seed with
fewer than two sizes left gives no fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.intervals import interval


def fit_power_law(n, err) -> tuple[float, float]:
    """(a, b) of err = a n^(-b) by least squares on (log n, log err); points with err <= 0 are left out.
    (nan, nan) when fewer than two distinct n remain."""
    n, err = np.asarray(n, dtype=float), np.asarray(err, dtype=float)
    keep = (err > 0) & (n > 0) & np.isfinite(err) & np.isfinite(n)
    n, err = n[keep], err[keep]
    if len(np.unique(n)) < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(n), np.log(err), 1)
    return float(np.exp(intercept)), float(-slope)


def seed_fits(df: pd.DataFrame, by, n: str = "n", err: str = "err", seed: str = "seed") -> pd.DataFrame:
    """The fit of each seed of each group of ``by``: one row per (group, seed) that gives one, with columns ``by``,
    ``seed``, ``exponent`` (b), ``prefactor`` (a) and ``sizes`` (the distinct n fitted). The per-run table the
    exponents' intervals over seeds are read from (:func:`probe.intervals.interval`)."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False) if by else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        for s, runs in g.groupby(seed, sort=True) if seed in g else [(float("nan"), g)]:
            a, b = fit_power_law(runs[n], runs[err])
            if np.isfinite(b):
                rows.append({**dict(zip(by, key)), "seed": s, "exponent": b, "prefactor": a,
                             "sizes": int(runs[n].nunique())})
    return pd.DataFrame(rows, columns=[*by, "seed", "exponent", "prefactor", "sizes"])


def sample_complexity(df: pd.DataFrame, by, n: str = "n", err: str = "err", seed: str = "seed") -> pd.DataFrame:
    """The exponent b of each group of ``by`` (e.g. the model), fitted per seed (:func:`seed_fits`) and summarized.

    ``df``: one row per run with columns ``by``, ``n`` (training examples), ``err`` (test error) and ``seed``.
    Returns one row per group: ``by``, ``exponent`` (mean b over seeds), ``exponent_sd`` (their sd, ddof 1; nan
    for one seed), ``exponent_ci_low`` and ``exponent_ci_high`` (the 95% Student's t interval of the mean over
    seeds, :mod:`probe.intervals`; nan for one seed), ``prefactor`` (the geometric mean of a), ``seeds`` (seeds
    fitted), ``sizes`` (distinct n),
    ``n_min``, ``n_max``, and ``err_at_n_max`` (mean test error at the largest n).
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False) if by else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        fits = seed_fits(g, [], n, err, seed)
        b, a = fits["exponent"].to_numpy(float), fits["prefactor"].to_numpy(float)
        rows.append({**dict(zip(by, key)),
                     "exponent": float(b.mean()) if len(b) else float("nan"),
                     "exponent_sd": float(b.std(ddof=1)) if len(b) > 1 else float("nan"),
                     "exponent_ci_low": interval(b)["ci_low"], "exponent_ci_high": interval(b)["ci_high"],
                     "prefactor": float(np.exp(np.log(a).mean())) if len(a) else float("nan"),
                     "seeds": len(b), "sizes": int(g[n].nunique()), "n_min": g[n].min(), "n_max": g[n].max(),
                     "err_at_n_max": float(g.loc[g[n] == g[n].max(), err].mean())})
    return pd.DataFrame(rows)
