"""Receptive-field pictures of a first layer: the picture researchers use to see locality.

Units are drawn in the original input order (a shuffled control's permutation undone, as every geometric measure
does). Two groups: the most localized units (highest per-unit ipr) and a seeded random sample of the others. The
most localized are interior units of a local layer (a CNN's or LCN's units whose window the padding cut have few
pixels and so a high ipr that nothing learned: :func:`cropped_units`) and none is a shift of another (a
convolution's units are shifts of its channels' kernels: one per channel, nearest the centre).
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
from probe.run import checkpoint

RC = {"pdf.fonttype": 42, "ps.fonttype": 42}  # embed TrueType fonts in PDFs (editable text, accepted by journals)
FORMATS = (".png", ".pdf", ".svg")


def unit_ipr_all(W, geometry: Geometry) -> np.ndarray:
    """Per-unit ipr sum_s p_i(s)^2 for every unit, NaN for units without weight (so indices stay unit indices)."""
    F = geometry.fields(np.asarray(W, dtype=np.float64))
    E = (F**2).sum(axis=1).reshape(len(F), -1)
    tot = E.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (E**2).sum(axis=1) / tot**2, np.nan)


def cropped_units(W) -> np.ndarray:
    """Which units of a local layer (a CNN's or LCN's first layer seen as its dense matrix) have a window cut by
    the zero padding at the border: fewer nonzero weights than the full window. Such a unit's energy sits on fewer
    pixels, so its ipr is high for a reason that is not learned. A layer counts as local when its fullest unit uses
    at most half the inputs and at least half the units are that full; otherwise (dense or pruned MLPs) no unit is
    cropped."""
    nnz = (np.asarray(W) != 0).sum(axis=1)
    full = nnz.max() if len(nnz) else 0
    if full == 0 or full > np.asarray(W).shape[1] / 2 or (nnz == full).mean() < 0.5:
        return np.zeros(len(nnz), dtype=bool)
    return nnz < full


def shift_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """max over circular shifts t of <a, shift_t b> / (|a| |b|) for two fields (C, *S): 1 when b is a shift of a
    (two units of one convolution channel), about 0 for unrelated fields."""
    axes = tuple(range(1, a.ndim))
    corr = np.fft.ifftn(np.fft.fftn(a, axes=axes) * np.conj(np.fft.fftn(b, axes=axes)), axes=axes).real.sum(axis=0)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(corr.max() / norm) if norm > 0 else 0.0


def _off_centre(F: np.ndarray) -> np.ndarray:
    """Distance of each field's energy centroid (fields (m, C, *S)) from the centre of the grid, in pixels."""
    E = (F**2).sum(axis=1)
    tot = np.maximum(E.reshape(len(E), -1).sum(axis=1), 1e-300)
    d2 = np.zeros(len(E))
    for ax, n in enumerate(E.shape[1:]):
        pos = np.arange(n).reshape([-1 if a == ax else 1 for a in range(E.ndim - 1)])
        centroid = (E * pos).reshape(len(E), -1).sum(axis=1) / tot
        d2 += (centroid - (n - 1) / 2) ** 2
    return np.sqrt(d2)


def select_units(W, geometry: Geometry, n_top: int = 8, n_random: int = 8, seed: int = 0, distinct: bool = True,
                 interior: bool = True, same: float = 0.98, scan: int = 4096):
    """(top, sample, ipr): the n_top live units of highest ipr (highest first), a seeded random sample of
    n_random other live units (in unit order), and every unit's ipr.

    ``interior``: units whose window the padding cropped (:func:`cropped_units`) are left out while enough others
    are live; units of equal ipr (the shifts of one kernel) are taken nearest the centre of the grid first.
    ``distinct``: a unit whose field is a shift of one already chosen (:func:`shift_similarity` above ``same``, in
    the order the model saw its inputs: a convolution's units are all shifts of its channels' kernels) is passed
    over, among the ``scan`` units of highest ipr."""
    W = np.asarray(W, dtype=np.float64)
    q = unit_ipr_all(W, geometry)
    live = np.flatnonzero(np.isfinite(q))
    if interior:
        whole = live[~cropped_units(W)[live]]
        live = whole if len(whole) >= min(n_top, len(live)) else live
    off_centre = _off_centre(geometry.fields(W)[live]) if interior else np.zeros(len(live))
    ranked = live[np.lexsort((off_centre, -np.round(q[live], 9)))]
    if distinct:
        F = geometry.fields(W, unpermute=False)
        top: list[int] = []
        for i in ranked[:scan]:
            if all(shift_similarity(F[i], F[j]) < same for j in top):
                top.append(int(i))
                if len(top) == n_top:
                    break
        top = np.asarray(top, dtype=int)
    else:
        top = ranked[:n_top]
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
        ax.imshow(img, cmap="RdBu_r", vmin=-a, vmax=a, interpolation="nearest",
                  aspect="auto" if f.ndim == 2 else "equal")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_fields(fig, W, geometry: Geometry, n_top: int = 8, n_random: int = 8, seed: int = 0,
                title: str | None = None, ncols: int = 8, distinct: bool = True, interior: bool = True,
                caption: bool = True):
    """Draw the receptive fields of first-layer weights W (m x n) into ``fig`` (a Figure or SubFigure).

    Args:
        W: first-layer weights in the geometry's flat layout (a shuffled control's as the model saw them).
        n_top: how many of the most localized units (highest ipr) to draw.
        n_random: how many other units to draw, a random sample seeded by ``seed``.
        title: printed above; the drawing used (module docstring) is added below it.
        ncols: panels per row.
        distinct, interior: no unit that is a shift of another drawn one, no unit cropped by the padding
            (:func:`select_units`); the group's caption says so when it passed units over.
        caption: add the drawing used below the title (a grid of such drawings says it once: :func:`caption_of`).
    Each panel is scaled to its own unit: its title gives the unit's largest |w|, the amplitude of full colour.
    Returns ``fig``.
    """
    W = np.asarray(W, dtype=np.float64)
    how = drawing(geometry)
    top, sample, q = select_units(W, geometry, n_top, n_random, seed, distinct=distinct, interior=interior)
    crop = interior and cropped_units(W).any()
    shifted = distinct and len(top) and not np.array_equal(top, select_units(W, geometry, n_top, 0, distinct=False,
                                                                               interior=interior)[0])
    F = geometry.fields(W)
    text = caption_of(geometry) if caption else ""
    fig.suptitle("\n".join(t for t in (title, text) if t), fontsize=7)
    how_top = ", ".join(["interior units (none cropped by the padding)"] * bool(crop) +
                        ["none a shift of another"] * bool(shifted))
    top_name = ("the network's one unit" if len(q) == 1 else
                f"most localized units (highest ipr of {len(q)})" + (f"\n{how_top}" if how_top else ""))
    groups = [(top_name, top),
              (f"random sample of other units (seed {seed})", sample)]
    groups = [(name, units) for name, units in groups if len(units)]
    heights = [int(np.ceil(len(u) / ncols)) for _, u in groups]
    subs = np.atleast_1d(fig.subfigures(len(groups), 1, height_ratios=heights)) if groups else []
    for sub, (name, units), rows in zip(subs, groups, heights):
        sub.suptitle(name, fontsize=6.5, x=0.01, ha="left")
        axes = np.atleast_1d(sub.subplots(rows, ncols, squeeze=False)).ravel()
        for ax, i in zip(axes, units):
            _panel(ax, F[i], how)
            ax.set_title(f"unit {i}  ipr {q[i]:.2g}\nmax|w| {np.abs(F[i]).max():.2g}", fontsize=5, pad=2)
        for ax in axes[len(units):]:
            ax.set_axis_off()
    return fig


def caption_of(geometry: Geometry) -> str:
    """How :func:`draw_fields` draws fields of this geometry, in words."""
    how = drawing(geometry)
    order = "" if geometry.perm is None else "; positions unshuffled"
    return _CAPTION["image1d" if how == "image" and geometry.ndim == 1 else how] + order


def fields_figure(W, geometry: Geometry, n_top: int = 8, n_random: int = 8, seed: int = 0, title: str | None = None,
                  ncols: int = 8, fig=None) -> Figure:
    """A standalone receptive-field figure (arguments as :func:`draw_fields`), in the shared paper theme; with
    ``fig`` (a Figure or a SubFigure of a composed figure), drawn there."""
    rows = int(np.ceil(n_top / ncols)) + int(np.ceil(n_random / ncols))
    square = geometry.ndim == 2
    panel_h = 0.95 if square else 0.75
    with sns.axes_style("ticks"), sns.plotting_context("paper"), mpl.rc_context(RC):
        if fig is None:
            fig = Figure(figsize=(ncols * (0.9 if square else 1.0), 0.6 + rows * panel_h + 0.25 * 2),
                         layout="constrained")
        draw_fields(fig, W, geometry, n_top, n_random, seed, title, ncols)
    return fig


def save_figure(fig: Figure, path) -> list[Path]:
    """Save ``fig`` to ``path`` (.png, .pdf or .svg) and, for vector formats, a PNG beside it; returns the paths.
    Fonts are embedded as TrueType (pdf.fonttype 42)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: figures are written as {', '.join(FORMATS)}, not {path.suffix or 'no suffix'}")
    import io

    out = [path] + ([path.with_suffix(".png")] if path.suffix.lower() != ".png" else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context(RC):
        for p in out:
            buf = io.BytesIO()
            fig.savefig(buf, format=p.suffix.lower()[1:], dpi=200)
            try:  # whole or not at all: a failed write (disk full) leaves no half figure under the name
                checkpoint.atomic_write(p, lambda f, buf=buf: f.write(buf.getvalue()))
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(p)) from None
    return out
