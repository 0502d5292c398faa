"""Every figure of a structure measure draws the null that decides it (phase for locality and translation, lcn
for sharing), named so in the legend: read off the plotted lines of the matplotlib Axes."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from probe.figures import plots

# the numbers of an MNIST MLP of width 512: above the Gaussian and permuted lines, below the phase null
VALUE, GAUSS, PERM, PHASE, LCN = 0.036, 0.034, 0.025, 0.063, 0.95


def _runs():
    rows = []
    for step in (0, 10, 100, 1000):
        for metric, v in (("window_mass_3", VALUE), ("conv_distance_3", 0.5), ("movement", 0.1 * step)):
            rows.append(dict(run="mlp-s0", step=step, metric=metric, value=v, model="mlp", seed=0, task="mnist"))
    return pd.DataFrame(rows)


def _refs():
    rows = [("gaussian", "window_mass_3", GAUSS), ("permuted", "window_mass_3", PERM),
            ("phase", "window_mass_3", PHASE), ("lcn", "window_mass_3", 0.2), ("lcn", "conv_distance_3", LCN),
            ("phase", "conv_distance_3", 0.99), ("gaussian", "conv_distance_3", 1.0)]
    return pd.DataFrame([dict(run="mlp-s0", reference=k, metric=m, value=v, model="mlp", seed=0, task="mnist")
                         for k, m, v in rows])


def _reference_heights(ax):
    return sorted({round(float(np.mean(l.get_ydata())), 6) for l in ax.get_lines() if l.get_gid() == "reference"})


def _legend_texts(fig):
    return [t.get_text() for lg in fig.legends for t in lg.get_texts()]


def test_measures_figure_draws_each_measures_deciding_null_with_the_default_references():
    fig = plots.measures_figure(_runs(), _refs(), measures=["window_mass_3", "conv_distance_3", "movement"])
    wm, cd, mv = fig.axes[:3]
    assert _reference_heights(wm) == sorted([GAUSS, PERM, PHASE])  # phase drawn; lcn is not window mass's null
    assert _reference_heights(cd) == sorted([1.0, LCN])  # gaussian (permuted: none stored) and the lcn null
    assert _reference_heights(mv) == []
    texts = _legend_texts(fig)
    assert "deciding null: Fourier phases randomized" in texts
    assert "deciding null: random local fields, unshared" in texts
    # the value sits above the two drawn default lines and below the line that decides it
    assert GAUSS < VALUE < PHASE


def test_final_figure_draws_the_deciding_null_too():
    final = _runs()[lambda d: d.step == 1000].assign(width=512)
    refs = _refs().assign(width=512)
    fig = plots.final_figure(final, "width", ["window_mass_3", "conv_distance_3"], refs,
                             references=("gaussian", "permuted"))
    heights = sorted({round(float(l.get_ydata()[0]), 6) for l in fig.axes[0].get_lines() if l.get_gid() == "reference"})
    assert PHASE in heights and GAUSS in heights
    heights = sorted({round(float(l.get_ydata()[0]), 6) for l in fig.axes[1].get_lines() if l.get_gid() == "reference"})
    assert LCN in heights
    assert "deciding null: Fourier phases randomized" in _legend_texts(fig)


def _steps_table(shape="1x28x28"):
    rows = [dict(run="a", step=step, metric=m, value=0.3 + step * 1e-5, model="mlp", seed=0, input_shape=shape)
            for step in [0, *range(500, 6001, 500)] for m in ("grad_window_mass_3", "grad_com_share_3")]
    return pd.DataFrame(rows)


def test_step_axis_puts_no_decade_inside_the_linear_part_next_to_zero():
    fig = plots.measures_figure(_steps_table())
    ticks = list(fig.axes[0].get_xticks())
    assert ticks[0] == 0 and all(t >= 500 for t in ticks[1:]) and 1000 in ticks


def test_titles_wrap_and_windows_are_k_by_k_on_2d_inputs():
    fig = plots.measures_figure(_steps_table())
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert all(max(len(line) for line in t.splitlines()) <= 34 for t in titles)
    assert "3 x 3 window" in titles[0].replace("\n", " ") and "pixel" not in titles[0]
    one_d = plots.measures_figure(_steps_table("1x40"))
    assert "3-pixel window" in one_d.axes[0].get_title().replace("\n", " ")


def test_field_grid_says_its_drawing_once_and_gives_each_panels_amplitude():
    from pathlib import Path

    from probe.figures import tables as figdata
    from probe.figures.fields import caption_of

    fields = figdata.load_fields([Path(__file__).parent / "data" / "run_v1"], [0, 20])
    fig = plots.fields_grid_figure(fields)
    caption = caption_of(fields.geometry.iloc[0])
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    assert sum(caption in t for t in texts) == 1  # once, for the whole grid
    cells = [t for t in texts if ", step " in t]
    assert len(cells) == 2 and all("\n" not in t for t in cells)
    panels = [ax.get_title() for ax in fig.findobj(matplotlib.axes.Axes) if ax.get_title().startswith("unit ")]
    assert panels and all("max|w| " in t for t in panels)
