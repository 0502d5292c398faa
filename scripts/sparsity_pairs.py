"""The sparsity preset's lottery-ticket comparisons as same-seed paired differences (results/sparsity-quick-paired/).

Each row is one pruned run (imp, imp5, random-prune) of results/sparsity-quick/summary.csv with, beside its test
accuracy, the same seed's ``test_acc@dense`` (its own round 0: the dense net, the same run as ``sgd``) and
``test_acc@random`` (the ``random-prune`` run: 90.1% of each hidden matrix removed at random, rewound the same
way), which the claims check (probe.sweep.claims) and stats.csv read as paired differences.

    python -m probe.sweep.claims --collect runs/sweeps/sparsity-quick sparsity-quick   # the summarized sweep
    python scripts/sparsity_pairs.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from probe.sweep.stats import seed_stats
from probe.sweep.summary import write_csv

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    df = pd.read_csv(ROOT / "results" / "sparsity-quick" / "summary.csv")
    df = df[df["status"] == "done"]
    random = df[df["variant"] == "random-prune"].set_index("seed")["test_acc"]
    out = df[df["variant"].isin(["imp", "imp5", "random-prune"])][
        ["run", "status", "variant", "seed", "sparsity", "test_acc"]].copy()
    out["test_acc@dense"] = df.loc[out.index, "dense_test_acc"]
    out["test_acc@random"] = out["seed"].map(random)
    folder = ROOT / "results" / "sparsity-quick-paired"
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(out, folder / "summary.csv")
    stats = seed_stats(out, by=("variant",))
    write_csv(stats, folder / "stats.csv")
    print(stats[stats["measure"] == "test_acc"][["variant", "null", "n", "mean", "ci_low", "ci_high"]].round(3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
