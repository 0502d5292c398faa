"""The ecnn preset's comparisons at equal steps, as paired differences per seed (results/ecnn-quick-paired/).

The sweep's own summary (``probe sweep FOLDER --summary``, copied to results/ecnn-quick/) has one row per run. The
questions of the d'Ascoli et al. row compare runs of one seed with each other, which a difference to a null of the
same row lets the claims check (probe.sweep.claims) and stats.csv read. Each row here is one run of the sweep with,
beside its own values, the same seed's:

- ``test_acc@cnn``: the ``cnn`` run (3000 steps); ``test_acc@cnn_long``: the ``cnn-long`` run (6000 steps: the
  budget of an eCNN embedded after t = 3000 CNN steps and trained 3000 more);
- ``test_acc@embedded``: the CNN (or LCN) the eCNN was embedded from, at t steps (``cnn_test_acc``);
- ``test_acc@mlp_budget``: the plain MLP of the eCNN's shape trained t + 3000 steps (``mlp_test_acc``);
- ``line_best_acc``: the best test accuracy at an interior point of the straight line from the eCNN to that plain
  MLP (its hidden units aligned to the eCNN's; alpha = 0.1 .. 0.9, interpolation.json), with the same ``@cnn``,
  ``@cnn_long`` nulls. The best of 9 points is chosen on the test set, so it is an optimistic reading: a point on
  the line that beats the CNN only counts if even this reading's interval lies above it.

    probe sweep --preset ecnn --jobs 2 --out runs/sweeps/ecnn-quick
    probe sweep runs/sweeps/ecnn-quick --summary
    python scripts/ecnn_pairs.py runs/sweeps/ecnn-quick        # results/ecnn-quick-paired/{summary,stats}.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from probe.sweep.stats import seed_stats
from probe.sweep.summary import write_csv

ROOT = Path(__file__).resolve().parents[1]
KEEP = ["run", "status", "variant", "seed", "test_acc", "cnn_test_acc", "mlp_test_acc", "conv_distance_5",
        "conv_distance_5@lcn", "conv_subspace_distance", "conv_subspace_distance@mlp", "conv_subspace_distance_all",
        "conv_subspace_distance_all@mlp", "window_mass_3", "window_mass_3@phase", "movement",
        "line_error_barrier", "line_error_barrier@mlps"]


def line_best(run: Path) -> float:
    """The best test accuracy at an interior point of the aligned line eCNN -> plain MLP (NaN without one)."""
    f = run / "interpolation.json"
    if not f.is_file():
        return float("nan")
    line = json.loads(f.read_text())
    inner = [a for x, a in zip(line["alpha"], line["test_acc"]) if 0 < x < 1]
    return max(inner) if inner else float("nan")


def pairs(sweep: Path) -> pd.DataFrame:
    df = pd.read_csv(sweep / "summary.csv")
    df = df[df["status"] == "done"]
    by_seed = {v: g.set_index("seed")["test_acc"] for v, g in df.groupby("variant")}
    out = df[[c for c in KEEP if c in df.columns]].copy()
    for name, variant in (("cnn", "cnn"), ("cnn_long", "cnn-long")):
        out[f"test_acc@{name}"] = out["seed"].map(by_seed.get(variant, {}))
    out["test_acc@embedded"] = out.get("cnn_test_acc")
    out["test_acc@mlp_budget"] = out.get("mlp_test_acc")
    out["line_best_acc"] = [line_best(sweep / r) for r in out["run"]]
    out["line_best_acc@cnn"] = out["test_acc@cnn"]
    out["line_best_acc@cnn_long"] = out["test_acc@cnn_long"]
    return out.drop(columns=[c for c in ("cnn_test_acc", "mlp_test_acc") if c in out.columns])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="the ecnn sweep folder, summarized (probe sweep FOLDER --summary)")
    ap.add_argument("--name", default="ecnn-quick-paired", help="results/NAME receives summary.csv and stats.csv")
    args = ap.parse_args(argv)
    if not (args.sweep / "summary.csv").is_file():
        print(f"{args.sweep}: no summary.csv (run probe sweep {args.sweep} --summary first)", file=sys.stderr)
        return 2
    table = pairs(args.sweep)
    out = ROOT / "results" / args.name
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "summary.csv")
    stats = seed_stats(table, by=("variant",))
    write_csv(stats, out / "stats.csv")
    show = stats[stats["measure"].isin(["test_acc", "line_best_acc"])]
    print(show[["variant", "measure", "null", "n", "mean", "ci_low", "ci_high"]].round(3).to_string(index=False))
    print(f"wrote {out}/summary.csv and stats.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
