"""Statistics over seeds: mean, sd, n and a 95% interval of every measure, and the paired difference of every
measure to each of its nulls, per setting of a sweep (``probe sweep FOLDER --summary`` writes them to stats.csv).

For values x_1 .. x_n of one measure over the n seeds of one setting (every varied key but ``seed`` fixed):

    mean = (1/n) sum_i x_i,    sd = sqrt( sum_i (x_i - mean)^2 / (n - 1) ),
    95% interval = mean -+ t_{0.975, n-1} sd / sqrt(n)

(Student's t interval for the mean over seeds, computed once in :mod:`probe.intervals`: seeds are independent draws
of the whole training run, and with 3-5 of them the normal quantile 1.96 would be too narrow). n = 1 gives no
interval (NaN). For a measure M with a null M@R (the same measure on reference R of the same run: ``phase``,
``lcn``, ``gaussian``, ``init``, ...) the paired difference d_i = M_i - M@R_i is taken per seed first, then its
mean and t interval as above: the run's own null cancels what the seeds share, which an interval of M and an
interval of M@R side by side would not. An effect reads as detected where the difference's interval excludes 0.
"""

from __future__ import annotations

from probe.intervals import interval, t_quantile  # noqa: F401  (public names of this module)

INTERVAL = "t95"  # the interval's name in stats.csv: Student's t, 95%, over seeds
STAT_COLUMNS = ("measure", "null", "n", "mean", "sd", "ci_low", "ci_high", "interval")
NOT_MEASURES = ("run", "status", "seed", "step", "seconds", "error", "lr")


def measure_columns(df, by=()) -> list[str]:
    """The numeric columns of a summary that are measures (not a key of ``by``, not run bookkeeping)."""
    import pandas as pd

    out = []
    for c in df.columns:
        if c in by or c in NOT_MEASURES or str(c).startswith("varied") or not len(df):
            continue
        col = pd.to_numeric(df[c], errors="coerce")
        if col.notna().any() and not df[c].map(lambda v: isinstance(v, bool)).any():
            out.append(c)
    return out


def seed_stats(df, by=()):
    """Tidy statistics over seeds of a summary table (one row per run): one row per setting of ``by`` (the
    varied keys but seed), measure and null: ``null`` empty for the measure's own values, else the paired
    difference measure - measure@null. Only runs whose status is ``done`` count where a status column is there."""
    import pandas as pd

    if "status" in df.columns:
        df = df[df["status"] == "done"]
    by = [c for c in by if c in df.columns and c != "seed"]
    measures = measure_columns(df, by)
    plain = [m for m in measures if "@" not in str(m)]
    nulls = {m: [c.split("@", 1)[1] for c in measures if str(c).startswith(f"{m}@")] for m in plain}
    rows = []
    groups = df.groupby(by, sort=False, dropna=False) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(by, key))
        for m in measures:
            x = pd.to_numeric(g[m], errors="coerce")
            rows.append({**where, "measure": m, "null": "", **interval(x), "interval": INTERVAL})
            for ref in nulls.get(m, []):
                d = x - pd.to_numeric(g[f"{m}@{ref}"], errors="coerce")
                rows.append({**where, "measure": m, "null": ref, **interval(d), "interval": INTERVAL})
    out = pd.DataFrame(rows, columns=[*by, *STAT_COLUMNS])
    return out[out["n"] > 0].reset_index(drop=True)


def fmt(row, digits: int = 3) -> str:
    """``mean [ci_low, ci_high]`` of a stats row (the mean alone where n = 1)."""
    if row["n"] < 2 or row["ci_low"] != row["ci_low"]:
        return f"{row['mean']:.{digits}g}"
    return f"{row['mean']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]" if row["null"] \
        else f"{row['mean']:.{digits}g} [{row['ci_low']:.{digits}g}, {row['ci_high']:.{digits}g}]"
