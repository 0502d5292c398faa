"""Which statistics, decided by training: nets trained on the Gaussian clone and tested on real data, and the reverse.

Per seed (MNIST-1D, 4000 training examples, the mechanism preset's settings: Adam lr 1e-2, batch 100, 6000
steps), the MLP 40-100-100-10 and the CNN, each trained on the real training set and on its class-conditional
Gaussian clone (each class's training mean and covariance, nothing else; probe.tasks.clone), each tested on the
real test set and on the clone test set; beside them the real-vs-clone discriminator's held-out accuracy
(probe.metrics.intervention.clone_discriminator: how far off the data the clone lies) and, for the MLPs, the first
layer's window_mass_3 against its phase null (mean over 20 phase draws). Rows are appended per seed to
results/mechanism/clone.csv (resumable).

    nice -n 10 python scripts/mechanism_clone.py run --seeds 0 1 2
    python scripts/mechanism_clone.py summary
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mechanism_step import OUT, _append, _done, _wm_excess  # noqa: E402

from probe.metrics.intervention import clone_discriminator  # noqa: E402
from probe.intervals import mean_interval  # noqa: E402
from probe.models import build_model  # noqa: E402
from probe.run.loop import loss_fn  # noqa: E402
from probe.tasks import make_task  # noqa: E402
from probe.tasks.clone import clone_test_set, gaussian_clone  # noqa: E402

STEPS, LR, BATCH = 6000, 1e-2, 100


@torch.no_grad()
def _acc(model, x, y) -> float:
    return float((model(x).argmax(-1) == y).float().mean())


def _train(name, task, seed):
    torch.manual_seed(seed)
    model = build_model(name, task, 100, 2)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for step in range(STEPS):
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        idx = torch.randint(0, len(task.x_train), (BATCH,), generator=g)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(task.x_train[idx]), task.y_train[idx], task.loss).backward()
        opt.step()
    return model


def run(seed: int) -> list[dict]:
    real = make_task("mnist1d", seed=seed)
    clone = make_task("mnist1d", {"clone": "gaussian"}, seed=seed)
    xc, yc = clone_test_set(real)
    x_cl = gaussian_clone(real.x_train, real.y_train, real.y_train, real.n_outputs,
                          torch.Generator().manual_seed(20_261 + seed))
    detect = clone_discriminator(real.x_train.numpy(), x_cl.numpy(), seed=seed)
    rows = []
    for name in ("mlp", "cnn"):
        for trained_on, task in (("real", real), ("clone", clone)):
            m = _train(name, task, seed)
            row = {"seed": seed, "model": name, "trained_on": trained_on,
                   "acc_real_test": _acc(m, real.x_test, real.y_test), "acc_clone_test": _acc(m, xc, yc),
                   "clone_detect_acc": detect, "wm": float("nan"), "wm@phase": float("nan"),
                   "wm@phase_sd": float("nan")}
            if name == "mlp":
                wm, null, sd = _wm_excess(m.first_layer_dense().double().numpy(), real.geometry, seed)
                row.update({"wm": wm, "wm@phase": null, "wm@phase_sd": sd})
            rows.append(row)
    return rows


def summary() -> None:
    with (OUT / "clone.csv").open() as f:
        rows = list(csv.DictReader(f))
    n = len({r["seed"] for r in rows})
    d = mean_interval([float(r["clone_detect_acc"]) for r in rows if r["model"] == "mlp" and r["trained_on"] == "real"])
    print(f"clone.csv: {n} seeds, mean [95% interval]; real-vs-clone discriminator {d[0]:.3f} [{d[1]:.3f},{d[2]:.3f}]")
    for name in ("mlp", "cnn"):
        for on in ("real", "clone"):
            rs = [r for r in rows if r["model"] == name and r["trained_on"] == on]
            a = mean_interval([float(r["acc_real_test"]) for r in rs])
            c = mean_interval([float(r["acc_clone_test"]) for r in rs])
            line = (f"  {name} trained on {on:5s}: real test {a[0]:.3f} [{a[1]:.3f},{a[2]:.3f}]  clone test {c[0]:.3f} "
                    f"[{c[1]:.3f},{c[2]:.3f}]")
            if name == "mlp":
                e = mean_interval([float(r["wm"]) - float(r["wm@phase"]) for r in rs])
                line += f"  window_mass_3 - phase null {e[0]:+.3f} [{e[1]:+.3f},{e[2]:+.3f}]"
            print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("run", "summary"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args(argv)
    if a.what == "summary":
        summary()
        return 0
    torch.set_num_threads(1)
    path = OUT / "clone.csv"
    for seed in a.seeds:
        if _done(path, seed):
            print(f"clone seed {seed}: done already", flush=True)
            continue
        t0 = time.time()
        _append(path, run(seed))
        print(f"clone seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
