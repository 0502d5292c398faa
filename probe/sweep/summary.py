"""The summary of a sweep folder: one row per run, what it varied and what it ended with (``probe sweep
FOLDER --summary``)."""

from __future__ import annotations

import json
from pathlib import Path

from probe.analysis.scaling import sample_complexity, seed_fits
from probe.config import ConfigError, flatten_config
from probe.metrics.registry import current_keys
from probe.run.checkpoint import atomic_write
from probe.run.errors import StorageError
from probe.run.folder import read_json_file
from probe.run.metrics_file import last_values
from probe.run.tracking import read_references
from probe.sweep.execute import RESULT_FILE, json_dict, run_status
from probe.sweep.spec import MANIFEST
from probe.sweep.stats import seed_stats

FIRST_COLUMNS = ("run", "status")
RESULT_COLUMNS = ("step", "test_acc", "test_loss", "train_acc", "train_loss")


def write_csv(table, path: Path) -> None:
    """``table`` as CSV at ``path``, written atomically; a StorageError naming the file when it cannot be."""
    text = table.to_csv(index=False)
    try:
        atomic_write(path, lambda f: f.write(text.encode()))
    except OSError as e:
        raise StorageError(f"cannot write {path} ({e.strerror or e})") from None


def summarize(sweep_dir, write: bool = True):
    """One row per run: run, status, the varied keys, the last logged value of every metric (accuracies, losses,
    tracked measures), the tracked measures on their references as ``MEASURE@REFERENCE`` (init, gaussian,
    permuted), procedure results, final measures and seconds. Writes ``summary.csv`` (and ``summary.parquet``
    when pyarrow is installed) into the sweep folder. A folder without ``sweep.json`` is read as a folder of run
    folders whose varied keys are the config keys that differ, and nothing is written into it (it is not a sweep's
    to write into); a run folder itself is refused."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    runs, columns = _manifest_runs(sweep_dir)
    write = write and (sweep_dir / MANIFEST).is_file()
    rows = []
    for name, varied in runs:
        d = sweep_dir / name
        row = {"run": name, "status": run_status(d), **varied}
        row.update({k: v for k, v in end_values(d).items() if k != "lr"})
        for ref, measures in read_references(d).items():
            row.update({f"{m}@{ref}": v for m, v in measures.items()})
        result = json_dict(d / RESULT_FILE) or {}  # how the run ended (seconds, an error), beside what it measured
        row.update({k: v for k, v in result.items() if k not in ("run", "status", "test_acc", "test_loss", "measures")
                    and (v is None or isinstance(v, (int, float, str)))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        first = [c for c in (*FIRST_COLUMNS, *columns, *RESULT_COLUMNS) if c in df.columns]
        df = df[first + [c for c in df.columns if c not in first]]
    if write:
        write_csv(df, sweep_dir / "summary.csv")
        try:
            df.to_parquet(sweep_dir / "summary.parquet", index=False)
        except ImportError:  # pyarrow (or fastparquet) not installed: CSV only, and no stale parquet beside it
            (sweep_dir / "summary.parquet").unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"cannot write {sweep_dir / 'summary.parquet'} ({e.strerror or e}); summary.csv is "
                               "written") from None
    return df


def end_values(run_dir) -> dict:
    """What a run ended with: every key of metrics.jsonl at its last logged value, the numeric results of its
    procedure (procedure.json: ``cnn_test_acc``, ``line_barrier``, ``sparsity``, ...) and its final measures with
    their nulls (result.json's ``measures``: ``lie_derivative``, ``lie_derivative@init``, ...). Keys an earlier
    version wrote for a null (``position_ipr_random``) are read as today's (``position_ipr@gaussian``:
    :func:`probe.metrics.registry.current_keys`)."""
    d = Path(run_dir)
    out = last_values(d)
    for fname in ("procedure.json", RESULT_FILE):
        extra = json_dict(d / fname)
        extra = (extra or {}).get("measures", {}) if fname == RESULT_FILE else extra
        if not isinstance(extra, dict):  # missing, or damaged (a list, a string): nothing to read from it
            continue
        out.update({k: v for k, v in current_keys(extra).items() if v is None or isinstance(v, (int, float, str))})
    return out


def _manifest_runs(sweep_dir: Path):
    manifest = sweep_dir / MANIFEST
    if manifest.exists():
        m = read_json_file(manifest, "the sweep's runs")
        runs, columns = m.get("runs"), m.get("columns")
        if not (isinstance(runs, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"]
                                               and "/" not in r["name"] and isinstance(r.get("varied"), dict)
                                               for r in runs)
                and isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise ConfigError(f"{manifest}: damaged (its runs or columns are not what probe writes); start the sweep "
                              "again from its spec to rewrite it")
        return [(r["name"], r["varied"]) for r in runs], tuple(columns)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: not a sweep folder")
    if (sweep_dir / "config.json").is_file():
        raise ConfigError(f"{sweep_dir}: a run folder, not a sweep folder (`probe sweep FOLDER --summary` reads a "
                          "sweep's folder or a folder of run folders)")
    found = sorted(p.parent for p in sweep_dir.glob("*/config.json"))
    if not found:
        raise ConfigError(f"{sweep_dir}: not a sweep folder (no {MANIFEST}, no run folders with config.json)")
    flat = [flatten_config(read_json_file(d / "config.json", "the run's config")) for d in found]
    keys = [k for k in flat[0] if any(f.get(k) != flat[0].get(k) for f in flat)]
    keys += sorted({k for f in flat for k in f} - set(flat[0]))
    return [(d.name, {k: f.get(k) for k in keys}) for d, f in zip(found, flat)], tuple(keys)


STATS_FILE = "stats.csv"


def summary_stats(sweep_dir, df=None, write: bool = True):
    """Mean, sd, n and the 95% t interval over seeds of every measure per setting of the varied keys (all but
    seed), and the paired difference of each measure to each of its nulls (:func:`probe.sweep.stats.seed_stats`),
    from the summary ``df`` (default: :func:`summarize`). Written to ``stats.csv`` in a sweep folder."""
    sweep_dir = Path(sweep_dir)
    _, columns = _manifest_runs(sweep_dir)
    df = summarize(sweep_dir, write=False) if df is None else df
    table = seed_stats(df, [c for c in columns if c != "seed"])
    if write and (sweep_dir / MANIFEST).is_file():
        write_csv(table, sweep_dir / STATS_FILE)
    return table


EXPONENTS_FILE = "exponents.csv"
EXPONENT_SEEDS_FILE = "exponents_seeds.csv"  # one fit per seed: the rows the exponents' intervals are read from


def size_column(columns) -> str | None:
    """The varied key that sets the training set size (``task_opts.n_train``, or any key ending in n_train)."""
    found = [c for c in columns if c == "n_train" or str(c).endswith(".n_train")]
    return found[0] if found else None


def exponents(sweep_dir, df=None, write: bool = True):
    """Sample-complexity exponents of a data-size sweep (:mod:`probe.analysis.scaling`): test error 1 - test_acc
    against the number of training examples each run really had (task.json's ``n_train``, so ``n_train = 0``, the
    whole split, counts as its size), as err = a n^(-b), fitted per seed for every combination of the other varied
    keys (the model variant, the task, ...); mean and sd of b over seeds. Only finished runs count. None when the
    sweep varies no ``n_train`` key or holds no sweep.json; else the table, written to ``exponents.csv``, beside
    each seed's own fit in ``exponents_seeds.csv`` (the rows a claim's interval over seeds is read from)."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / MANIFEST).is_file():
        return None
    _, columns = _manifest_runs(sweep_dir)
    size = size_column(columns)
    if size is None:
        return None
    df = summarize(sweep_dir, write=False) if df is None else df
    if "test_acc" not in df.columns:
        return None
    df = df[df["status"] == "done"].copy()
    n = []
    for run in df["run"]:
        try:
            n.append(int(json.loads((sweep_dir / run / "task.json").read_text())["n_train"]))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            n.append(None)
    df["n"], df["err"] = n, 1.0 - df["test_acc"].astype(float)
    df = df.dropna(subset=["n", "err"])
    by = [c for c in columns if c not in (size, "seed") and c in df.columns]
    table = sample_complexity(df, by, n="n", err="err", seed="seed" if "seed" in df.columns else "_none_")
    if write and len(table):
        write_csv(table, sweep_dir / EXPONENTS_FILE)
        write_csv(seed_fits(df, by, n="n", err="err", seed="seed" if "seed" in df.columns else "_none_"),
                  sweep_dir / EXPONENT_SEEDS_FILE)
    return table
