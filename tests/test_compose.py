"""Figures composed in a notebook: the public plot functions draw into given Axes (``ax=``) or a SubFigure
(``fig=``), the same lines as on their own figure."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import probe  # noqa: E402
from probe.geometry import Geometry  # noqa: E402


def runs_table():
    rows = []
    for r in range(2):
        for step in (0, 10, 100, 1000):
            for metric, v in (("ipr", 0.05 + 0.01 * r + step * 1e-5), ("window_mass_3", 0.2 + 0.01 * r),
                              ("test_acc", 0.1 + step / 2000)):
                rows.append(dict(run=f"m{r}", step=step, metric=metric, value=v, model=f"m{r}", seed=0))
    return pd.DataFrame(rows)


def lines(ax):
    return sorted(tuple(np.round(line.get_ydata(), 6)) for line in ax.get_lines() if len(line.get_xdata()) > 1)


def test_plot_functions_draw_into_given_axes(tmp_path):
    df = runs_table()
    fig = Figure(figsize=(9, 5), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    axes = top.subplots(1, 3)
    got = probe.measures_figure(df, measures=["ipr", "window_mass_3"], ax=axes[:2])
    assert got is top and probe.accuracy_figure(df, ax=axes[2]) is top
    alone = probe.measures_figure(df, measures=["ipr", "window_mass_3"])
    assert lines(axes[0]) == lines(alone.axes[0]) and lines(axes[1]) == lines(alone.axes[1]) and lines(axes[0])
    assert axes[0].get_legend() is not None and not fig.legends  # the legend on the first given panel
    W = np.random.default_rng(0).normal(size=(8, 20))
    assert probe.fields_figure(W, Geometry(1, (20,)), n_top=4, n_random=4, ncols=4, fig=bottom) is bottom
    fig.savefig(tmp_path / "composed.png", dpi=80)
    assert (tmp_path / "composed.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="this figure draws 2 panel"):
        probe.measures_figure(df, measures=["ipr", "window_mass_3"], ax=axes[0])
