"""Recompute the reference.json of finished runs with the current nulls (probe/metrics/nulls.py).

Training writes a run's references once, at its last step (probe/run/tracking.py). When a null is added or
changed afterwards, this rewrites them from the run's own checkpoints exactly as the tracker would have: the
tracked measures of the final first layer on every reference, with the run's step 0 as ``init`` and the model's
initializer on other seeds as ``init_seeds``. Runs without tracked measures or without checkpoints are skipped.

    python scripts/refresh_references.py runs/figures-quick/mnist1d-controls runs/figures-quick/ecnn
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from probe.analysis.load import first_layer, load_task
from probe.config import RunConfig
from probe.figures.tables import run_dirs
from probe.run.checkpoint import list_checkpoints
from probe.run.tracking import Tracker, first_layer_at_init, parse_track, write_references


def refresh(run_dir: Path) -> bool:
    """Rewrite ``run_dir``'s reference.json; False when the run has nothing to refresh."""
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()), source=str(run_dir / "config.json"))
    names = parse_track(cfg.track)
    ckpts = list_checkpoints(run_dir)
    if not names or not ckpts or ckpts[0][0] != 0 or ckpts[-1][0] != cfg.steps:
        return False
    W, geometry = first_layer(run_dir)
    W0, _ = first_layer(run_dir, 0)
    tracker = Tracker(names, cfg, geometry, W0, init_build=partial(first_layer_at_init, cfg, load_task(cfg)))
    write_references(run_dir, tracker.references(W), cfg.steps, cfg.seed)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders or folders of run folders (sweeps)")
    args = parser.parse_args()
    for d in run_dirs(args.paths):
        print(f"{d}: {'refreshed' if refresh(d) else 'skipped'}", flush=True)


if __name__ == "__main__":
    main()
