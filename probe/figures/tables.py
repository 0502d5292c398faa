"""Tidy tables from run folders, the input of every figure in :mod:`probe.figures.plots` (docs/design.md §5).

Every table has one row per observation and the run's config as columns, flattened with dots
(``task_opts.gain``, ``model_opts.kernel``), so figures can group and colour runs by any config key:

- :func:`load_runs`: ``run, step, metric, value`` from ``metrics.jsonl`` (losses, accuracies, tracked measures).
- :func:`load_references`: ``run, reference, metric, value`` from ``reference.json`` (probe/run/tracking.py).
- :func:`load_fields`: ``run, step, W, geometry``: the dense first layer at chosen steps (for receptive fields).
- :func:`load_spectra`: eigenvalues of the first layer's W^T W with their power-law fit, and per-unit power spectra.
- :func:`load_routing`: for sequence runs, each model's routing map on the same test inputs (probe/metrics/routing.py).

``run`` is the run folder's name (its path where two folders share a name).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probe.analysis.load import first_layer, load_run
from probe.config import ConfigError, flatten_config
from probe.run.checkpoint import list_checkpoints
from probe.run.folder import read_json_file
from probe.run.metrics_file import read_metrics
from probe.run.tracking import read_references
from probe.sweep.summary import end_values
from probe.metrics import routing as R
from probe.metrics.recurrence import dependence_map
from probe.metrics.spectral import alpha_fit, eigenvalues, frequency_magnitudes, unit_spectra
from probe.sweep.stats import seed_stats

# training keys of metrics.jsonl that are not observations of the model
_NOT_METRICS = ("step", "lr")


def run_dirs(paths) -> list[Path]:
    """Run folders among ``paths``: each path is a run folder (has config.json) or a folder of run folders (a
    sweep's in the order of its grid)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(q.parent for q in p.glob("*/config.json"))
            found.sort(key=_sweep_order(p))
            if not found:
                raise ConfigError(f"{p}: not a run folder (no config.json) and holds no run folders")
            out.extend(found)
        else:
            raise ConfigError(f"{p}: no such run folder")
    return list(dict.fromkeys(out))


def _sweep_order(folder: Path):
    """Sort key for the run folders of ``folder``: a sweep's (sweep.json) in the order of its grid, so variants
    keep the order the preset gives them (sgd, l1, beta-lasso, imp); other folders after, by name."""
    try:
        names = [r["name"] for r in json.loads((folder / "sweep.json").read_text())["runs"]]
    except (OSError, ValueError, KeyError, TypeError):
        names = []
    rank = {n: i for i, n in enumerate(names)}
    return lambda d: (rank.get(d.name, len(rank)), d.name)


def run_names(dirs: list[Path]) -> dict[Path, str]:
    """Folder name per run, or the path where names collide."""
    names = [d.name for d in dirs]
    return {d: d.name if names.count(d.name) == 1 else str(d) for d in dirs}


def flat_config(run_dir: Path) -> dict:
    """The run's config.json flattened: nested dicts become ``key.sub`` columns. A run of a sweep adds what its
    sweep_run.json says beyond the config: ``variant`` (the preset's variant name) and ``procedure``."""
    run_dir = Path(run_dir)
    out = flatten_config(read_json_file(run_dir / "config.json", "the run's config"))
    try:
        sweep_run = json.loads((run_dir / "sweep_run.json").read_text())
    except (OSError, ValueError):
        return out
    if "variant" in sweep_run.get("varied", {}):
        out["variant"] = sweep_run["varied"]["variant"]
    if sweep_run.get("procedure"):
        out["procedure"] = sweep_run["procedure"]
    return out


def input_shape(run_dir: Path) -> str | None:
    """The run's input as ``channels x positions`` (``1x40``, ``3x32x32``) from task.json, None when unknown: two
    runs of one task name can differ in it (``--task-opt size=...``), and their references must not be averaged."""
    try:
        geo = json.loads((Path(run_dir) / "task.json").read_text())["geometry"]
        return "x".join(str(int(n)) for n in (geo["channels"], *geo["spatial"]))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _with_config(frames: list[pd.DataFrame], dirs: list[Path], names: dict) -> pd.DataFrame:
    """Concatenate per-run frames, adding every run's flattened config as columns, and ``input_shape``."""
    parts = []
    for d, f in zip(dirs, frames):
        if f is None or not len(f):
            continue
        cfg = {**flat_config(d), "input_shape": input_shape(d)}
        for k, v in cfg.items():
            if k not in f.columns:
                f[k] = v if not isinstance(v, list) else str(v)
        parts.append(f)
    if not parts:  # nothing to draw, but the columns a figure looks for are there
        return pd.DataFrame(columns=list(frames[0].columns) if frames and frames[0] is not None else [])
    return pd.concat(parts, ignore_index=True)


def load_runs(paths) -> pd.DataFrame:
    """``run, step, metric, value`` + config columns: every numeric key of every metrics.jsonl row."""
    dirs = run_dirs(paths)
    names = run_names(dirs)
    frames = []
    for d in dirs:
        recs = []
        for row in read_metrics(d):
            recs += [(names[d], row["step"], k, float(v)) for k, v in row.items()
                     if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]
        frames.append(pd.DataFrame(recs, columns=["run", "step", "metric", "value"]))
    return _with_config(frames, dirs, names)


def load_references(paths) -> pd.DataFrame:
    """``run, reference, metric, value`` + config columns from each run's reference.json (runs without one
    are skipped)."""
    dirs = run_dirs(paths)
    names = run_names(dirs)
    frames = []
    for d in dirs:
        recs = [(names[d], ref, k, float(v)) for ref, vals in read_references(d).items() for k, v in vals.items()]
        frames.append(pd.DataFrame(recs, columns=["run", "reference", "metric", "value"]))
    return _with_config(frames, dirs, names)


# -- weights back from checkpoints (probe.analysis.load, shared with `probe analyze`) ------------------------------
def chosen_steps(run_dir: Path, steps=None) -> list[int]:
    """The checkpoint steps to show: ``steps`` (nearest checkpoints), or the first, the one nearest half the last
    step (checkpoints are log-spaced: the middle one by count is still close to the initialization), and the last."""
    have = [s for s, _ in list_checkpoints(run_dir)]
    if not have:
        raise ConfigError(f"{run_dir}: no checkpoints")
    if steps is None:
        middle = min(have[1:-1] or have, key=lambda s: abs(s - have[-1] / 2))
        return sorted({have[0], middle, have[-1]})
    return sorted({min(have, key=lambda s: abs(s - t)) for t in steps})


def _finite_first_layer(run_dir: Path, step: int, name: str):
    """:func:`probe.analysis.load.first_layer`, refusing (ValueError: the figure is skipped, saying why) weights with
    NaN or inf, which no field or spectrum can show."""
    W, geo = first_layer(run_dir, step)
    if not np.isfinite(W).all():
        raise ValueError(f"run {name}: its first layer at step {step} holds NaN or inf (a diverged run)")
    return W, geo


# -- fields, spectra, routing -------------------------------------------------------------------------------
def load_fields(paths, steps=None) -> pd.DataFrame:
    """First layers at chosen steps, one row per (run, step): ``run, step, W, geometry`` + config columns.

    ``W`` holds the dense (m, n) first layer as the model saw its inputs and ``geometry`` its Geometry
    (:func:`probe.figures.fields.draw_fields` undoes a shuffle). ``steps``: checkpoint steps to show (the nearest
    available ones); default the first, middle and last checkpoint.
    """
    dirs = run_dirs(paths)
    names = run_names(dirs)
    frames = []
    for d in dirs:
        recs = [(names[d], s, *_finite_first_layer(d, s, names[d])) for s in chosen_steps(d, steps)]
        frames.append(pd.DataFrame(recs, columns=["run", "step", "W", "geometry"]))
    return _with_config(frames, dirs, names)


def load_spectra(paths, step: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spectra of the first layer at checkpoint ``step`` (default: the last) of every run.

    Returns:
        eigenvalues: ``run, eigenvalue, alpha, xmin`` + config: the eigenvalues of W^T W and their power-law
            fit p(lambda) ~ lambda^-alpha for lambda >= xmin (weightwatcher's fit, probe.metrics.spectral).
        unit spectra: ``run, frequency, power``: the mean over units of each field's power spectrum normalized
            to sum 1, per |f| in cycles per grid length (DC left out), in the original pixel order.
    """
    dirs = run_dirs(paths)
    names = run_names(dirs)
    eig_frames, spec_frames = [], []
    for d in dirs:
        s = chosen_steps(d, None if step is None else [step])[-1]
        W, geo = _finite_first_layer(d, s, names[d])
        ev = eigenvalues(W)
        fit = alpha_fit(W, ev)
        eig_frames.append(pd.DataFrame({"run": names[d], "step": s, "eigenvalue": ev, "alpha": fit["alpha"],
                                        "xmin": fit["xmin"]}))
        P = unit_spectra(W, geo)
        P = P[:, 1:] / np.maximum(P[:, 1:].sum(1, keepdims=True), 1e-300)
        f = frequency_magnitudes(geo)[1:]
        mean = pd.DataFrame({"frequency": f, "power": P.mean(0)}).groupby("frequency", as_index=False).sum()
        mean.insert(0, "run", names[d])
        spec_frames.append(mean)
    return _with_config(eig_frames, dirs, names), _with_config(spec_frames, dirs, names)


def load_routing(paths, n: int = 64, example: int = 0, seed: int = 0) -> pd.DataFrame:
    """Routing maps of sequence runs on the same test inputs: ``run, example, out_pos, in_pos, weight, source``.

    For each run's final model: the Jacobian routing map A_s of the correct-answer logit (an MLP, or any model),
    and for models with attention the attention row of the best head (``attention_scores``); ``method`` says which.
    Rows are normalized to sum 1. Only test example ``example`` of n drawn with ``seed`` is kept (content routing
    differs per example, so a mean would blur it); ``source`` marks its ground-truth source positions (for key-value
    tasks the matching key and its value).
    Image runs are skipped.
    """
    dirs = run_dirs(paths)
    names = run_names(dirs)
    frames = []
    for d in dirs:
        last = chosen_steps(d)[-1]
        run = load_run(d, last)
        model, geo, task = run.model, run.geometry, run.task
        if geo.kind != "sequence":
            frames.append(None)
            continue
        T, C = geo.spatial[0], geo.channels
        idx = torch.randperm(len(task.x_test), generator=torch.Generator().manual_seed(seed))[:n]
        x, y = task.x_test.cpu()[idx], task.y_test.cpu()[idx]
        src = task.extras.get("source_test")
        src = None if src is None else src.cpu()[idx]
        feats = torch.nn.functional.one_hot(x, C).float() if task.vocab else x.reshape(len(x), T, C)
        maps = R.jacobian_maps(model, feats, y, src, task.info.get("query_pos"), task.info.get("source_key_offset"))
        kinds = [("jacobian", maps)]
        if hasattr(model, "attention_maps"):
            best = R.attention_scores(model.attention_maps(x), maps)
            attn = model.attention_maps(x)[int(best["attn_layer"])][:, int(best["attn_head"])]
            kinds = [(f"attention (layer {int(best['attn_layer'])}, head {int(best['attn_head'])})",
                      R.attention_routing(attn, maps))]
        recs = []
        for kind, m in kinds:
            for i in np.nonzero(m.example == example)[0]:
                row = m.A[i] / max(m.A[i].sum(), 1e-300)
                q = int(m.out_pos[i]) if m.out_pos[i] >= 0 else T - 1
                recs += [(names[d], kind, example, q, s, float(row[s]), s in (m.source[i], m.key[i])) for s in range(T)]
        frames.append(pd.DataFrame(recs, columns=["run", "method", "example", "out_pos", "in_pos", "weight", "source"]))
    return _with_config(frames, dirs, names)


# -- end-of-run values ------------------------------------------------------------------------------------------
def load_final(paths) -> pd.DataFrame:
    """``run, metric, value`` + config columns: one row per run and metric at the end of the run.

    Metrics: the last logged value of every key of metrics.jsonl (accuracies, losses, tracked measures), the
    final measures of a sweep run (result.json: ``lie_derivative``, ``shift_consistency_1``, ...) and the numeric
    results of a procedure (procedure.json: ``cnn_test_acc``, ``line_barrier``, ``sparsity``, ...). Nulls of
    final measures (``NAME@init``) are kept as metrics of their own; the tracked measures' nulls are in
    :func:`load_references`. Config columns add ``task.n_train``, the training examples the run really had
    (task.json; a config's ``n_train = 0`` means the whole split).
    """
    dirs = run_dirs(paths)
    names = run_names(dirs)
    frames = []
    for d in dirs:
        recs = [(names[d], k, float(v)) for k, v in end_values(d).items()
                if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]
        f = pd.DataFrame(recs, columns=["run", "metric", "value"])
        try:
            f["task.n_train"] = json.loads((d / "task.json").read_text())["n_train"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):  # a damaged task.json: no n_train column
            pass
        frames.append(f)
    return _with_config(frames, dirs, names)


def final_stats(final: pd.DataFrame, refs: pd.DataFrame | None = None, by=()) -> pd.DataFrame:
    """Over seeds, per setting of the config keys ``by`` (seed left out): every end-of-run metric's mean, sd, n and
    95% Student's t interval, and its paired difference to each of its nulls (the tracked measures' references of
    :func:`load_references`, a final measure's ``NAME@KIND``), as :func:`probe.sweep.stats.seed_stats`:
    ``*by, measure, null, n, mean, sd, ci_low, ci_high, interval``. ``final``: :func:`load_final`'s table."""
    by = [k for k in by if k in final.columns and k != "seed"]
    wide = final.pivot_table(index="run", columns="metric", values="value", aggfunc="first")
    if refs is not None and len(refs):
        r = refs.assign(metric=refs.metric + "@" + refs.reference)
        r = r.pivot_table(index="run", columns="metric", values="value", aggfunc="first")
        wide = wide.join(r[[c for c in r.columns if c not in wide.columns]], how="left")
    keys = final.drop_duplicates("run").set_index("run")[by]
    wide = keys.join(wide).reset_index()
    wide.columns = [str(c) for c in wide.columns]
    return seed_stats(wide.drop(columns=["run"]), by)


def load_interpolation(paths) -> pd.DataFrame:
    """``run, pair, alpha, split, loss`` + config columns: the losses on the straight lines that
    :func:`probe.run.procedures.ecnn.ecnn` writes to interpolation.json: ``pair`` "eCNN -> MLP" (alpha 0: the eCNN,
    1: the plain MLP) and its null "MLP -> MLP, another seed (null)". Runs without the file are skipped."""
    dirs = run_dirs(paths)
    names = run_names(dirs)
    frames = []
    for d in dirs:
        try:
            line = json.loads((d / "interpolation.json").read_text())
        except (OSError, ValueError):
            frames.append(None)
            continue
        recs = []
        for pair, ln in (("eCNN -> MLP", line), ("MLP -> MLP, another seed (null)", line.get("null"))):
            for split in ("train_loss", "test_loss") if ln else ():
                recs += [(names[d], pair, a, split.removesuffix("_loss"), v)
                         for a, v in zip(ln["alpha"], ln.get(split, []))]
        frames.append(pd.DataFrame(recs, columns=["run", "pair", "alpha", "split", "loss"]))
    return _with_config(frames, dirs, names)


# -- recurrence ----------------------------------------------------------------------------------------
def load_dependence(paths, n: int = 256, seed: int = 0) -> pd.DataFrame:
    """``run, t, s, value`` + config columns: the dependence map M[t, s] = E_x ||d r_t / d x_s||^2 of each run's
    final model on n test inputs drawn with ``seed`` (:func:`probe.metrics.recurrence.dependence_map`), divided by
    its sum, for sequence runs with an answer at every position (other runs are skipped). Rows where nothing is
    asked are left out."""
    dirs = run_dirs(paths)
    names = run_names(dirs)
    frames = []
    for d in dirs:
        run = load_run(d, chosen_steps(d)[-1])
        task, model = run.task, run.model
        if task.geometry.kind != "sequence" or task.loss != "ce" or task.y_test.dim() != 2:
            frames.append(None)
            continue
        idx = torch.randperm(len(task.x_test), generator=torch.Generator().manual_seed(seed))[:n]
        x, y = task.x_test.cpu()[idx], task.y_test.cpu()[idx]
        feats = torch.nn.functional.one_hot(x, task.geometry.channels).float()
        model.eval()
        M = dependence_map(model, feats, y)
        M = M / np.nansum(M) if np.nansum(M) > 0 else M
        t, s = np.nonzero(np.isfinite(M))
        frames.append(pd.DataFrame({"run": names[d], "t": t, "s": s, "value": M[t, s]}))
    return _with_config(frames, dirs, names)
