"""Figures of runs, each one function from a tidy table (probe/figures/tables.py) to a matplotlib Figure.

One shared theme (:func:`paper_theme`: seaborn ``context="paper"``, TrueType fonts in PDFs); scripts and notebooks
restyle a returned figure or call the function inside their own theme. :func:`save` writes PDF and PNG. To compose
a figure in a notebook, pass ``ax=`` (as many Axes as the figure has panels, in row order; the legend then goes on
the first of them) and the function draws there and returns the figure those Axes are on; fields_grid_figure,
whose panels are small figures, takes ``fig=`` (a Figure or SubFigure).

Lines: without ``group_by`` every run is its own line, coloured by ``hue`` (a config column, default the run).
With ``group_by KEY`` the runs sharing KEY's value form one line, their mean, with a band of its 95% interval
(Student's t over the n runs in it, seeds: mean -+ t_{0.975, n-1} sd / sqrt(n); the legend says n), clipped to the
range the measure lives in (a share stays in [0, 1]:
:func:`probe.figures.labels.value_range`); ``hue`` then colours groups (default KEY) and KEY sets the line style
when they differ. Every evaluated step is a dot on its line. Steps are on a symmetric-log axis so that step 0 (the
initialization) stays on it, linear below the first logged step. References (reference.json) are thin horizontal
lines in the colour of the line they belong to, each kind with its own hollow marker and dash pattern (Gaussian
weights, input positions permuted, Fourier phases randomized, random local fields, the initializer on other
seeds: :data:`REFERENCE_TEXT`), at their mean with a band of its 95% t interval over the line's runs (seeds); the
markers tell
them from the groups' line styles.

Words, not code names (:mod:`probe.figures.labels`): panels are titled with what the measure is, legends with the
config key in words and its values (``NLGP gain g``: 1, 100), runs by the config values that differ between them.
References are drawn per task and input size: two tasks' nulls are never averaged into one line.
"""

from __future__ import annotations

import contextlib
import textwrap

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from probe.figures import labels as words
from probe.figures.fields import RC, caption_of, draw_fields, save_figure
from probe.metrics import registry
from probe.analysis.verdicts import deciding_null
from probe.sweep.stats import t_quantile

# y-axis label per metric, what the number means and its unit or range, and the metrics drawn in percent: their
# registry records' (probe.metrics.registry.KEYS); panels are titled with the metric's own name, the key of
# metrics.jsonl and reference.json
LABELS = registry.labels()
PERCENT = registry.percent_keys()
# dash patterns unlike seaborn's line styles (solid, (4, 1.5), (1, 1), (3, 1.25, 1.5, 1.25), ...), which mark groups
REFERENCE_STYLE = {"gaussian": (0, (1, 3)), "permuted": (0, (7, 2, 1, 2, 1, 2)), "init": (0, (2, 4)),
                   "phase": (0, (5, 1.5, 1, 1.5)), "lcn": (0, (8, 3)), "init_seeds": (0, (1, 1.5)),
                   "mlps": (0, (2, 4)), "mlp": (0, (4, 1, 1, 1))}
REFERENCE_MARKER = {"gaussian": "v", "permuted": "D", "init": "s", "phase": "P", "lcn": "h", "init_seeds": "^",
                    "mlps": "X", "mlp": "p"}
REFERENCE_TEXT = {"gaussian": "Gaussian weights", "permuted": "positions permuted", "init": "initialization",
                  "phase": "Fourier phases randomized", "lcn": "random local fields, unshared",
                  "init_seeds": "the initializer, other seeds", "mlps": "two plain MLPs, seeds differ",
                  "mlp": "plain MLP, same shape"}
# nulls of end-of-run values stored beside them as NAME@KIND (result.json, procedure.json), not in reference.json:
# the run's initialization, the line between two plain MLPs, the plain MLP of the same shape
FINAL_NULLS = ("init", "mlps", "mlp", "permuted", "gaussian")
STEP_LABEL = "training step (log scale, 0 = init)"


@contextlib.contextmanager
def paper_theme():
    """The shared look: seaborn paper context, white grid, TrueType fonts embedded in PDFs (pdf.fonttype 42)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"), mpl.rc_context(RC):
        yield


def save(fig: Figure, out_dir, name: str) -> list:
    """Write ``fig`` as OUT_DIR/NAME.pdf and OUT_DIR/NAME.png; returns the two paths."""
    from pathlib import Path

    return save_figure(fig, Path(out_dir) / f"{name}.pdf")


# -- lines over steps --------------------------------------------------------------------------------------------
def colour_key(hue: str | None, group_by: str | None) -> str:
    """The column that sets a line's colour."""
    return hue or group_by or "run"


def _names(d: pd.DataFrame, key: str, runs: dict | None = None) -> dict:
    """Raw value -> words for the values of column ``key``: run names from :func:`probe.figures.labels.run_labels`
    (or ``runs``), other keys through :func:`probe.figures.labels.value_text`."""
    if key == "run":
        return runs if runs is not None else words.run_labels(d)
    return {v: words.value_text(key, v) for v in dict.fromkeys(d[key])}


def palette(d: pd.DataFrame, key: str, runs: dict | None = None, names: dict | None = None) -> dict:
    """Colour per value of ``key`` (in words, the way :func:`_categorical` writes it), shared by lines and
    their references. Numbers (widths, gains) are sorted and get a sequential palette; other values keep their
    order of appearance and get seaborn's categorical colours."""
    levels = list(dict.fromkeys(d[key]))
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in levels)
    if numeric and len(levels) > 2:
        levels, colours = sorted(levels), sns.color_palette("flare", n_colors=len(levels))
    else:
        colours = sns.color_palette(n_colors=len(levels))
    names = names if names is not None else _names(d, key, runs)
    return dict(zip((names.get(v, str(v)) for v in levels), colours))


def t_half(v) -> float:
    """Half-width of the 95% interval of the mean of the values ``v`` (runs, seeds): t_{0.975, n-1} sd / sqrt(n),
    Student's t (:func:`probe.sweep.stats.interval`); 0 for fewer than two values (no interval to draw)."""
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    return 0.0 if len(v) < 2 else t_quantile(len(v)) * float(np.std(v, ddof=1)) / np.sqrt(len(v))


def _t_band(lo: float, hi: float):
    """seaborn's ``errorbar``: the 95% t interval of the mean over the runs at a step, clipped to [lo, hi] (the
    measure's range)."""
    def band(v):
        m, h = float(np.mean(v)), t_half(v)
        return max(lo, m - h), min(hi, m + h)

    return band


def _interval_note(d: pd.DataFrame, keys: list, what: str = "band") -> list:
    """A legend entry saying what the bands are and n, the runs (seeds) per line: ``keys`` are the line's columns."""
    from matplotlib.patches import Patch

    keys = [k for k in dict.fromkeys(keys) if k in d.columns]
    if not keys or "run" not in d.columns or not len(d):
        return []
    n = d.groupby(keys, sort=False).run.nunique()
    counts = f"n = {n.min()}" if n.min() == n.max() else f"n = {n.min()}-{n.max()}"
    return [Patch(color="0.6", alpha=0.35, lw=0, label=f"{what}: 95% t interval, {counts}")]


def _line_kwargs(d: pd.DataFrame, hue: str | None, group_by: str | None, colours: dict,
                 limits=(-np.inf, np.inf)) -> dict:
    """seaborn.lineplot arguments for the line rules of the module docstring; ``d``'s hue and style columns are
    named in words (:func:`_in_words`), ``limits`` the range the band is clipped to."""
    key = words.key_text(colour_key(hue, group_by))
    common = dict(hue=key, hue_order=list(colours), palette=colours, marker="o", markersize=3.2, markeredgewidth=0)
    if group_by is None:
        return dict(units="__run__", estimator=None, **common)
    style_key = words.key_text(group_by)
    style = style_key if key != style_key and d[style_key].nunique() > 1 else None
    return dict(style=style, errorbar=_t_band(*limits), estimator="mean", **common)


def _check_keys(d: pd.DataFrame, *keys) -> None:
    for k in keys:
        if k is not None and k not in d.columns:
            cols = sorted(c for c in d.columns if c not in ("metric", "value", "step"))
            raise KeyError(f"no config key {k!r} in these runs; valid keys: {', '.join(cols)}")


def _step_axis(ax, steps) -> None:
    positive = np.asarray(sorted(s for s in steps if s > 0))
    linthresh = float(positive[0]) if len(positive) else 1.0
    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.8)
    top = max(steps) * 1.05 if len(steps) else 1
    ax.set_xlim(0, top)
    # 0, then the decades from the first logged step on: a decade inside the linear part [0, linthresh) would sit
    # on top of the 0 (steps 0, 500, 1000, ...: 10^2 at a fifth of 500's place)
    decades = [10.0 ** k for k in range(int(np.ceil(np.log10(linthresh))), int(np.floor(np.log10(top))) + 1)]
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.xaxis.set_major_locator(FixedLocator([0.0, *(decades or [linthresh])]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(STEP_LABEL)


def panel_title(metric: str, data: pd.DataFrame | None = None, width: int = 34) -> str:
    """A panel's title in words, wrapped to ``width`` characters so that adjacent panels' titles never meet; a
    window of k pixels is written k x k when every run's input is 2-D (its ``input_shape`` is C x H x W)."""
    import re
    import textwrap

    text = words.title(metric)
    shapes = set(data["input_shape"].dropna()) if data is not None and "input_shape" in data.columns else set()
    dims = {str(s).count("x") for s in shapes}
    if dims == {2}:
        text = re.sub(r"(\d+)-pixel (window|field)", r"\1 x \1 \2", text)
    elif 2 in dims:
        text = re.sub(r"(\d+)-pixel (window|field)", r"\1-pixel (\1 x \1 on images) \2", text)
    return textwrap.fill(text, width)


def _categorical(d: pd.DataFrame, *keys, runs: dict | None = None) -> pd.DataFrame:
    """Hue/style columns as words (strings: seaborn would draw numbers, widths and gains, on a continuous colour
    scale); ``run`` by the run names of ``runs`` (default :func:`probe.figures.labels.run_labels` of ``d``). The
    folder name stays in ``__run__``, a line's identity."""
    d = d.copy()
    if "run" in d.columns:
        d["__run__"] = d["run"]
    for k in dict.fromkeys(keys):
        if k is not None and k in d.columns:
            names = _names(d, k, runs)
            d[k] = d[k].map(lambda v, names=names: names.get(v, str(v)))
    return d


def _in_words(d: pd.DataFrame, *keys) -> pd.DataFrame:
    """``d`` with the columns ``keys`` renamed to their words (seaborn writes column names into legends)."""
    return d.rename(columns={k: words.key_text(k) for k in keys if k is not None and k != words.key_text(k)})


def reference_keys(refs: pd.DataFrame | None, line_keys: list) -> list:
    """The columns a reference line is drawn per: its line's keys, and the task and input size, so that the nulls
    of two tasks or input sizes are never averaged into one line (the first key sets the colour)."""
    extra = [k for k in ("task", "input_shape") if refs is not None and k in refs.columns and k not in line_keys]
    return list(line_keys) + extra


def _draw_references(ax, refs: pd.DataFrame | None, metric: str, keys: list, colours: dict, kinds) -> list:
    """Each line's references of ``metric`` (the runs sharing the values of ``keys``, colour first) as horizontal
    lines in the line's colour at their mean over its runs (seeds), with a band of that mean's 95% t interval;
    returns legend handles."""
    from matplotlib.lines import Line2D

    handles = []
    if refs is None or not len(refs):
        return handles
    r = refs[refs.metric == metric]
    keys = reference_keys(r, keys)
    n = 0
    for kind in kinds:
        rk = r[r.reference == kind]
        if not len(rk):
            continue
        for values, v in rk.groupby(keys, sort=False).value:
            c = colours.get(values[0])
            if c is None:
                continue
            if t_half(v) > 0:
                ax.axhspan(v.mean() - t_half(v), v.mean() + t_half(v), color=c, alpha=0.08, lw=0, gid="reference")
            # markers at a few places along the axis, shifted per line so that lines at one height stay apart
            xs = (np.arange(4) + 0.5 + 0.17 * (n % 5)) / 4.4
            ax.plot([0, *xs, 1], [v.mean()] * (len(xs) + 2), transform=ax.get_yaxis_transform(), color=c,
                    ls=REFERENCE_STYLE[kind], lw=0.9, alpha=0.85, marker=REFERENCE_MARKER[kind], ms=3.5, mfc="white",
                    mew=0.8, markevery=slice(1, -1), gid="reference", zorder=1.5)
            n += 1
        handles.append(Line2D([], [], color="0.3", ls=REFERENCE_STYLE[kind], lw=0.9, marker=REFERENCE_MARKER[kind],
                              ms=3.5, mfc="white", mew=0.8, label=reference_label(kind, metric)))
    return handles


def with_deciding_null(metric: str, kinds) -> tuple:
    """``kinds`` and the null that decides ``metric`` (probe/analysis/verdicts.py: phase for locality and
    translation structure, lcn for weight sharing, the initializer on other seeds for concentration), which every
    figure of a structure measure draws whatever ``kinds`` asks."""
    kind = deciding_null(metric)
    return tuple(kinds) + ((kind,) if kind is not None and kind not in kinds else ())


def reference_label(kind: str, metric: str, word: str = "reference") -> str:
    """A reference's legend entry; the null that decides ``metric`` says so."""
    if deciding_null(metric) == kind:
        return f"deciding null: {REFERENCE_TEXT[kind]}"
    return f"{word}: {REFERENCE_TEXT[kind]}"


def _panels(ax, figsize, nrows: int = 1, ncols: int = 1):
    """(figure, axes as an nrows x ncols array): a new Figure with those panels or, given ``ax`` (an Axes, or as
    many Axes as the figure has panels, in row order: a figure composed in a notebook), the figure they are on and
    those axes."""
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    from matplotlib.axes import Axes

    axes = np.empty(1, dtype=object)
    if isinstance(ax, Axes):
        axes[0] = ax
    else:
        axes = np.empty(len(np.ravel(np.asarray(ax, dtype=object))), dtype=object)
        axes[:] = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != nrows * ncols:
        raise ValueError(f"ax: this figure draws {nrows * ncols} panel(s) ({nrows} x {ncols}); pass that many Axes, "
                         f"got {len(axes)}")
    return axes[0].figure, axes.reshape(nrows, ncols)


def _figure_legend(fig, ax, own: bool, *args, **kwargs):
    """A legend outside the panels of a figure drawn here, or on ``ax`` (the first panel) when the axes were given
    (a figure composed elsewhere has no room set aside beside its panels)."""
    if own:
        return fig.legend(*args, **kwargs)
    kwargs.pop("loc", None)
    return ax.legend(*args, **kwargs)


def _legend(fig: Figure, axes, extra: list, title: str | None, own: bool = True) -> None:
    """One legend for the figure, right of the panels, from the first panel's lines plus the references (on the
    first panel when the axes were given: ``own`` False). With hue and style both in use seaborn writes their names
    as entries of their own: then no title."""
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        if ax.get_legend():
            ax.get_legend().remove()
    seen = set(labels)
    extra = [h for h in extra if h.get_label() not in seen and not seen.add(h.get_label())]
    handles, labels = handles + extra, labels + [h.get_label() for h in extra]
    title = words.key_text(title)
    if handles:
        _figure_legend(fig, axes[0], own, handles, labels, loc="outside right upper",
                       title=None if title in labels else title, frameon=False)


def tracked_in(metrics) -> list[str]:
    """The tracked measures among ``metrics`` (and the keys they write), in :data:`LABELS` order, then the rest."""
    tracked = {k for m in registry.MEASURES.values() if m.trackable for k in m.outputs}
    present = set(metrics) & tracked
    return [k for k in LABELS if k in present] + sorted(present - set(LABELS))


def step_nulls(metric: str, present) -> list[str]:
    """The per-step nulls of ``metric`` among the metric keys ``present``: keys ``NAME@KIND`` that a tracker writes
    beside a measure at every tracking step (``grad_window_mass_3@phase``, ``grad_com_share_3@chance``), where NAME
    is the measure or, for the ΔW and pull twins (``grad_``, ``delta_``), the measure it is a twin of
    (``conv_share@random`` for ``grad_conv_share``)."""
    base = metric.split("_", 1)[1] if metric.startswith(("grad_", "delta_")) else metric
    return sorted(k for k in present if "@" in k and k.split("@", 1)[0] in (metric, base))


def _draw_step_nulls(ax, d: pd.DataFrame, nulls, colour_col: str, colours: dict) -> list:
    """Each line's per-step nulls (:func:`step_nulls`): the mean over its runs at each step, a thin dotted line in
    the line's colour with hollow markers; returns legend handles."""
    from matplotlib.lines import Line2D

    handles = []
    for k in nulls:
        dk = d[d.metric == k]
        for value, v in dk.groupby(colour_col, sort=False):
            c = colours.get(value)
            if c is None:
                continue
            mean = v.groupby("step").value.mean()
            ax.plot(mean.index, mean.values, color=c, ls=":", lw=1.0, marker="D", ms=3, mfc="white", mew=0.8,
                    alpha=0.9, gid="step-null", zorder=1.6)
        kind = k.split("@", 1)[1]
        handles.append(Line2D([], [], color="0.3", ls=":", lw=1.0, marker="D", ms=3, mfc="white", mew=0.8,
                              label=f"null at each step: {STEP_NULL_TEXT.get(kind, kind)}"))
    return handles


# what a per-step null ``NAME@KIND`` is, for the legend
STEP_NULL_TEXT = {"phase": "phases randomized", "chance": "isotropic (k/|S|)", "random": "random direction",
                  "local": "local, unshared", "units": "another unit's window"}


def measures_figure(runs: pd.DataFrame, refs: pd.DataFrame | None = None, measures=None, hue: str | None = None,
                    group_by: str | None = None, references=("gaussian", "permuted"), ncols: int = 3,
                    ax=None) -> Figure:
    """Tracked measures over training steps, one panel per measure, references as horizontal lines.

    Args:
        runs: :func:`probe.figures.tables.load_runs` table.
        refs: :func:`probe.figures.tables.load_references` table (None: no references drawn).
        measures: metric names to draw (default: every tracked measure present, in :data:`LABELS` order).
        hue, group_by: config keys (module docstring).
        references: which references to draw, in each line's colour (``init`` is left out by default: it is
            every line's value at step 0); each structure measure's deciding null (:func:`with_deciding_null`)
            is drawn beside them, named so in the legend.
        ax: draw into these Axes (one per panel, in row order) instead of a new figure.
    """
    _check_keys(runs, hue, group_by)
    present = set(runs.metric)
    if measures is None:
        measures = tracked_in(present)
    asked = list(measures)
    measures = [m for m in measures if m in present]
    if not measures:
        if asked:
            raise ValueError(f"{', '.join(asked)} not tracked in these runs")
        raise ValueError("no tracked measures in these runs (train with --track, or run probe analyze)")
    key = colour_key(hue, group_by)
    names = words.run_labels(runs)
    colours = palette(runs, key, names)
    d = _categorical(runs[runs.metric.isin(measures)], hue, group_by, "run", runs=names)
    refs = _categorical(refs, hue, group_by, "run", runs=names) if refs is not None else None
    line_keys = [key] + ([group_by] if group_by and group_by != key else [])
    nulls = _categorical(runs[runs.metric.str.contains("@", regex=False)], hue, group_by, "run", runs=names)
    ncols = min(ncols, len(measures))
    nrows = -(-len(measures) // ncols)
    own = ax is None
    with paper_theme():
        fig, axes = _panels(ax, (2.9 * ncols + 1.9, 2.5 * nrows), nrows, ncols)
        axes = axes.ravel()
        extra = []
        for ax, m in zip(axes, measures):
            scale = 100.0 if m in PERCENT else 1.0  # accuracies in %, as their axis label says
            dm = _in_words(d[d.metric == m], hue, group_by)
            dm = dm.assign(value=scale * dm.value)
            sns.lineplot(data=dm, x="step", y="value", ax=ax,
                         **_line_kwargs(dm, hue, group_by, colours, words.value_range(m, scale)))
            extra += _draw_references(ax, refs, m, line_keys, colours, with_deciding_null(m, references))
            extra += _draw_step_nulls(ax, nulls, step_nulls(m, present), key, colours)
            _step_axis(ax, dm.step.unique())
            ax.set_title(panel_title(m, runs))
            ax.set_ylabel(LABELS.get(m, "value"))
            if m.endswith(("_growth", "_growth_all")):  # ratios to the start: x0.9 and x45 on one panel
                ax.set_yscale("log")
        for ax in axes[len(measures):]:
            ax.set_axis_off()
        if group_by is not None:
            extra += _interval_note(d, line_keys)
        _legend(fig, axes[: len(measures)], extra, key, own)
    return fig


def accuracy_figure(runs: pd.DataFrame, hue: str | None = None, group_by: str | None = None, ax=None) -> Figure:
    """Test accuracy (%) over training steps, lines as :func:`measures_figure`; test loss for tasks without
    accuracy (regression). ``ax``: draw into this Axes instead of a new figure."""
    _check_keys(runs, hue, group_by)
    metric = "test_acc" if (runs.metric == "test_acc").any() else "test_loss"
    names = words.run_labels(runs)
    colours = palette(runs, colour_key(hue, group_by), names)
    d = _in_words(_categorical(runs[runs.metric == metric], hue, group_by, "run", runs=names), hue, group_by)
    if not len(d):
        raise ValueError("no test_acc or test_loss rows in these runs")
    scale = 100.0 if metric == "test_acc" else 1.0
    d = d.assign(value=scale * d.value)
    key = colour_key(hue, group_by)
    own = ax is None
    with paper_theme():
        fig, axes = _panels(ax, (4.8, 2.7))
        ax = axes[0, 0]
        sns.lineplot(data=d, x="step", y="value", ax=ax,
                     **_line_kwargs(d, hue, group_by, colours, words.value_range(metric, scale)))
        _step_axis(ax, d.step.unique())
        if metric == "test_loss":
            ax.set_yscale("log")
        ax.set_ylabel(LABELS[metric])
        lines = [words.key_text(k) for k in (key, group_by) if k is not None]
        _legend(fig, [ax], _interval_note(d, lines) if group_by is not None else [], key, own)
    return fig


# -- end-of-run values against a swept key ---------------------------------------------------------------------
def _ordered(values) -> list:
    """Distinct values in order: numbers sorted, anything else in order of appearance."""
    levels = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in levels):
        return sorted(levels)
    return levels


def final_figure(final: pd.DataFrame, x: str, metrics, refs: pd.DataFrame | None = None, hue: str | None = None,
                 references=("permuted",), ncols: int = 3, xlabel: str | None = None, ax=None) -> Figure:
    """End-of-run values against a swept config key, one panel per metric.

    Each run is a small dot; each (hue, x) group's mean over its runs (seeds) a large marker with a bar of its 95%
    t interval (the legend says n), joined along x when x is numeric. ``x``'s values are ordered categories, evenly
    spaced (numbers sorted, other values in the order of the runs). References are hollow markers in the
    group's colour, joined by the reference's dash pattern: for tracked measures the ``references`` kinds of
    :func:`probe.figures.tables.load_references` (a kind equal to the value itself, like a permutation-invariant
    measure's ``permuted``, is left out), for final measures without those their ``NAME@KIND`` nulls
    (:data:`FINAL_NULLS`: ``init``, the run's own initialization; ``mlps``, the same line between two plain MLPs;
    ``mlp``, the plain MLP of the same shape; ``permuted`` and ``gaussian``, a functional measure's own nulls,
    e.g. ``time_sharing@permuted``). Accuracies are in %; a metric spanning more than two decades is on a log axis.

    Args:
        final: :func:`probe.figures.tables.load_final` table.
        x: config key along the x axis (``task_opts.n_train``, ``task.n_train``, ``variant``).
        metrics: metric names, one panel each, in order (missing ones are left out).
        refs: :func:`probe.figures.tables.load_references` table, or None.
        hue: config key that colours groups (default: one colour).
    """
    from matplotlib.lines import Line2D

    _check_keys(final, x, hue)
    present = set(final.metric)
    wanted, metrics = list(metrics), [m for m in metrics if m in present]
    if not metrics:
        raise ValueError(f"none of the metrics {', '.join(wanted) or '(none given)'} in these runs")
    levels = _ordered(final[x])
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in levels)
    pos = {words.value_text(x, v): i for i, v in enumerate(levels)}
    key = "__hue__"  # a copy of the hue column (which may be x itself: --x width --hue width); without hue, one colour
    final = final.assign(__hue__=final[hue] if hue is not None else "all")
    hue_names = _names(final, hue) if hue is not None else {"all": "all"}
    colours = palette(final, key, names=hue_names)
    d = final.copy()
    d[key] = d[key].map(lambda v: hue_names.get(v, str(v)))
    d[x] = d[x].map(lambda v: words.value_text(x, v))
    r = None
    if refs is not None and len(refs):  # each run's group and x from the final table (task.n_train is only there)
        groups_of = d[["run", key, x]].drop_duplicates("run")
        r = refs[["run", "reference", "metric", "value"]].merge(groups_of, on="run")
    groups = list(colours)
    offset = {g: (i - (len(groups) - 1) / 2) * min(0.12, 0.5 / max(len(groups), 1)) for i, g in enumerate(groups)}
    ncols = min(ncols, len(metrics))
    nrows = -(-len(metrics) // ncols)
    used: dict = {}
    own = ax is None
    with paper_theme():
        fig, axes = _panels(ax, (2.9 * ncols + 1.9, 2.5 * nrows), nrows, ncols)
        axes = axes.ravel()
        for ax, m in zip(axes, metrics):
            scale = 100.0 if m in PERCENT else 1.0
            dm = d[d.metric == m]
            lines = {}
            for (g, xv), v in dm.groupby([key, x], sort=False).value:
                px = pos[xv] + offset[g]
                ax.scatter(np.full(len(v), px), scale * v, s=9, color=colours[g], alpha=0.45, lw=0)
                lines.setdefault(g, []).append((px, scale * v.mean()))
                if t_half(v) > 0:  # clipped to the values the measure can take, as the line figures' bands are
                    lo, hi = words.value_range(m, scale)
                    ax.vlines(px, max(lo, scale * (v.mean() - t_half(v))), min(hi, scale * (v.mean() + t_half(v))),
                              color=colours[g], lw=1.0, gid="interval")
            for g, pts in lines.items():
                pts.sort()
                ax.plot(*zip(*pts), "o-" if numeric else "o", ms=4.5, lw=1.2, color=colours[g],
                        label=g if hue else None)
            null = {}
            for k in with_deciding_null(m, references) if r is not None else ():
                rk = r[(r.metric == m) & (r.reference == k)]
                same = rk.merge(dm[["run", "value"]], on="run", suffixes=("", "_run"))
                # a null equal to the value itself (ipr, hoyer, zero_frac under a permutation of positions)
                # says nothing: leave it out
                if len(rk) and not np.allclose(same.value, same.value_run, rtol=1e-9, atol=1e-12):
                    null[k] = rk
            if not null:
                null = {k: d[d.metric == f"{m}@{k}"] for k in FINAL_NULLS if f"{m}@{k}" in present}
            for kind, rk in null.items():
                pts = {}
                for (g, xv), v in rk.groupby([key, x], sort=False).value:
                    pts.setdefault(g, []).append((pos[xv] + offset[g], scale * v.mean()))
                for g, p in pts.items():
                    p.sort()
                    ax.plot(*zip(*p), marker=REFERENCE_MARKER[kind], ms=4, mfc="none",
                            ls=REFERENCE_STYLE[kind] if numeric else "none", lw=0.9, color=colours[g], alpha=0.85,
                            gid="reference")
                label = reference_label(kind, m, "null")
                if kind not in used or label.startswith("deciding"):
                    used[kind] = label
            vals = scale * pd.concat([dm.value] + [v.value for v in null.values()]).to_numpy()
            vals = vals[np.isfinite(vals)]
            if len(vals) and vals.min() > 0 and vals.max() / vals.min() > 100:
                ax.set_yscale("log")
            ticks = [words.value_text(x, v) for v in levels]
            long = not numeric and sum(len(t) + 2 for t in ticks) > 24  # names that would overlap: slanted
            ax.set_xticks(range(len(levels)), ticks, rotation=30 if long else 0, ha="right" if long else "center",
                          rotation_mode="anchor")
            ax.set_xlim(-0.5, len(levels) - 0.5)
            ax.set_xlabel(xlabel or words.key_text(x))
            ax.set_title(panel_title(m, final))
            ax.set_ylabel(LABELS.get(m, "value"))
            if m.endswith(("_growth", "_growth_all")):  # ratios to the start: x0.9 and x45 on one panel
                ax.set_yscale("log")
        for ax in axes[len(metrics):]:
            ax.set_axis_off()
        extra = [Line2D([], [], color="0.3", marker=REFERENCE_MARKER[k], mfc="none", ls=REFERENCE_STYLE[k], lw=0.9,
                        label=label) for k, label in used.items()]
        extra.append(Line2D([], [], color="0.3", marker="o", ls="", ms=3, alpha=0.45, label="one run (seed)"))
        n = d[d.metric.isin(metrics)].groupby([key, x, "metric"], sort=False).run.nunique()
        if len(n):
            counts = f"n = {n.min()}" if n.min() == n.max() else f"n = {n.min()}-{n.max()}"
            extra.append(Line2D([], [], color="0.3", marker="o", ms=4.5, ls="",
                                label=f"mean, bar: 95% t interval, {counts}"))
        _legend(fig, axes[: len(metrics)], extra, hue, own)
    return fig


def interpolation_figure(lines: pd.DataFrame, hue: str | None = None, ax=None) -> Figure:
    """Train and test loss on the straight line between two solutions (:func:`probe.figures.tables.load_interpolation`):
    eCNN (alpha 0) -> plain MLP (alpha 1), one line per run coloured by ``hue``, and in grey the null, the same
    line between two plain MLPs that differ only in their seed. Solid train, dashed test; log y. Runs of one colour
    (seeds) differ in their marker, named in the legend."""
    from matplotlib.lines import Line2D

    if not len(lines):
        raise ValueError("no interpolation.json in these runs (procedure ecnn writes it)")
    _check_keys(lines, hue)
    key = hue or "run"
    names = words.run_labels(lines)
    colours = palette(lines, key, names)
    d = _categorical(lines, key, runs=names)
    dashes = {"train": "-", "test": "--"}
    # within a colour, each run (seed) its own marker
    seed_of = {run: (g.seed.iloc[0] if "seed" in g.columns else i)
               for i, (run, g) in enumerate(d.groupby("__run__", sort=False))}
    seeds = list(dict.fromkeys(seed_of.values()))
    shapes = dict(zip(seeds, ("o", "s", "^", "D", "v", "P", "X", "h")))
    own = ax is None
    with paper_theme():
        fig, axes = _panels(ax, (6.6, 3.0))
        ax = axes[0, 0]
        for (run, pair, split), r in d.groupby(["__run__", "pair", "split"], sort=False):
            null = pair.endswith("(null)")
            ax.plot(r.alpha, r.loss, dashes[split], marker=shapes.get(seed_of[run], "o"), ms=3, lw=1.1,
                    mfc="white" if split == "test" else None, color="0.6" if null else colours[r[key].iloc[0]],
                    zorder=1 if null else 2)
        ax.set_yscale("log")
        ax.set(xlabel=r"$\alpha$ on $(1-\alpha)\,\theta_{\mathrm{start}} + \alpha\,\theta_{\mathrm{end}}$",
               ylabel="loss (nats, log scale)", title="loss between two solutions")
        handles = [Line2D([], [], color=c, lw=1.1, label=f"eCNN -> MLP, {g}") for g, c in colours.items()]
        if any(d.pair.str.endswith("(null)")):
            handles.append(Line2D([], [], color="0.6", lw=1.1, label="null: MLP -> MLP, another seed"))
        handles += [Line2D([], [], color="0.3", ls=ls, label=f"{split} loss") for split, ls in dashes.items()]
        if len(shapes) > 1 or len(seed_of) > len(colours):
            handles += [Line2D([], [], color="0.3", ls="", marker=m, ms=3.5,
                               label=f"seed {words.number_text(s)}" if "seed" in d.columns else f"run {s}")
                        for s, m in shapes.items()]
        _figure_legend(fig, ax, own, handles=handles, loc="outside right upper", frameon=False)
    return fig


# -- weights -------------------------------------------------------------------------------------------------
def fields_grid_figure(fields: pd.DataFrame, n_units: int = 8, ncols: int = 4, fig=None) -> Figure:
    """Receptive fields of each run (rows) at each chosen step (columns), side by side.

    Args:
        fields: :func:`probe.figures.tables.load_fields` table (one row per run and step, with ``W`` and ``geometry``).
        n_units: the most localized units drawn per panel (highest ipr at that step; interior units, none a shift
            of another: :func:`probe.figures.fields.select_units`), via :func:`probe.figures.fields.draw_fields`.
        fig: draw into this Figure or SubFigure (``fig.subfigures`` of a composed figure) instead of a new one: its
            panels are a grid of small figures of their own, not one Axes each.

    Rows are named by what differs between the runs (:func:`probe.figures.labels.run_labels`). Weights drawn once
    are not drawn again: runs that share an initialization (one seed, one shape) get a line saying so in place of
    a copy of the first row's fields.
    """
    runs = list(dict.fromkeys(fields.run))
    names = words.run_labels(fields)
    nsteps = fields.groupby("run").step.nunique().max()
    n_units = min(n_units, max(W.shape[0] for W in fields.W))  # a one-unit network gets one panel, not four
    ncols = min(ncols, n_units)
    geo0 = fields.geometry.iloc[0]
    panel_w, panel_h = (0.75, 0.8) if geo0.ndim == 2 else (0.85, 0.62)
    rows_per = -(-n_units // ncols)
    with paper_theme():
        # a cell is at least 3 inches wide: draw_fields' captions above the panels must fit
        cell_w = max(ncols * panel_w, 3.0)
        if fig is None:
            fig = Figure(figsize=(nsteps * cell_w + 0.3, len(runs) * (rows_per * panel_h + 0.9)), layout="constrained")
        grid = np.atleast_2d(fig.subfigures(len(runs), nsteps, squeeze=False))
        drawn: list = []  # (W, run name, step) of every panel drawn so far
        for i, run in enumerate(runs):
            r = fields[fields.run == run].sort_values("step")
            for j in range(nsteps):
                if j >= len(r):
                    continue
                row = r.iloc[j]
                head = f"{names.get(run, run)}, step {row.step}{' (initialization)' if row.step == 0 else ''}"
                head = textwrap.fill(head, int(17 * cell_w))  # a long run name wraps inside its cell (7 pt)
                same = next(((n, s) for W, n, s in drawn if W.shape == row.W.shape and np.array_equal(W, row.W)), None)
                if same is not None:
                    cell = grid[i, j]
                    cell.suptitle(head, fontsize=7)
                    ax = cell.subplots()
                    ax.set_axis_off()
                    ax.text(0.5, 0.5, f"the same weights as\n{same[0]}, step {same[1]}\n(one initialization)",
                            ha="center", va="center", fontsize=7, color="0.35", transform=ax.transAxes)
                    continue
                draw_fields(grid[i, j], row.W, row.geometry, n_top=n_units, n_random=0, title=head, ncols=ncols,
                            caption=False)
                drawn.append((row.W, names.get(run, run), row.step))
        # the drawing used, once for the figure rather than above every cell
        fig.suptitle("; ".join(dict.fromkeys(caption_of(g) for g in fields.geometry)), fontsize=7)
    return fig


def spectra_figure(eigs: pd.DataFrame, spectra: pd.DataFrame, hue: str | None = None, ax=None) -> Figure:
    """Left: the eigenvalue density of the first layer's W^T W (log-log) with its power-law fit (dashed, from
    xmin); right: the mean per-unit power spectrum over spatial frequency. One colour per run (or ``hue``).
    ``ax``: draw into these two Axes instead of a new figure."""
    _check_keys(eigs, hue)
    key = hue or "run"
    names = words.run_labels(eigs)
    eigs, spectra = _categorical(eigs, key, runs=names), _categorical(spectra, key, runs=names)
    colours = dict(zip(dict.fromkeys(eigs[key]), sns.color_palette(n_colors=eigs[key].nunique())))
    with paper_theme():
        n_entries = eigs[key].nunique()
        # the legend below the panels (run names are long; beside them it squeezed the panels until labels overlapped)
        own = ax is None
        fig, ((ax_e, ax_f),) = _panels(ax, (8.2, 3.0 + 0.2 * -(-n_entries // 2)), 1, 2)
        low_rank = []  # runs whose W^T W has fewer than two nonzero eigenvalues (a single unit): no density to draw
        for run, e in eigs.groupby("run", sort=False):
            ev = np.sort(e.eigenvalue.to_numpy())
            ev = ev[ev > 1e-10 * ev.max()] if len(ev) and ev.max() > 0 else ev[:0]
            if len(np.unique(ev)) < 2:
                low_rank.append(names.get(run, run))
                continue
            c = colours[e[key].iloc[0]]
            bins = np.logspace(np.log10(ev.min()), np.log10(ev.max()), max(8, min(40, len(ev) // 4)))
            hist, edges = np.histogram(ev, bins=bins, density=True)
            mid = np.sqrt(edges[1:] * edges[:-1])
            ax_e.plot(mid[hist > 0], hist[hist > 0], "o-", ms=2.5, lw=1, color=c)
            a, xmin = float(e.alpha.iloc[0]), float(e.xmin.iloc[0])
            if np.isfinite(a) and np.isfinite(xmin):
                # p(lambda) = (n_tail / N) (alpha - 1) / xmin (lambda / xmin)^-alpha on the tail
                share = (ev >= xmin).mean()
                lam = np.logspace(np.log10(xmin), np.log10(ev.max()), 50)
                ax_e.plot(lam, share * (a - 1) / xmin * (lam / xmin) ** -a, "--", color=c, lw=1,
                          label=rf"$\alpha$ = {a:.2f}")
        ax_e.set(xlabel=r"eigenvalue $\lambda$ of $W^\top W$", ylabel=r"density (per unit of $\lambda$)",
                 title="eigenvalues, first layer")
        if ax_e.lines:
            ax_e.set(xscale="log", yscale="log")
            ax_e.legend(title="power-law fits", fontsize=6, title_fontsize=6, frameon=False, loc="lower left")
        else:
            ax_e.set(xticks=[], yticks=[])
        if low_rank:
            ax_e.text(0.5, 0.5 if not ax_e.lines else 0.9, "fewer than two nonzero eigenvalues (no density):\n"
                      + "\n".join(low_rank[:4]) + ("\n..." if len(low_rank) > 4 else ""), ha="center",
                      va="center", fontsize=6, color="0.35", transform=ax_e.transAxes)
        for _run, s in spectra.groupby("run", sort=False):
            ax_f.plot(s.frequency, s.power, "o-", ms=2.5, lw=1, color=colours[s[key].iloc[0]], label=s[key].iloc[0])
        if (spectra.power > 0).any():
            ax_f.set_yscale("log")
        ax_f.set(xlabel="spatial frequency |f| (cycles per grid length)",
                 ylabel="power (share of a unit's, mean)", title="per-unit power spectra")
        handles, labs = ax_f.get_legend_handles_labels()
        keep = dict(zip(labs, handles))  # runs of one hue value: one entry
        _figure_legend(fig, ax_f, own, list(keep.values()), list(keep), loc="outside lower center",
                       ncols=min(2, len(keep)), frameon=False, title=words.key_text(key))
    return fig


def routing_figure(routing: pd.DataFrame, ax=None) -> Figure:
    """Routing maps of sequence runs side by side (an MLP's Jacobian map beside a transformer's attention) on the
    same test example: rows are output positions, columns input positions, colour the share of the row; white
    rings mark the ground-truth source positions (the legend says so). Panels are named by what differs between
    the runs (:func:`probe.figures.labels.run_labels`)."""
    from matplotlib.lines import Line2D

    names = words.run_labels(routing)
    panels = list(routing.groupby(["run", "method"], sort=False))
    if not panels:
        raise ValueError("no routing maps (no sequence runs)")
    T = int(routing.in_pos.max()) + 1
    with paper_theme():
        own = ax is None
        fig, axes = _panels(ax, (2.9 * len(panels) + 0.6, 2.9), 1, len(panels))
        axes = axes.ravel()
        for ax, ((run, kind), r) in zip(axes, panels):
            rows = sorted(r.out_pos.unique())
            M = r.pivot_table(index="out_pos", columns="in_pos", values="weight").reindex(columns=range(T))
            im = ax.imshow(M.to_numpy(), cmap="rocket_r", vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                           extent=(-0.5, T - 0.5, len(rows) - 0.5, -0.5))
            src = r[r.source]
            ax.scatter(src.in_pos, [rows.index(q) for q in src.out_pos], s=30, facecolors="none", edgecolors="w",
                       linewidths=1)
            ax.set_yticks(range(len(rows)), [str(q) for q in rows])
            ax.set(xlabel="input position s", ylabel="output position q",
                   title=f"{names.get(run, run)}\n{'Jacobian map' if kind == 'jacobian' else kind}")
            ax.grid(False)
        fig.colorbar(im, ax=list(axes), label="share of the map (row sums to 1)", shrink=0.9)
        ring = Line2D([], [], ls="", marker="o", ms=6, mfc="none", mec="0.2", mew=1,
                      label="ring (white in the maps): a ground-truth source position\n"
                            "(the matching key and its value)")
        _figure_legend(fig, axes[0], own, handles=[ring], loc="outside lower center", frameon=False, fontsize=7)
    return fig


# -- recurrence and the add task -------------------------------------------------------------------------
def dependence_figure(dep: pd.DataFrame, row: str = "variant", col: str = "task", seed=None, ax=None) -> Figure:
    """The dependence maps M[t, s] (:func:`probe.figures.tables.load_dependence`) as a grid of pictures, a row per
    value of ``row`` (models) and a column per value of ``col`` (tasks); each panel is the mean over the runs in
    it (seeds; or only ``seed``), scaled to its own maximum. The white line is t = s: a causal map has nothing
    above it, a time-shared one is constant along its diagonals."""
    if not len(dep):
        raise ValueError("no dependence maps (no sequence runs with an answer at every position)")
    _check_keys(dep, row, col)
    if seed is not None:
        dep = dep[dep.seed == seed]
    rows, cols = list(dict.fromkeys(dep[row])), list(dict.fromkeys(dep[col]))
    with paper_theme():
        fig, axes = _panels(ax, (1.75 * len(cols) + 0.9, 1.7 * len(rows) + 0.5), len(rows), len(cols))
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ax = axes[i, j]
                ax.grid(False)
                dm = dep[(dep[row] == r) & (dep[col] == c)]
                if not len(dm):
                    ax.set_axis_off()
                    continue
                T = int(max(dm.t.max(), dm.s.max())) + 1
                M = dm.pivot_table(index="t", columns="s", values="value").reindex(index=range(T), columns=range(T))
                A = M.to_numpy()
                im = ax.imshow(A / np.nanmax(A), cmap="rocket_r", vmin=0, vmax=1, interpolation="nearest")
                ax.plot([-0.5, T - 0.5], [-0.5, T - 0.5], color="w", lw=0.6)
                ax.set_xticks([]), ax.set_yticks([])
                if i == 0:
                    ax.set_title(words.value_text(col, c))
                if j == 0:
                    ax.set_ylabel(f"{words.value_text(row, r)}\noutput t", fontsize=7)
                if i == len(rows) - 1:
                    ax.set_xlabel("input s", fontsize=7)
        fig.colorbar(im, ax=list(axes.ravel()), label="dependence (share of panel max)", shrink=0.6)
    return fig


def distance_figure(dep: pd.DataFrame, hue: str = "variant", col: str = "task", ax=None) -> Figure:
    """The dependence on the distance t - s: per panel (``col``, tasks) and line (``hue``, models), the mean of
    M[t, s] over the pairs at each distance d = t - s (each map divided by its sum), then divided by the sum over d;
    mean over the runs in a line (seeds), a band of its 95% t interval (n in the legend). d < 0 (shaded) is the
    future."""
    if not len(dep):
        raise ValueError("no dependence maps (no sequence runs with an answer at every position)")
    _check_keys(dep, hue, col)
    d = dep.assign(d=dep.t - dep.s)
    per_run = d.groupby(["run", hue, col, "d"], sort=False).value.mean().reset_index()
    per_run["value"] /= per_run.groupby("run").value.transform("sum")
    colours = palette(per_run, hue)
    cols = list(dict.fromkeys(per_run[col]))
    own = ax is None
    with paper_theme():
        fig, axes = _panels(ax, (2.6 * len(cols) + 1.6, 2.5), 1, len(cols))
        axes = axes.ravel()
        for ax, c in zip(axes, cols):
            pc = per_run[per_run[col] == c]
            for h, ph in pc.groupby(hue, sort=False):
                g = ph.groupby("d").value
                c_h = colours[words.value_text(hue, h)]
                ax.plot(g.mean().index, g.mean().values, lw=1.2, marker="o", ms=2.5, color=c_h,
                        label=f"{words.value_text(hue, h)} (n = {ph.run.nunique()})")
                half = g.agg(t_half)
                ax.fill_between(g.mean().index, (g.mean() - half).values, (g.mean() + half).values, color=c_h,
                                alpha=0.15, lw=0)
            lo = pc.d.min()
            ax.axvspan(lo - 0.5, -0.5, color="0.85", alpha=0.5, lw=0)
            ax.set(title=words.value_text(col, c), xlabel="distance t - s (s > t: future, shaded)",
                   ylabel="share of dependence",
                   yscale="log")
            ax.set_ylim(bottom=max(pc.value[pc.value > 0].min(), 1e-4) if (pc.value > 0).any() else None)
        _legend(fig, axes[:1], [], hue, own)
    return fig


def spectrum_figure(final: pd.DataFrame, x: str = "task.n_train", hue: str = "variant", col: str = "task_opts.op",
                    D: int | None = None, ax=None) -> Figure:
    """Error against the number of training examples on the add task (:func:`probe.figures.tables.load_final` of a
    spectrum sweep): a column per ``col`` (op), rows ``rel_mse`` (inside the training range), ``extrap_rel_mse``
    (outside it), ``relevant_weight_mass`` and ``zero_frac`` (first layer), and where the runs have them
    ``relevant_grad_share`` and ``relevant_iv_share`` (the function's, by gradient and by resampling); a line per
    ``hue`` (models; mean over seeds, one dot per run), beside LinearRegression fit on the same split (``@linreg``,
    black dashes), the exact rule (``@rule``, grey) and the relevant-mass null 2/D (``@gaussian``, grey dots; also
    in the function-share rows, where a function reading every input alike scores the same 2/D). Log axes where
    they help."""
    from matplotlib.lines import Line2D

    _check_keys(final, x, hue, col)
    shares = ("relevant_weight_mass", "relevant_grad_share", "relevant_iv_share", "zero_frac")
    rows = [m for m in ("rel_mse", "extrap_rel_mse", *shares) if m in set(final.metric)]
    if not rows:
        raise ValueError("no add-task measures (rel_mse, ...) in these runs")
    colours = palette(final, hue)
    cols = list(dict.fromkeys(final[col]))
    controls = {"linreg": ("k", (0, (4, 2)), "s", "linear regression (same data)"),
                "rule": ("0.55", "-", None, "exact rule (no data)"),
                "gaussian": ("0.55", (0, (1, 2)), None, "null: 2/D (random weights)")}
    titles = {"rel_mse": "error in the training range", "extrap_rel_mse": "error outside the training range",
              "relevant_weight_mass": "first-layer energy on x_a, x_b", "zero_frac": "first-layer weights at zero",
              "relevant_grad_share": "gradient energy on x_a, x_b",
              "relevant_iv_share": "resampling effect of x_a, x_b"}
    own = ax is None
    with paper_theme():
        fig, axes = _panels(ax, (3.0 * len(cols) + 2.2, 2.3 * len(rows)), len(rows), len(cols))
        used = set()
        for j, c in enumerate(cols):
            fc = final[final[col] == c]
            for i, m in enumerate(rows):
                ax = axes[i, j]
                fm = fc[fc.metric == m]
                for h, fh in fm.groupby(hue, sort=False):
                    c_h = colours[words.value_text(hue, h)]
                    ax.scatter(fh[x], fh.value, s=8, color=c_h, alpha=0.45, lw=0)
                    g = fh.groupby(x).value.mean()
                    ax.plot(g.index, g.values, "o-", ms=3.5, lw=1.2, color=c_h, label=words.value_text(hue, h))
                for k, (colour, ls, marker, _) in controls.items():
                    fk = fc[fc.metric == f"{m}@{k}"]
                    if not len(fk) and k == "gaussian" and m in ("relevant_grad_share", "relevant_iv_share"):
                        fk = fc[fc.metric == "relevant_weight_mass@gaussian"]  # the same |R| / D for a function
                    if len(fk):
                        g = fk.groupby(x).value.mean()
                        ax.plot(g.index, g.values, ls=ls, marker=marker, ms=3, mfc="none", color=colour, lw=1.1)
                        used.add(k)
                ax.set_xscale("log")
                vals = pd.concat([fm.value] + [fc[fc.metric == f"{m}@{k}"].value for k in controls]).to_numpy()
                vals = vals[np.isfinite(vals) & (vals > 0)]
                if m.endswith("mse") and len(vals) and vals.max() / vals.min() > 30:
                    ax.set_yscale("log")
                if m in shares:
                    ax.set_ylim(-0.03, 1.03)
                ax.set_title(f"{c}: {titles[m]}" if len(cols) > 1 else titles[m])
                ax.set_ylabel(LABELS.get(m, m) if m != "rel_mse" else "MSE / var(y)")
                if i == len(rows) - 1:
                    ax.set_xlabel("training examples (log scale)")
        extra = [Line2D([], [], color=colours_, ls=ls, marker=marker, mfc="none", ms=3, label=text)
                 for k, (colours_, ls, marker, text) in controls.items() if k in used]
        _legend(fig, axes[0, :1], extra, hue, own)
    return fig
