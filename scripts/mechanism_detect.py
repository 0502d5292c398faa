"""How far off the data the Gaussian clone lies: a class-conditional CNN discriminator of real vs clone inputs.

Per seed (MNIST-1D, 4000 training examples, the clone of scripts/mechanism_clone.py: each class's training mean and
covariance), the held-out accuracy of probe.metrics.intervention.clone_discriminator_cnn (a small 1-D CNN that sees
the class, trained 3000 Adam steps on real training inputs against fresh clone draws, scored on the real test set
against fresh clone inputs of the same labels) beside the flat scikit-learn discriminator of mechanism_clone.py
(clone_discriminator, on the training inputs and one clone draw of them). 0.5: the clone is indistinguishable.
Rows are appended per seed to results/mechanism/detect.csv (resumable).

    nice -n 10 python scripts/mechanism_detect.py run --seeds 0 1 2 3 4
    python scripts/mechanism_detect.py summary
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mechanism_step import OUT, _append, _done  # noqa: E402

from probe.intervals import mean_interval  # noqa: E402
from probe.metrics.intervention import clone_discriminator, clone_discriminator_cnn  # noqa: E402
from probe.tasks import make_task  # noqa: E402
from probe.tasks.clone import class_factors, gaussian_clone  # noqa: E402

STEPS = 3000


def run(seed: int) -> list[dict]:
    real = make_task("mnist1d", seed=seed)
    factors = class_factors(real.x_train, real.y_train, real.n_outputs)

    def draw(labels, g):
        return gaussian_clone(real.x_train, real.y_train, labels, real.n_outputs, g, factors=factors)

    x_cl = draw(real.y_train, torch.Generator().manual_seed(20_261 + seed))
    flat = clone_discriminator(real.x_train.numpy(), x_cl.numpy(), seed=seed)
    cnn = clone_discriminator_cnn(real.x_train, real.y_train, real.x_test, real.y_test, draw, real.n_outputs,
                                  seed=seed, steps=STEPS)
    return [{"seed": seed, "clone_detect_cnn_acc": cnn, "clone_detect_acc": flat}]


def summary() -> None:
    with (OUT / "detect.csv").open() as f:
        rows = list(csv.DictReader(f))
    print(f"detect.csv: {len(rows)} seeds, mean [95% t interval] of held-out accuracy (0.5: indistinguishable)")
    for k in ("clone_detect_cnn_acc", "clone_detect_acc"):
        m = mean_interval([float(r[k]) for r in rows])
        print(f"  {k:22s} {m[0]:.3f} [{m[1]:.3f},{m[2]:.3f}]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("run", "summary"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    a = ap.parse_args(argv)
    if a.what == "summary":
        summary()
        return 0
    torch.set_num_threads(1)
    path = OUT / "detect.csv"
    for seed in a.seeds:
        if _done(path, seed):
            print(f"detect seed {seed}: done already", flush=True)
            continue
        t0 = time.time()
        _append(path, run(seed))
        print(f"detect seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
