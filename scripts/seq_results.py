"""Reproduce the sequence results of the README: train through the `probe train` command, then
measure routing with :func:`probe.metrics.routing.sequence_measures` at the first and the last checkpoint.

    python scripts/seq_results.py                 # all runs, into runs/seq_results (about 15 CPU minutes)
    python scripts/seq_results.py --only mqar-transformer reverse-mlp

Runs already present in the output folder are measured again, not retrained. Results go to
``OUT/results.json`` and are printed as a table. Training runs with OMP_NUM_THREADS=1: these models are
small, and on 2 shared cores two threads per process were measured up to 8 times slower than one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from probe.analysis.load import load_run
from probe.metrics.routing import jacobian_maps, mean_routing_map, sequence_measures
from probe.run.metrics_file import METRICS_FILE, read_metrics

ADAMW = ["--optimizer", "adamw", "--seed", "0"]
RUNS = {
    # 2-layer transformer, width 64, 2 heads, AdamW lr 1e-3, batch 128, 1000 steps (fresh batches)
    "mqar-transformer": ["--task", "mqar", "--model", "transformer", "--depth", "2", "--width", "64", "--model-opt",
                         "heads=2", "--lr", "1e-3", "--batch-size", "128", "--steps", "1000", "--eval-every", "250",
                         *ADAMW],
    # the flattened one-hot MLP, 3 x 1024; the reference run stalled for 9000 steps, we run 2000 on CPU
    "mqar-mlp": ["--task", "mqar", "--model", "mlp", "--depth", "3", "--width", "1024", "--lr", "1e-3",
                 "--batch-size", "128", "--steps", "2000", "--eval-every", "500", *ADAMW],
    # static routing: the MLP learns reverse, its Jacobian map is the anti-diagonal
    "reverse-mlp": ["--task", "reverse", "--model", "mlp", "--depth", "1", "--width", "256", "--lr", "1e-3",
                    "--batch-size", "128", "--steps", "1000", "--eval-every", "250", *ADAMW],
    # modular addition, p = 113, half the pairs, weight decay 1 (Nanda et al.), minibatches of 512
    "modadd-mlp": ["--task", "modadd", "--model", "mlp", "--depth", "1", "--width", "512", "--lr", "3e-3",
                   "--weight-decay", "1", "--batch-size", "512", "--steps", "3000", "--eval-every", "500", *ADAMW],
    "modadd-transformer": ["--task", "modadd", "--model", "transformer", "--depth", "1", "--width", "128",
                           "--model-opt", "heads=4", "--lr", "1e-3", "--weight-decay", "1", "--batch-size", "512",
                           "--steps", "1500", "--eval-every", "500", *ADAMW],
}


def train(name: str, out: Path) -> list[str]:
    cmd = ["probe", "train", *RUNS[name], "--out", str(out / name), "--quiet"]
    if not (out / name / METRICS_FILE).exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "probe.cli", *cmd[1:]], check=True, env=env)
    return cmd


def load(run: Path, step: int | None = None):
    """(model, task, cfg) at a checkpoint of a run folder (the last one by default)."""
    loaded = load_run(run, step)
    return loaded.model, loaded.task, loaded.config


def reverse_map(run: Path) -> list[list[float]]:
    """Mean Jacobian routing map of the answer slots (rows) over the content positions (columns)."""
    model, task, _ = load(run)
    L = task.geometry.spatial[0] // 2
    x = task.x_test[:256]
    maps = jacobian_maps(model, F.one_hot(x, task.vocab).float(), task.y_test[:256], task.extras["source_test"][:256])
    return np.round(mean_routing_map(maps, 2 * L)[L:, :L], 3).tolist()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/seq_results"))
    ap.add_argument("--only", nargs="*", choices=list(RUNS), default=list(RUNS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in args.only:
        cmd = train(name, args.out)
        run = args.out / name
        rows = read_metrics(run)
        evals = [r for r in rows if "test_loss" in r]
        final, init = load(run), load(run, 0)
        res = {"command": " ".join(cmd), "steps": final[2].steps, "test_acc": evals[-1].get("test_acc"),
               "test_loss": evals[-1]["test_loss"], "curve": {r["step"]: r.get("test_acc") for r in evals},
               "final": sequence_measures(final[0], final[1], n=256, seed=0),
               "init": sequence_measures(init[0], init[1], n=256, seed=0)}
        if name.startswith("reverse"):
            res["mean_map_answers_x_content"] = reverse_map(run)
        results[name] = res
        results_file.write_text(json.dumps(results, indent=1))
        print(f"\n== {name}: test_acc {res['test_acc']:.4f} after {res['steps']} steps\n   {res['command']}")
        for k, v in res["final"].items():
            print(f"   {k:26s} {v:9.4f}   (init {res['init'].get(k, float('nan')):.4f})")
        if "mean_map_answers_x_content" in res:
            print("   mean routing map (answer slot x content position):")
            for row in res["mean_map_answers_x_content"]:
                print("     " + " ".join(f"{v:5.2f}" for v in row))
    print(f"\nwrote {results_file}")


if __name__ == "__main__":
    main()
