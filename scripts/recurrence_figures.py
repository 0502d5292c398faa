"""Figures and tables of the recurrence and spectrum presets (docs/findings-recurrence.md).

    probe sweep --preset recurrence --jobs 2      # the runs, into runs/sweeps/recurrence-quick (restartable)
    probe sweep --preset spectrum --jobs 2
    python scripts/recurrence_figures.py          # figures/recurrence_*, figures/spectrum_*
    python scripts/recurrence_figures.py --only spectrum --runs runs/sweeps  # one; RUNS/NAME-quick are the sweeps

Writes, as PNG and PDF:
- ``recurrence_final``: accuracy at T, 2T and 4T, time_sharing and causal_mass per task and model, with their
  @permuted and @init nulls (probe.figures.make.make_figures, the same figure as `probe figures --x task`);
- ``recurrence_dependence``: the dependence maps M[t, s] of the final models (seed 0), a row per model and a
  column per task; ``recurrence_distance``: their dependence on the distance t - s (mean over seeds);
- ``spectrum_curves``: error inside and outside the training range, relevant_weight_mass, relevant_grad_share,
  relevant_iv_share and zero_frac against the number of training examples, beside linear regression, the exact
  rule and the 2/D null.
and prints the tables the findings quote (means over seeds, each seed, the nulls).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from probe.figures import plots, tables  # noqa: E402
from probe.figures.make import make_figures  # noqa: E402


def recurrence(folder: Path, out: Path) -> list[Path]:
    written = make_figures([folder], out, x="task", hue="variant", prefix="recurrence_", which=(),
                           final=["test_acc", "test_acc_2T", "test_acc_4T", "time_sharing_iv", "causal_mass_iv",
                                  "time_sharing", "causal_mass"],
                           xlabel="task")
    written += make_figures([folder], out, hue="variant", group_by="task", prefix="recurrence_", which=("accuracy",))
    dep = tables.load_dependence([folder])
    written += plots.save(plots.dependence_figure(dep, seed=0), out, "recurrence_dependence")
    written += plots.save(plots.distance_figure(dep), out, "recurrence_distance")
    final = tables.load_final([folder])
    keys = ["test_acc", "test_acc_2T", "test_acc_4T", "time_sharing_iv", "time_sharing_iv@permuted", "causal_mass_iv",
            "time_sharing", "time_sharing@permuted", "time_sharing@init",
            "causal_mass", "causal_mass@permuted", "causal_mass@init", "routing_accuracy", "routing_accuracy@init"]
    print_table(final, ["task", "variant"], keys)
    return written


def spectrum(folder: Path, out: Path) -> list[Path]:
    final = tables.load_final([folder])
    written = plots.save(plots.spectrum_figure(final), out, "spectrum_curves")
    keys = ["rel_mse", "rel_mse@linreg", "rel_mse@rule", "extrap_rel_mse", "extrap_rel_mse@linreg",
            "extrap_rel_mse@rule", "relevant_weight_mass", "relevant_weight_mass@init", "relevant_weight_mass@linreg",
            "relevant_weight_mass@gaussian", "relevant_grad_share", "relevant_iv_share", "zero_frac"]
    print_table(final, ["task_opts.op", "variant", "task.n_train"], keys)
    return written


def print_table(final: pd.DataFrame, by: list[str], keys: list[str]) -> None:
    """Mean over seeds and each seed's value (s0/s1/...) of every key, one row per group."""
    d = final[final.metric.isin(keys)]
    per = d.pivot_table(index=by + ["seed"], columns="metric", values="value").reset_index()
    rows = []
    for group, g in per.groupby(by, sort=False):
        row = dict(zip(by, group if isinstance(group, tuple) else (group,)))
        for k in keys:
            if k in g:
                vals = g.sort_values("seed")[k].tolist()
                row[k] = f"{pd.Series(vals).mean():.3g} (" + "/".join(f"{v:.3g}" for v in vals) + ")"
        rows.append(row)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 40):
        print(pd.DataFrame(rows).to_string(index=False))


def sweep_folder(runs: Path, name: str) -> Path:
    """RUNS/NAME-quick (probe sweep's default folder) or RUNS/NAME (scripts/make_figures.py's)."""
    for folder in (runs / f"{name}-quick", runs / name):
        if folder.is_dir():
            return folder
    raise SystemExit(f"recurrence_figures: no sweep {runs / f'{name}-quick'} or {runs / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/sweeps"),
                        help="folder holding the sweeps (RUNS/NAME-quick, probe sweep's default, or RUNS/NAME)")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--only", nargs="+", choices=("recurrence", "spectrum"), default=("recurrence", "spectrum"))
    args = parser.parse_args()
    for name in args.only:
        print(f"== {name}")
        for p in {"recurrence": recurrence, "spectrum": spectrum}[name](sweep_folder(args.runs, name), args.out):
            if p.suffix == ".png":
                print(f"   {p}")


if __name__ == "__main__":
    main()
