"""The mechanism experiments' per-seed tables as per-run summary tables that probe.sweep.claims reads.

Every ``results/mechanism/<experiment>.csv`` (the rows scripts/mechanism_step.py, mechanism_clone.py and
mechanism_stability.py append, one block per seed; ``<experiment>-medium.csv`` too, written with ``--n-train``)
becomes ``results/mechanism-<experiment>/summary.csv``: one row per row of the source (a seed, at one step, arm,
learning rate ...), with its key columns, its measure columns and their nulls as ``MEASURE@NULL`` columns, so
that a claim reads ``measure - measure@null`` per seed and its Student's t interval over seeds
(probe/sweep/claims.py). Nothing is hard-coded per file but the step ranges below; the rest follows from the
columns:

- key columns: the non-numeric ones (``arm``, ``model``, ``trained_on``: each a setting of the run) and the
  numeric ones in :data:`NUMERIC_KEYS` (seed, step, lr, n_train); every other numeric column is a measure, its
  nulls the columns already written ``MEASURE@NULL`` by the experiment;
- paired settings: for a categorical key K and each of its values v, ``MEASURE@v`` holds the same seed's
  MEASURE at K = v, every other key equal (``test_acc@none`` on a ``phase-keep`` row is the unperturbed arm of
  the same seed; ``acc_real_test@clone`` on an ``mlp, real`` row is the clone-trained MLP of that seed): the
  paired difference to another arm is then a claim's ``measure``/``null`` like any other (``@K=v`` where two
  keys share a value);
- small measures: where a measure's largest magnitude is below 0.05 (a change along one step, ~1e-3), a copy in
  thousandths ``MEASURE_e3`` (below 5e-5: millionths, ``MEASURE_e6``) with its nulls, so that the three decimals
  a claim quotes are not all zeros;
- step ranges: for an experiment with a ``step`` column, one more row per seed and range of :data:`RANGES`,
  its ``range`` column saying which steps (``1-10``: the steps present from 1 to 10) and each measure the
  seed's mean over them (a claim filters ``range=1-10``; the per-step rows have no range).

    python scripts/mechanism_tables.py            # every results/mechanism/*.csv
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "results" / "mechanism"
NUMERIC_KEYS = ("seed", "step", "lr", "n_train", "range")
# per experiment (its name without -medium): the step ranges whose per-seed means its claims read; the last range
# is open (up to the last step tracked)
RANGES = {"step": ((1, 10), (50, 500), (1000, None)),
          "stability_step": ((0, 5), (20, 100), (500, 999)),
          "early": ((1, 10), (20, 500))}
SCALES = ((5e-5, 1e6, "_e6"), (0.05, 1e3, "_e3"))  # (largest magnitude below, factor, suffix), smallest first


def _keys(df) -> tuple[list[str], list[str]]:
    """(categorical keys, numeric keys) of a source table."""
    cat = [c for c in df.columns if "@" not in c and c not in NUMERIC_KEYS
           and pd.to_numeric(df[c], errors="coerce").isna().all()]
    num = [c for c in NUMERIC_KEYS if c in df.columns]
    return cat, num


def _ranges(df, name: str) -> pd.DataFrame:
    """One row per seed (and setting) and step range: each measure's mean over the range's steps."""
    spans = RANGES.get(name.removesuffix("-medium"), ())
    if "step" not in df.columns or not spans:
        return df.iloc[0:0]
    cat, num = _keys(df)
    by = [c for c in cat + num if c != "step"]
    out = []
    for lo, hi in spans:
        part = df[(df["step"] >= lo) & ((df["step"] <= hi) if hi is not None else True)]
        if not len(part):
            continue
        label = f"{int(part['step'].min())}-{int(part['step'].max())}"
        means = part.drop(columns=["step"]).groupby(by, sort=False, dropna=False).mean(numeric_only=True).reset_index()
        means["range"] = label
        out.append(means)
    return pd.concat(out, ignore_index=True) if out else df.iloc[0:0]


def _scaled(df, measures: list[str]) -> dict[str, pd.Series]:
    """Copies in thousandths (or millionths) of the small measures and their nulls."""
    extra = {}
    for m in measures:
        family = [c for c in df.columns if c == m or c.startswith(f"{m}@")]
        top = pd.to_numeric(df[m], errors="coerce").abs().max()
        if not math.isfinite(top) or top == 0:
            continue
        for below, factor, suffix in SCALES:
            if top < below:
                for c in family:
                    name = f"{m}{suffix}" + c[len(m):]
                    extra[name] = pd.to_numeric(df[c], errors="coerce") * factor
                break
    return extra


def _paired(df, cat: list[str], num: list[str], measures: list[str]) -> dict[str, pd.Series]:
    """``MEASURE@v``: the same seed's measure where categorical key K is v, the other keys equal."""
    extra = {}
    values = {k: list(dict.fromkeys(df[k].dropna())) for k in cat}
    seen = [v for k in cat for v in values[k]]
    for k in cat:
        others = [c for c in cat + num if c != k]
        for v in values[k]:
            tag = v if seen.count(v) == 1 else f"{k}={v}"
            ref = df[df[k] == v][others + measures]
            joined = df[others].merge(ref, on=others, how="left", suffixes=("", "_ref"))
            for m in measures:
                extra[f"{m}@{tag}"] = joined[m].to_numpy()
    return extra


def table(path: Path) -> pd.DataFrame:
    """The summary table of one source CSV (module docstring)."""
    name = path.stem
    df = pd.read_csv(path)
    df = pd.concat([df, _ranges(df, name)], ignore_index=True)
    cat, num = _keys(df)
    for c in num:
        if c != "range":
            df[c] = pd.to_numeric(df[c], errors="coerce")
    measures = [c for c in df.columns if c not in cat + num and "@" not in c
                and pd.to_numeric(df[c], errors="coerce").notna().any()]
    extra = _scaled(df, measures)
    df = pd.concat([df, pd.DataFrame(extra, index=df.index)], axis=1)
    measures += [c for c in extra if "@" not in c]
    paired = _paired(df, cat, num, measures) if cat else {}
    df = pd.concat([df, pd.DataFrame(paired, index=df.index)], axis=1)
    df.insert(0, "status", "done")
    return df


def write(source: Path = SOURCE, results: Path | None = None) -> list[Path]:
    """Write results/mechanism-<experiment>/summary.csv for every source CSV; the paths written."""
    results = Path(results) if results is not None else source.parent
    out = []
    for path in sorted(Path(source).glob("*.csv")):
        df = table(path)
        folder = results / f"mechanism-{path.stem}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "summary.csv.tmp"
        df.to_csv(tmp, index=False)
        tmp.replace(folder / "summary.csv")
        out.append(folder / "summary.csv")
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    source = Path(argv[0]) if argv else SOURCE
    if not source.is_dir() or not any(source.glob("*.csv")):
        print(f"error: no mechanism tables (*.csv) in {source}", file=sys.stderr)
        return 2
    for p in write(source):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
