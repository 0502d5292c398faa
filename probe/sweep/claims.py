"""Claims: every number the Findings quote, recomputed from the committed per-run tables (results/).

``results/PRESET-SCALE/summary.csv`` is a sweep's summary (``probe sweep FOLDER --summary``: one row per run, its
final values and their nulls as ``MEASURE@NULL``), copied in by :func:`collect`. ``results/claims.csv`` has one
row per quoted number:

- ``claim``: an id; ``doc``: the file that quotes it (docs/findings.md, README.md);
- ``table``: the folder under results/ whose summary.csv it comes from, or a file there with one row per run or
  per seed (``data-size-quick/exponents_seeds.csv``: each seed's sample-complexity exponent); ``where``: the runs
  it is read on, as ``key=value`` pairs joined by ``;`` (``variant=mlp;task=mnist1d``);
- ``measure`` and ``null``: the measure's final value over seeds (``null`` empty), or its paired difference to
  the null ``measure@null`` per seed; where the table has no ``measure@null`` column, ``null`` names the column
  to subtract itself (``dS_grad`` minus ``dS@random``, a distance minus the ``diffusion`` column of the same run);
- ``effect``, ``ci_low``, ``ci_high``, ``seeds``: the mean, its 95% Student's t interval over seeds and n
  (:mod:`probe.sweep.stats`), rounded to 3 decimals;
- ``text``: the words the doc quotes, which must hold :func:`quote` of the recomputed numbers; a difference
  whose interval includes 0 must say "no effect detected at this n";
- ``command``: what regenerates the runs.

:func:`check` recomputes each claim from the tables and returns what disagrees, and any interval a doc quotes
that none of its claims gives (a number typed by hand); tests/test_claims.py fails on either.
``python -m probe.sweep.claims`` prints the check, and with ``--quote TABLE WHERE MEASURE [NULL]`` the text to
quote for a new claim.
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

from probe.sweep.stats import interval

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
CLAIMS = RESULTS / "claims.csv"
NO_EFFECT = "no effect detected at this n"
INTERVAL = re.compile(r"[+-]?\d[\d.]* \(95% CI [^)]*\)")  # a quoted number with its interval, as quote() writes it
COLUMNS = ("claim", "doc", "table", "where", "measure", "null", "effect", "ci_low", "ci_high", "seeds", "text",
           "command")


def _match(value, wanted: str) -> bool:
    if str(value) == wanted:
        return True
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return False


def recompute(table: str, where: str, measure: str, null: str = "", results: Path = RESULTS) -> dict:
    """``n, mean, sd, ci_low, ci_high`` of ``measure`` (or ``measure - measure@null`` per run, or ``measure - null``
    where ``null`` is a column and ``measure@null`` is not) over the finished runs of ``results/table/summary.csv``
    (or of the file ``results/table`` itself, where ``table`` names a .csv) that match ``where``."""
    import pandas as pd

    df = pd.read_csv(Path(results) / table if table.endswith(".csv") else Path(results) / table / "summary.csv")
    if "status" in df.columns:
        df = df[df["status"] == "done"]
    for pair in filter(None, where.split(";")):
        key, _, value = pair.partition("=")
        if key not in df.columns:
            raise KeyError(f"{table}: no column {key!r}")
        df = df[df[key].map(lambda v, value=value: _match(v, value))]
    ref = f"{measure}@{null}" if f"{measure}@{null}" in df.columns or null not in df.columns else null
    if measure not in df.columns or (null and ref not in df.columns):
        raise KeyError(f"{table}: no column {measure if measure not in df.columns else ref!r}")
    x = pd.to_numeric(df[measure], errors="coerce")
    if null:
        x = x - pd.to_numeric(df[ref], errors="coerce")
    return interval(x)


def quote(stats: dict, difference: bool, digits: int = 3) -> str:
    """The words a doc quotes for a number: ``+0.035 (95% CI +0.031 to +0.039, 5 seeds)`` for a difference to a
    null, ``0.662 (95% CI 0.650 to 0.674, 5 seeds)`` for a value."""
    f = (lambda v: f"{v:+.{digits}f}") if difference else (lambda v: f"{v:.{digits}f}")
    return f"{f(stats['mean'])} (95% CI {f(stats['ci_low'])} to {f(stats['ci_high'])}, {stats['n']} seeds)"


def said(stats: dict, difference: bool) -> str:
    """The words a doc quotes for a recomputed number: :func:`quote`, inside "no effect detected at this n (...)"
    for a difference whose interval includes 0."""
    q = quote(stats, difference)
    return f"{NO_EFFECT} ({q})" if difference and stats["ci_low"] <= 0 <= stats["ci_high"] else q


def claim_row(claim: str, doc: str, table: str, where: str, measure: str, null: str = "", command: str = "",
              results: Path = RESULTS) -> dict:
    """A new row of the claims table, recomputed from ``results/table/summary.csv`` (its ``text`` is what the doc
    must quote: :func:`said`)."""
    s = recompute(table, where, measure, null, results)
    return dict(claim=claim, doc=doc, table=table, where=where, measure=measure, null=null,
                effect=f"{s['mean']:.3f}", ci_low=f"{s['ci_low']:.3f}", ci_high=f"{s['ci_high']:.3f}",
                seeds=str(s["n"]), text=said(s, bool(null)), command=command)


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def claims_table(prefix: str, doc: str, table: str, command: str, groups: dict[str, str],
                 cells: list[tuple[str, str, str]], results: Path = RESULTS) -> tuple[list[dict], str]:
    """The claims rows and the markdown table of one results table: a row per ``groups`` entry (its label: its
    ``where``), a column per ``cells`` entry (header, measure, null: a value, or its paired difference to the
    null); a cell no run has is ``-``. Claim ids are ``PREFIX-LABEL-HEADER``, slugged. The markdown quotes each
    cell's :func:`said` text, so that the doc holding the table passes :func:`check` once the rows are written."""
    rows, lines = [], ["| | " + " | ".join(h for h, _, _ in cells) + " |", "| --- " * (len(cells) + 1) + "|"]
    for label, where in groups.items():
        out = []
        for header, measure, null in cells:
            try:
                row = claim_row(f"{prefix}-{_slug(label)}-{_slug(header)}", doc, table, where, measure, null, command,
                                results)
            except KeyError:
                out.append("-")
                continue
            if int(row["seeds"]) < 2:
                out.append("-")
                continue
            rows.append(row)
            out.append(row["text"])
        lines.append(f"| {label} | " + " | ".join(out) + " |")
    return rows, "\n".join(lines)


def write_claims(rows: list[dict], path: Path = CLAIMS) -> None:
    """Replace the rows whose ``claim`` ids are among ``rows`` and append the others, keeping the table's order."""
    old = read_claims(path)
    new = {r["claim"]: r for r in rows}
    kept = [new.pop(r["claim"], r) for r in old]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows([*kept, *new.values()])


def read_claims(path: Path = CLAIMS) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check(path: Path = CLAIMS, root: Path = ROOT) -> list[str]:
    """What disagrees between the claims table, the per-run tables and the docs: one line per problem."""
    problems = []
    docs: dict[str, str] = {}
    given: dict[str, set] = {}  # the intervals each doc's claims quote
    for c in read_claims(path):
        cid = c["claim"]
        given.setdefault(c["doc"], set()).update(INTERVAL.findall(" ".join(c["text"].split())))
        try:
            s = recompute(c["table"], c["where"], c["measure"], c["null"], Path(path).parent)
        except (OSError, KeyError) as e:
            problems.append(f"{cid}: cannot recompute ({e})")
            continue
        if s["n"] != int(c["seeds"]):
            problems.append(f"{cid}: {s['n']} runs match, the table says {c['seeds']} seeds")
        for key, col in (("mean", "effect"), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
            if abs(round(s[key], 3) - float(c[col])) > 1e-9:
                problems.append(f"{cid}: {col} recomputes as {s[key]:.3f}, the table says {c[col]}")
        said = quote(s, bool(c["null"]))
        if said not in c["text"]:
            problems.append(f"{cid}: its text does not quote {said!r}: {c['text']!r}")
        if c["null"] and s["ci_low"] <= 0 <= s["ci_high"] and NO_EFFECT not in c["text"]:
            problems.append(f"{cid}: the interval includes 0, and the text does not say {NO_EFFECT!r}")
        if c["doc"] not in docs:
            try:
                docs[c["doc"]] = " ".join((Path(root) / c["doc"]).read_text().split())
            except OSError as e:
                problems.append(f"{cid}: cannot read {c['doc']} ({e.strerror})")
                docs[c["doc"]] = ""
        if docs[c["doc"]] and " ".join(c["text"].split()) not in docs[c["doc"]]:
            problems.append(f"{cid}: {c['doc']} does not quote its text {c['text']!r}")
    # the other way round: an interval a doc quotes that no claim of that doc gives was typed, not recomputed
    for doc, text in docs.items():
        for typed in sorted(set(INTERVAL.findall(text)) - given.get(doc, set())):
            problems.append(f"{doc}: quotes {typed!r}, which no claim of results/claims.csv gives")
    return problems


def collect(sweep_dir, name: str, results: Path = RESULTS) -> Path:
    """Copy a sweep's summary.csv and stats.csv (``probe sweep FOLDER --summary``), and a data-size sweep's
    exponents, to results/NAME/."""
    out = Path(results) / name
    out.mkdir(parents=True, exist_ok=True)
    for f in ("summary.csv", "stats.csv", "exponents.csv", "exponents_seeds.csv"):
        if (Path(sweep_dir) / f).is_file():
            shutil.copyfile(Path(sweep_dir) / f, out / f)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--quote"]:
        table, where, measure, *null = argv[1:]
        s = recompute(table, where, measure, null[0] if null else "")
        print(quote(s, bool(null)), f"  [effect {s['mean']:.3f}, ci {s['ci_low']:.3f} .. {s['ci_high']:.3f}]")
        return 0
    if argv[:1] == ["--collect"]:
        print(collect(argv[1], argv[2]))
        return 0
    problems = check()
    print("\n".join(problems) or f"{len(read_claims())} claims recompute from results/")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
