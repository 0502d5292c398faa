"""The clone-dynamics preset read out: when does accuracy on the Gaussian clone peak, and how much of it is lost later?

Each run of ``probe sweep --preset clone-dynamics`` tracks, every 25 steps, the real test accuracy a(t) and the
accuracy on the class-conditional Gaussian clone test set c(t) (``--track clone_acc``). Per run:

- the peak step t* is chosen on the even-numbered evaluations (steps 0, 50, 100, ...), as the step where their
  moving average over 3 evaluations (150 steps) is largest;
- the clone accuracy at the peak, ``clone_acc_peak``, is read on the odd-numbered evaluations (25, 75, ...): the
  mean of the 3 of them nearest t*. The maximum of a noisy curve is biased upward by its noise; reading the height
  on evaluations that did not choose the step removes that bias (as far as neighbouring evaluations are
  independent: they are 25 steps apart);
- ``clone_acc`` and ``test_acc``: the means over the last 500 steps (21 evaluations), the end of training;
- ``test_acc_peak``: the real test accuracy at the peak, read the same way as ``clone_acc_peak``;
- ``clone_gap_early``: clone minus real test accuracy, averaged over the evaluations at steps 25 to 100 (the
  first four after initialization), and ``clone_gap_early@end`` the same difference at the end. A network that
  classifies by the classes' means and covariances alone does as well on the clone as on the real data (gap
  near 0); one that uses more does better on the real data (gap below 0). The window was fixed after the pilot
  of seed 0 (MLP and CNN, one seed each) showed where the early phase lies: treat it as chosen, not blind.

The summary holds them with the nulls the claims check reads as paired differences (probe.sweep.claims): the
drop of clone accuracy after its peak is ``clone_acc_peak - clone_acc_peak@end`` (``@end`` = the end-of-run
clone accuracy), the real accuracy gained after the peak ``test_acc - test_acc@peak``, and how much further the
real accuracy pulls ahead of the clone's from the start to the end ``clone_gap_early - clone_gap_early@end``. The
hypothesis (distributional simplicity) predicts all three > 0.

    probe sweep --preset clone-dynamics --jobs 2 --out runs/sweeps/clone-dynamics-quick
    python scripts/clone_dynamics.py runs/sweeps/clone-dynamics-quick       # results/clone-dynamics-quick/
                                                                            # and figures/clone_dynamics.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from probe.sweep.stats import interval, seed_stats  # noqa: E402
from probe.sweep.summary import write_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 3  # evaluations in the moving average that picks the peak, and in the reading at the peak
END = 500  # steps at the end that make the end-of-run values
EARLY = (25, 100)  # the steps whose evaluations make the early gap (module docstring)


def curves(run: Path) -> pd.DataFrame:
    """The rows of ``run``'s metrics.jsonl that hold both accuracies, by step."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    df = pd.DataFrame([r for r in rows if "clone_acc" in r and "test_acc" in r])
    if df.empty:
        raise SystemExit(f"{run}: no rows with clone_acc and test_acc (was it run with --track clone_acc?)")
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def peak(df: pd.DataFrame) -> dict:
    """The per-run readings of the module docstring."""
    even, odd = df.iloc[0::2].reset_index(drop=True), df.iloc[1::2].reset_index(drop=True)
    smooth = even["clone_acc"].rolling(WINDOW, center=True, min_periods=WINDOW).mean()
    t_star = float(even["step"][int(smooth.idxmax())])
    near = odd.iloc[np.argsort(np.abs(odd["step"].to_numpy() - t_star), kind="stable")[:WINDOW]]
    end = df[df["step"] >= df["step"].max() - END]
    early = df[df["step"].between(*EARLY)]
    return {"clone_peak_step": t_star, "clone_acc_peak": float(near["clone_acc"].mean()),
            "test_acc_peak": float(near["test_acc"].mean()), "clone_acc": float(end["clone_acc"].mean()),
            "test_acc": float(end["test_acc"].mean()),
            "clone_gap_early": float((early["clone_acc"] - early["test_acc"]).mean()),
            "clone_gap_early@end": float((end["clone_acc"] - end["test_acc"]).mean())}


def summarize(sweep: Path) -> tuple[pd.DataFrame, dict]:
    rows, traces = [], {}
    for run in sorted(p for p in sweep.iterdir() if (p / "sweep_run.json").is_file()):
        meta = json.loads((run / "sweep_run.json").read_text())
        if not (run / "result.json").is_file():
            continue  # unfinished
        cfg = json.loads((run / "config.json").read_text())
        df = curves(run)
        r = {"run": run.name, "variant": meta["varied"].get("variant", run.name), "seed": cfg["seed"],
             "model": cfg["model"], **peak(df)}
        r["clone_acc_peak@end"] = r["clone_acc"]
        r["test_acc@peak"] = r["test_acc_peak"]
        rows.append(r)
        traces[(r["variant"], r["seed"])] = df
    if not rows:
        raise SystemExit(f"{sweep}: no finished runs")
    return pd.DataFrame(rows), traces


def figure(table: pd.DataFrame, traces: dict, path: Path) -> None:
    """Mean curves over seeds with their 95% t interval, real and clone accuracy, a panel per model."""
    variants = list(dict.fromkeys(table["variant"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 3.8), squeeze=False)
    for ax, v in zip(axes[0], variants):
        runs = [traces[(v, s)] for s in sorted(table[table["variant"] == v]["seed"])]
        steps = runs[0]["step"].to_numpy()
        for key, label, color in (("test_acc", "real test set", "C0"), ("clone_acc", "Gaussian clone", "C3")):
            ys = np.stack([r.set_index("step")[key].reindex(steps).to_numpy() for r in runs])
            stats = [interval(ys[:, i]) for i in range(len(steps))]
            ax.plot(steps, [s["mean"] for s in stats], color=color, lw=1.2, label=label)
            ax.fill_between(steps, [s["ci_low"] for s in stats], [s["ci_high"] for s in stats], color=color,
                            alpha=0.25, lw=0)
        sub = table[table["variant"] == v]
        t = interval(sub["clone_peak_step"])
        ax.axvline(t["mean"], color="0.4", ls="--", lw=0.8,
                   label=f"clone peak: mean step {t['mean']:.0f}, ticks per seed")
        for step in sub["clone_peak_step"]:
            ax.plot([step], [0.97], marker="|", color="0.4", ms=8)
        ax.set_xscale("symlog", linthresh=100)
        ax.set_xlim(0, float(steps.max()))
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{v} on MNIST-1D ({len(runs)} seeds, mean and 95% t interval)", fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="the clone-dynamics sweep folder")
    ap.add_argument("--name", default="clone-dynamics-quick", help="results/NAME receives summary.csv, stats.csv")
    ap.add_argument("--figure", type=Path, default=ROOT / "figures" / "clone_dynamics.png")
    args = ap.parse_args(argv)
    if not args.sweep.is_dir():
        print(f"{args.sweep}: no such sweep folder", file=sys.stderr)
        return 2
    table, traces = summarize(args.sweep)
    out = ROOT / "results" / args.name
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "summary.csv")
    write_csv(seed_stats(table, by=("variant", "model")), out / "stats.csv")
    figure(table, traces, args.figure)
    cols = ["clone_peak_step", "clone_acc_peak", "clone_acc", "test_acc_peak", "test_acc", "clone_gap_early",
            "clone_gap_early@end"]
    print(table.groupby("variant")[cols].mean().round(3).to_string())
    print(f"wrote {out}/summary.csv, stats.csv and {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
