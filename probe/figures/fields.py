"""Receptive-field pictures of a first layer: the picture researchers use to see locality (issue 3).

Units are drawn in the original input order (a shuffled control's permutation undone, as every geometric measure
does). Two groups: the most localized units (highest per-unit ipr) and a seeded random sample of the others.
How a field is drawn depends on the grid:
- 1-D, up to 4 channels: a curve of w over positions per channel.
- 1-D with more channels (token one-hots): an image, channels x positions, diverging colours.
- 2-D, 1 channel: an image, diverging colours (red +, blue -), symmetric per unit.
- 2-D, 3 channels: RGB, each unit scaled as 0.5 + w / (2 max|w|) (grey = 0).
- 2-D, other channel counts: the energy map e(s) = sum_c w[c, s]^2.
Every panel has its own scale (locality is about shape, not size); the figure says which drawing it used.

:func:`draw_fields` draws into any figure or subfigure (so a grid of runs or steps can place several side by
side); :func:`fields_figure` makes a standalone one; :func:`save_figure` writes it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from probe.geometry import Geometry

RC = {"pdf.fonttype": 42, "ps.fonttype": 42}  # embed TrueType fonts in PDFs (editable text, accepted by journals)
FORMATS = (".png", ".pdf", ".svg")


def unit_ipr_all(W, geometry: Geometry) -> np.ndarray:
    """Per-unit ipr sum_s p_i(s)^2 for every unit, NaN for units without weight (so indices stay unit indices)."""
    F = geometry.fields(np.asarray(W, dtype=np.float64))
    E = (F**2).sum(axis=1).reshape(len(F), -1)
    tot = E.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (E**2).sum(axis=1) / tot**2, np.nan)


def select_units(W, geometry: Geometry, n_top: int = 8, n_random: int = 8, seed: int = 0):
    """(top, sample, ipr): the n_top live units of highest ipr (highest first), a seeded random sample of
    n_random other live units (in unit order), and every unit's ipr."""
    q = unit_ipr_all(W, geometry)
    live = np.flatnonzero(np.isfinite(q))
    top = live[np.argsort(-q[live], kind="stable")[:n_top]]
    rest = np.setdiff1d(live, top)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(rest, size=min(n_random, len(rest)), replace=False)) if len(rest) else rest
    return top, sample, q


def drawing(geometry: Geometry) -> str:
    """How fields of this geometry are drawn: ``curves``, ``image``, ``rgb`` or ``energy`` (module docstring)."""
    if geometry.ndim == 1:
        return "curves" if geometry.channels <= 4 else "image"
    return {1: "image", 3: "rgb"}.get(geometry.channels, "energy")


_CAPTION = {"curves": "w over positions (one line per channel)",
            "image": "w, red + / blue -, scaled per unit",
            "image1d": "w as features (rows) x positions (columns), red + / blue -, scaled per unit",
            "rgb": "RGB = 0.5 + w / (2 max|w|) per unit (grey = 0)",
            "energy": "energy map sum_c w^2 per position, scaled per unit"}


def _panel(ax, f: np.ndarray, how: str) -> None:
    """Draw one field f (C, *S) on ax."""
    a = float(np.abs(f).max()) or 1.0
    if how == "curves":
        for c in range(f.shape[0]):
            ax.plot(np.arange(f.shape[1]), f[c], lw=1)
        ax.axhline(0, color="0.6", lw=0.5, zorder=0)
        ax.set_ylim(-1.1 * a, 1.1 * a)
        ax.set_xlim(0, f.shape[1] - 1)
        ax.set_yticks([])
        ax.tick_params(labelsize=5, length=2, pad=1)
        return
    if how == "rgb":
        img = np.clip(0.5 + f.transpose(1, 2, 0) / (2 * a), 0, 1)
        ax.imshow(img, interpolation="nearest")
    elif how == "energy":
        e = (f**2).sum(axis=0)
        ax.imshow(e, cmap="mako", vmin=0, vmax=float(e.max()) or 1.0, interpolation="nearest")
    else:  # image: 2-D single channel, or 1-D channels x positions
        img = f[0] if f.ndim == 3 else f
        ax.imshow(img, cmap="RdBu_r", vmin=-a, vmax=a, interpolation="nearest", aspect="auto" if f.ndim == 2 else "equal")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_fields(fig, W, geometry: Geometry, n_top: int = 8, n_random: int = 8, seed: int = 0,
                title: str | None = None, ncols: int = 8):
    """Draw the receptive fields of first-layer weights W (m x n) into ``fig`` (a Figure or SubFigure).

    Args:
        W: first-layer weights in the geometry's flat layout (a shuffled control's as the model saw them).
        n_top: how many of the most localized units (highest ipr) to draw.
        n_random: how many other units to draw, a random sample seeded by ``seed``.
        title: printed above; the drawing used (module docstring) is added below it.
        ncols: panels per row.
    Returns ``fig``.
    """
    W = np.asarray(W, dtype=np.float64)
    how = drawing(geometry)
    top, sample, q = select_units(W, geometry, n_top, n_random, seed)
    F = geometry.fields(W)
    order = "" if geometry.perm is None else "; positions unshuffled"
    caption = _CAPTION["image1d" if how == "image" and geometry.ndim == 1 else how]
    fig.suptitle(f"{title + chr(10) if title else ''}{caption}{order}", fontsize=7)
    groups = [(f"most localized units (highest ipr of {len(q)})", top), (f"random sample of other units (seed {seed})", sample)]
    groups = [(name, units) for name, units in groups if len(units)]
    heights = [int(np.ceil(len(u) / ncols)) for _, u in groups]
    subs = np.atleast_1d(fig.subfigures(len(groups), 1, height_ratios=heights)) if groups else []
    for sub, (name, units), rows in zip(subs, groups, heights):
        sub.suptitle(name, fontsize=6.5, x=0.01, ha="left")
        axes = np.atleast_1d(sub.subplots(rows, ncols, squeeze=False)).ravel()
        for ax, i in zip(axes, units):
            _panel(ax, F[i], how)
            ax.set_title(f"unit {i}  ipr {q[i]:.2g}", fontsize=5, pad=2)
        for ax in axes[len(units):]:
            ax.set_axis_off()
    return fig


def fields_figure(W, geometry: Geometry, n_top: int = 8, n_random: int = 8, seed: int = 0, title: str | None = None,
                  ncols: int = 8) -> Figure:
    """A standalone receptive-field figure (arguments as :func:`draw_fields`), in the shared paper theme."""
    rows = int(np.ceil(n_top / ncols)) + int(np.ceil(n_random / ncols))
    square = geometry.ndim == 2
    panel_h = 0.95 if square else 0.75
    with sns.axes_style("ticks"), sns.plotting_context("paper"), mpl.rc_context(RC):
        fig = Figure(figsize=(ncols * (0.9 if square else 1.0), 0.6 + rows * panel_h + 0.25 * 2), layout="constrained")
        draw_fields(fig, W, geometry, n_top, n_random, seed, title, ncols)
    return fig


def save_figure(fig: Figure, path) -> list[Path]:
    """Save ``fig`` to ``path`` (.png, .pdf or .svg) and, for vector formats, a PNG beside it; returns the paths.
    Fonts are embedded as TrueType (pdf.fonttype 42)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: figures are written as {', '.join(FORMATS)}, not {path.suffix or 'no suffix'}")
    import io

    from probe.run.checkpoint import atomic_write

    out = [path] + ([path.with_suffix(".png")] if path.suffix.lower() != ".png" else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context(RC):
        for p in out:
            buf = io.BytesIO()
            fig.savefig(buf, format=p.suffix.lower()[1:], dpi=200)
            try:  # whole or not at all: a failed write (disk full) leaves no half figure under the name
                atomic_write(p, lambda f: f.write(buf.getvalue()))
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(p)) from None
    return out
