"""`probe figures RUN... --out DIR`: every figure that applies to a set of runs, as PDF + PNG.

Loads the runs' tidy tables (probe/figures/tables.py), draws them (probe/figures/plots.py) and writes:

- ``PREFIXmeasures``: tracked measures over training steps, references as bands (runs that tracked measures);
- ``PREFIXaccuracy``: test accuracy over steps;
- ``PREFIXfields``: receptive fields at the first, middle and last checkpoint (or ``steps``), a row per run;
- ``PREFIXspectra``: eigenvalue distribution of the last first layer with its power-law fit, per-unit spectra;
- ``PREFIXrouting``: for sequence runs, each model's routing map on the same test example;
- ``PREFIXfinal`` (with ``x``): end-of-run values against a swept config key, with their nulls;
  ``PREFIXfinal_stats.csv`` beside it: per (hue, x) the mean, sd, n and 95% t interval over seeds of every
  end-of-run value, and its paired difference to each of its nulls (:func:`probe.figures.tables.final_stats`);
- ``PREFIXinterpolation``: the loss on the straight line eCNN -> plain MLP (procedure ecnn runs).

A figure that does not apply (no tracked measures, no sequence runs) is skipped with a one-line message.

One task per figure: runs of several tasks (or of one task at two input sizes) are drawn as one set of figures
per task, ``PREFIXTASK_measures`` and so on, with a line saying so, unless ``task`` is asked for as ``hue``,
``group_by`` or ``x``; then they share the figures, with a line saying that too, and each task keeps its own
references (probe/figures/plots.py never averages two tasks' nulls).
"""

from __future__ import annotations

from pathlib import Path

from probe.figures import tables as figdata, plots
from probe.config import ConfigError
from probe.progress import Progress
from probe.run.errors import StorageError
from probe.run.folder import check_out
from probe.metrics.registry import MEASURES
from probe.tasks import task_specs
from probe.analysis.terminal import unfinished_note

MAX_WEIGHT_RUNS = 6  # field grids and spectra of more runs are unreadable; the first ones are drawn


def make_figures(paths, out, group_by: str | None = None, hue: str | None = None, steps=None, prefix: str = "",
                 which=("measures", "accuracy", "fields", "spectra", "routing", "interpolation"), measures=None,
                 references=("gaussian", "permuted"), say=print, x: str | None = None, final=None,
                 final_references=("gaussian", "permuted"), xlabel: str | None = None,
                 progress: bool = False, mix_tasks: bool = False, overwrite: bool = True) -> list[Path]:
    """Draw the figures of the runs under ``paths`` into ``out``; returns the files written.

    Args:
        paths: run folders, or folders of run folders.
        group_by, hue: config keys (``model``, ``width``, ``seed``, ``task_opts.gain``); see probe/figures/plots.py.
        steps: checkpoint steps for the field grids (nearest available); default first, middle, last.
        prefix: prepended to every file name (``mnist1d_`` -> ``mnist1d_measures.png``).
        which: the figures to draw.
        measures: the measures to draw over steps (default: every tracked one).
        references: the references drawn beside them (reference.json: gaussian, permuted, init).
        say: where the one-line messages about skipped figures go.
        x: config key of the ``final`` figure's x axis (``task.n_train``, ``task_opts.augment_shift``,
            ``variant``); without it that figure is not drawn.
        final: metrics of the ``final`` figure (default: test accuracy and every tracked measure), with
            ``final_references`` beside them or their ``@init`` null; ``xlabel`` its axis label.
        progress: show which figure is being drawn (a bar, or a line every few seconds, on standard error).
        mix_tasks: draw runs of several tasks in the same figures even when ``task`` is not ``hue``, ``group_by``
            or ``x`` (module docstring); the fields of two tasks side by side, for instance.
        overwrite: replace figure files already in ``out``; False refuses (ConfigError naming them) before anything
            is drawn (`probe figures` without ``--overwrite``).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    out = Path(out)
    dirs = figdata.run_dirs(paths)
    by_task = _task_groups(dirs)
    if not overwrite:
        split = len(by_task) > 1 and not mix_tasks and "task" not in (group_by, hue, x)
        _refuse_overwrite(Path(out), [f"{prefix}{t}_" for t in by_task] if split else [prefix], which, x)
    if len(by_task) > 1:
        listed = ", ".join(by_task)
        if not mix_tasks and "task" not in (group_by, hue, x):
            say(f"runs of {len(by_task)} tasks ({listed}): one set of figures per task ({prefix}TASK_...); "
                "--hue task, --group-by task or --mix-tasks draws them together")
            written = []
            for name, task_dirs in by_task.items():
                written += make_figures(task_dirs, out, group_by, hue, steps, f"{prefix}{name}_", which, measures,
                                        references, say, x, final, final_references, xlabel, progress)
            return written
        say(f"runs of {len(by_task)} tasks ({listed}) drawn together, as asked; each task keeps its own references")
    for d in dirs:  # drawn as far as they got, said once per run
        if unfinished_note(d):
            ref = "" if (d / "reference.json").exists() else "; no references yet (written at its end)"
            say(f"{d}: unfinished, {unfinished_note(d).split(': ', 1)[1].split(' (')[0]}: drawn as far as it got{ref}")
    runs = figdata.load_runs(dirs)
    if x is not None and "final" not in which:
        which = (*which, "final")
    _check_keys(runs, "--group-by/--hue", group_by, hue)
    _check_measures(runs, "--measures", measures)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    check_out(out)  # creatable and writable, before anything is drawn
    written: list[Path] = []
    bar = Progress(len(which), f"figures of {len(dirs)} runs", "figure", enabled=progress)
    drawn: list[str] = []

    def emit(name, make):
        drawn.append(name)
        bar.update(len(drawn) - 1, f"drawing {name}")
        try:
            fig = make()
        except ValueError as e:  # the figure does not apply to these runs
            say(f"{prefix}{name}: skipped ({e})")
            return
        try:
            written.extend(plots.save(fig, out, f"{prefix}{name}"))
        except OSError as e:
            kept = f"; the {len(written)} files written before it are kept" if written else ""
            raise StorageError(f"cannot write {e.filename or out} ({e.strerror or e}){kept}") from None
        bar.update(len(drawn), f"drew {name}")

    with bar:
        if "measures" in which:
            refs = figdata.load_references(dirs)
            emit("measures", lambda: plots.measures_figure(runs, refs if len(refs) else None, measures, hue, group_by,
                                                               references))
        if "accuracy" in which:
            emit("accuracy", lambda: plots.accuracy_figure(runs, hue=hue, group_by=group_by))
        if "final" in which:
            if x is None:
                say(f"{prefix}final: skipped (no --x config key to draw end-of-run values against)")
            else:
                table = figdata.load_final(dirs)
                refs = figdata.load_references(dirs)
                if final is None:
                    final = ["test_acc"] + plots.tracked_in(table.metric)
                _check_keys(table, "--x/--hue", x, hue)
                emit("final", lambda: plots.final_figure(table, x, final, refs if len(refs) else None, hue,
                                                         final_references, xlabel=xlabel))
                # the numbers behind it: mean, sd, n, 95% t interval over seeds and paired differences to nulls
                by = list(dict.fromkeys(k for k in (hue, x) if k))
                stats = figdata.final_stats(table, refs if len(refs) else None, by)
                try:
                    stats.to_csv(out / f"{prefix}final_stats.csv", index=False)
                except OSError as e:
                    raise StorageError(f"cannot write {out / f'{prefix}final_stats.csv'} ({e.strerror or e})") from None
                written.append(out / f"{prefix}final_stats.csv")
        if "interpolation" in which and any((d / "interpolation.json").exists() for d in dirs):
            emit("interpolation", lambda: plots.interpolation_figure(figdata.load_interpolation(dirs), hue=hue))
        few = dirs[:MAX_WEIGHT_RUNS]
        if len(dirs) > MAX_WEIGHT_RUNS and ({"fields", "spectra"} & set(which)):
            say(f"fields and spectra: drawing the first {MAX_WEIGHT_RUNS} of {len(dirs)} runs")
        if "fields" in which:
            emit("fields", lambda: plots.fields_grid_figure(figdata.load_fields(few, steps)))
        if "spectra" in which:
            emit("spectra", lambda: plots.spectra_figure(*figdata.load_spectra(few), hue=hue))
        if "routing" in which:
            seq = [d for d in dirs if figdata.flat_config(d).get("task") in _sequence_tasks()]
            if not seq:
                say(f"{prefix}routing: skipped (no sequence runs)")
            else:
                emit("routing", lambda: plots.routing_figure(figdata.load_routing(seq[:MAX_WEIGHT_RUNS])))
    return written


FIGURE_NAMES = ("measures", "accuracy", "final", "interpolation", "fields", "spectra", "routing")


def _refuse_overwrite(out: Path, prefixes, which, x) -> None:
    """A one-line error naming the figure files in ``out`` that drawing would replace (any figure of ``which``,
    with each of ``prefixes``, as .pdf or .png)."""
    names = [n for n in FIGURE_NAMES if n in which or (n == "final" and x is not None)]
    taken = [f"{p}{n}{ext}" for p in prefixes for n in names for ext in (".pdf", ".png")
             if (out / f"{p}{n}{ext}").exists()]
    if taken:
        shown = ", ".join(taken[:4]) + (f" and {len(taken) - 4} more" if len(taken) > 4 else "")
        raise ConfigError(f"--out {out}: would replace {len(taken)} existing file(s) ({shown}); give --overwrite to "
                          "replace them, or another --out or --prefix")


def _task_groups(dirs) -> dict:
    """Run folders per task, named by the task (and its input size where one task comes at two sizes), in order."""
    groups: dict = {}
    for d in dirs:
        groups.setdefault((figdata.flat_config(d).get("task"), figdata.input_shape(d)), []).append(d)
    tasks = [t for t, _ in groups]
    return {(str(t) if tasks.count(t) == 1 else f"{t}-{shape}"): ds for (t, shape), ds in groups.items()}


def _check_measures(runs, flag: str, names) -> None:
    """A one-line error for names that are neither a measure (the registry's keys) nor a metric of these runs."""
    if not names:
        return
    present = set(runs.metric) if "metric" in runs.columns else set()
    known = {k for m in MEASURES.values() for k in (m.name, *m.outputs)} | present
    unknown = [n for n in names if n not in known]
    if unknown:
        have = sorted(present) or ["none"]
        raise ConfigError(f"{flag} {','.join(unknown)}: no such measure (`probe measures` lists them); these runs' "
                          f"metrics: {', '.join(have)}")


def _check_keys(table, flags: str, *keys) -> None:
    """A one-line error naming the valid config keys when one of ``keys`` is not a column of ``table``."""
    for key in keys:
        if key is not None and key not in table.columns:
            valid = sorted(c for c in table.columns if c not in ("run", "step", "metric", "value"))
            raise ConfigError(f"{flags} {key}: no such config key in these runs; valid: {', '.join(valid)}")


def _sequence_tasks() -> set[str]:
    return {name for name, spec in task_specs().items() if spec.kind == "sequence"}
