"""`probe analyze` on a terminal: a report as rich tables, each measure beside its references."""

from __future__ import annotations

import math

from rich.table import Table

from probe.analysis.report import FUNCTION, REFERENCES, Report
from probe.analysis.verdicts import AT_TOLERANCE, readings, stride_note
from probe.run.checkpoint import list_checkpoints


def fmt(v) -> str:
    """A value for a table cell: 4 significant digits, counts as integers, a dash for missing or NaN."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if float(v).is_integer() and abs(v) >= 1:
        return f"{int(v)}"
    return f"{v:.4g}"


def _title(rep: Report, name: str) -> str:
    if name == FUNCTION:
        return "function (test data)"
    m, n = rep.shapes[name]
    return f"{name}  ({m} x {n}{', first layer' if name == next(iter(rep.layers)) else ''})"


def report_tables(rep: Report) -> list:
    """One rich Table per layer (and the function section): each measure with its references beside it."""
    tables = []
    for name, values in rep.sections().items():
        # a reference with no value in this section (permuted beyond the first layer) gets no column
        refs = [r for r in REFERENCES if any(m in rep.reference.get(r, {}).get(name, {}) for m in values)]
        t = Table(title=_title(rep, name), title_justify="left", box=None)
        t.add_column("measure", no_wrap=True, min_width=max(map(len, values), default=7))  # full names: never cut
        for col in ("value", *refs):
            t.add_column(col, no_wrap=True)
        for measure, v in values.items():
            t.add_row(measure, fmt(v), *[fmt(rep.reference[r][name].get(measure)) for r in refs])
        tables.append(t)
    return tables


PIPE_WIDTH = 200  # characters of a line when output is not a terminal: tables are never squeezed for a file
CELL = 11  # characters of a value column: "step 10000" or "0.0001234", and rich's padding of one on each side


def shown_steps(n: int, width: int, label: int, refs: int) -> list[int]:
    """Indices of the steps whose columns fit ``width`` characters beside a measure column of ``label`` characters
    and ``refs`` reference columns: every step when they fit, else the first, the last and evenly spaced ones."""
    fit = max(2, (width - (label + 2) - refs * CELL) // CELL)
    if n <= fit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (fit - 1)) for i in range(fit)})


def steps_tables(reps: list[Report], width: int = 120) -> tuple[list, str | None]:
    """One rich Table per layer over a run's steps: a row per measure, a column per step (as many as fit
    ``width``: the first, the last and evenly spaced ones), the last step's references beside. Returns the tables
    and a note saying which steps were left out (None when all fit)."""
    last = reps[-1]
    refs = ("gaussian", "permuted")
    label = max((len(m) for r in reps for v in r.sections().values() for m in v), default=10)
    keep = shown_steps(len(reps), width, label, len(refs))
    tables = []
    for name, values in last.sections().items():
        have = [ref for ref in refs if last.reference.get(ref, {}).get(name)]
        t = Table(title=_title(last, name) + (f"; {', '.join(have)}: of step {last.step}" if have else ""),
                  title_justify="left", box=None)
        t.add_column("measure", no_wrap=True)  # full names: never cut
        for i in keep:
            t.add_column(f"step {reps[i].step}", justify="right", no_wrap=True)
        for ref in have:
            t.add_column(ref, justify="right", no_wrap=True)
        for measure in values:
            row = [fmt(reps[i].sections().get(name, {}).get(measure)) for i in keep]
            row += [fmt(last.reference[ref][name].get(measure)) for ref in have]
            t.add_row(measure, *row)
        tables.append(t)
    note = None
    if len(keep) < len(reps):
        note = (f"showing {len(keep)} of {len(reps)} checkpoints (steps {', '.join(str(reps[i].step) for i in keep)}) "
                f"to fit {width} columns; --csv FILE writes every step, or widen the terminal")
    return tables, note


def header(rep: Report) -> str:
    """One line saying what was measured."""
    what = f"{rep.model} on {rep.task}" if rep.model else "plain state_dict"
    step = f", step {rep.step}" if rep.step is not None else ""
    seen = "one patch" if next(iter(rep.layers), "").endswith(".patch") else "input"  # a patch embedding's grid
    return f"{rep.checkpoint}: {what}{step}, {seen} {rep.geometry.describe()}"



def verdict_lines(rep: Report) -> list[str]:
    """A short reading per structure measure, against the null that decides it (probe/analysis/verdicts.py):
    above / at / below it, by how much; and for a strided first layer, how its translation measures read."""
    lines = []
    for name in rep.sections():
        found = readings(rep.sections(), rep.reference, name)
        if found:
            lines.append(f"reading of {name} (each measure against the null that decides it; 'at' = within "
                         f"{AT_TOLERANCE:.0%} of it, one draw of each null):")
            lines += [f"  {line}" for line in found]
    note = stride_note(rep.checkpoint) if rep.checkpoint else None
    if note:
        lines.append(f"note: {note}")
    return lines


def unfinished_note(path) -> str | None:
    """For a path into a run folder whose training has not reached its last step: says how far it got and how to
    continue it (None for a finished run, a plain state_dict, or anything that is not a run folder)."""
    import json
    from pathlib import Path

    p = Path(path)
    run = p if p.is_dir() else p.parent.parent if p.parent.name == "checkpoints" else None
    if run is None or not (run / "config.json").is_file():
        return None
    try:
        steps = int(json.loads((run / "config.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # damaged: the loader says so, not this note
        return None
    ckpts = list_checkpoints(run)
    if not ckpts or ckpts[-1][0] >= steps:
        return None
    return (f"unfinished run: its last checkpoint is step {ckpts[-1][0]} of {steps} (interrupted, or still "
            f"training); `probe train --resume {run}` continues it")
