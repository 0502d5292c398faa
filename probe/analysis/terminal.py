"""`probe analyze` on a terminal: a report as rich tables, each measure beside its references."""

from __future__ import annotations

import math

from rich.table import Table

from probe.analysis.report import FUNCTION, REFERENCES, Report


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
        t = Table("measure", "value", *REFERENCES, title=_title(rep, name), title_justify="left", box=None)
        for measure, v in values.items():
            t.add_row(measure, fmt(v), *[fmt(rep.reference.get(r, {}).get(name, {}).get(measure)) for r in REFERENCES])
        tables.append(t)
    return tables


def steps_tables(reps: list[Report]) -> list:
    """One rich Table per layer over a run's steps: a column per step, the last step's references beside."""
    last = reps[-1]
    tables = []
    for name, values in last.sections().items():
        refs = ("gaussian", "permuted", "phase")
        cols = [f"step {r.step}" for r in reps] + [f"{ref} (last)" for ref in refs]
        t = Table("measure", *cols, title=_title(last, name), title_justify="left", box=None)
        for measure in values:
            row = [fmt(r.sections().get(name, {}).get(measure)) for r in reps]
            row += [fmt(last.reference.get(ref, {}).get(name, {}).get(measure)) for ref in refs]
            t.add_row(measure, *row)
        tables.append(t)
    return tables


def header(rep: Report) -> str:
    """One line saying what was measured."""
    what = f"{rep.model} on {rep.task}" if rep.model else "plain state_dict"
    step = f", step {rep.step}" if rep.step is not None else ""
    return f"{rep.checkpoint}: {what}{step}, input {rep.geometry.describe()}"
