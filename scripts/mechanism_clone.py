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

With ``--n-train N`` (N != 4000; 10^5 is the medium presets' size) the rows go to results/mechanism/clone-medium.csv
with an n_train column, ``summary --n-train N`` prints them with Student's t intervals and ``figure --n-train N``
draws figures/mechanism_clone-medium.png; the discriminator then reads at most 20,000 inputs of each kind.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mechanism_step  # noqa: E402
from mechanism_step import N_QUICK, OUT, _append, _done, _wm_excess, figure_path, out_path, task_opts  # noqa: E402

from probe.metrics.intervention import clone_discriminator  # noqa: E402
from probe.intervals import mean_interval  # noqa: E402
from probe.models import build_model  # noqa: E402
from probe.run.loop import loss_fn  # noqa: E402
from probe.tasks import make_task  # noqa: E402
from probe.tasks.clone import clone_test_set, gaussian_clone  # noqa: E402

STEPS, LR, BATCH = 6000, 1e-2, 100
DETECT_MAX = 20_000  # the discriminator's inputs of each kind, at most (a scikit-learn MLP on 2 x 10^5 is slow)


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
    opts = task_opts(mechanism_step.N_TRAIN)
    real = make_task("mnist1d", opts or None, seed=seed)
    clone = make_task("mnist1d", {"clone": "gaussian", **opts}, seed=seed)
    xc, yc = clone_test_set(real)
    x_cl = gaussian_clone(real.x_train, real.y_train, real.y_train, real.n_outputs,
                          torch.Generator().manual_seed(20_261 + seed))
    detect = clone_discriminator(real.x_train[:DETECT_MAX].numpy(), x_cl[:DETECT_MAX].numpy(), seed=seed)
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


def medium_summary() -> None:
    """clone-medium.csv: the same readings as :func:`summary`, with Student's t intervals over seeds."""
    with out_path("clone").open() as f:
        rows = list(csv.DictReader(f))
    n = len({r["seed"] for r in rows})
    d = mean_interval([float(r["clone_detect_acc"]) for r in rows if r["model"] == "mlp" and r["trained_on"] == "real"])
    print(f"clone-medium.csv (n_train {mechanism_step.N_TRAIN}): {n} seeds, mean [95% t interval]; real-vs-clone "
          f"discriminator (<= {DETECT_MAX} of each) {d[0]:.3f} [{d[1]:.3f},{d[2]:.3f}]")
    acc = {}
    for name in ("mlp", "cnn"):
        for on in ("real", "clone"):
            rs = sorted((r for r in rows if r["model"] == name and r["trained_on"] == on), key=lambda r: r["seed"])
            acc[name, on] = [float(r["acc_real_test"]) for r in rs]
            a = mean_interval(acc[name, on])
            c = mean_interval([float(r["acc_clone_test"]) for r in rs])
            line = (f"  {name} trained on {on:5s}: real test {a[0]:.3f} [{a[1]:.3f},{a[2]:.3f}]  clone test {c[0]:.3f} "
                    f"[{c[1]:.3f},{c[2]:.3f}]")
            if name == "mlp":
                e = mean_interval([float(r["wm"]) - float(r["wm@phase"]) for r in rs])
                sd = mean_interval([float(r["wm@phase_sd"]) for r in rs])[0]
                line += (f"  window_mass_3 - phase null {e[0]:+.3f} [{e[1]:+.3f},{e[2]:+.3f}] (one phase draw's sd "
                         f"{sd:.4f})")
            print(line)
        g = mean_interval([a - b for a, b in zip(acc[name, "real"], acc[name, "clone"])])
        print(f"  {name}: real-trained minus clone-trained, on the real test set (same seed): {g[0]:+.3f} "
              f"[{g[1]:+.3f},{g[2]:+.3f}]")


def medium_figure() -> Path:
    """figures/mechanism_clone-medium.png: real-test and clone-test accuracy of the MLP and the CNN trained on the
    real data and on the clone, and the MLPs' first-layer window_mass_3 minus its phase null; each seed a dot, the
    mean with its 95% t interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with out_path("clone").open() as f:
        rows = list(csv.DictReader(f))
    n = len({r["seed"] for r in rows})
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    groups = [(m, on) for m in ("mlp", "cnn") for on in ("real", "clone")]
    for i, (m, on) in enumerate(groups):
        rs = [r for r in rows if r["model"] == m and r["trained_on"] == on]
        for j, (key, label) in enumerate((("acc_real_test", "tested on real data"),
                                          ("acc_clone_test", "tested on the clone"))):
            vals = [100 * float(r[key]) for r in rs]
            mu, lo, hi = mean_interval(vals)
            x = i + (j - 0.5) * 0.35
            ax[0].bar(x, mu, width=0.33, color=f"C{j}", alpha=0.6, label=label if i == 0 else None)
            ax[0].errorbar(x, mu, yerr=[[mu - lo], [hi - mu]], color="k", capsize=3)
            ax[0].plot([x] * len(vals), vals, "k.", ms=3)
        if m == "mlp":
            vals = [float(r["wm"]) - float(r["wm@phase"]) for r in rs]
            mu, lo, hi = mean_interval(vals)
            ax[1].bar(i, mu, width=0.5, color="C2", alpha=0.6)
            ax[1].errorbar(i, mu, yerr=[[mu - lo], [hi - mu]], color="k", capsize=3)
            ax[1].plot([i] * len(vals), vals, "k.", ms=3)
    ax[0].set_xticks(range(4))
    ax[0].set_xticklabels([f"{m.upper()} trained on\n" + ("real data" if on == "real" else "the clone")
                           for m, on in groups], fontsize=8)
    ax[0].set_ylabel("test accuracy (%)")
    ax[0].legend(fontsize=7)
    ax[1].set_xticks(range(2))
    ax[1].set_xticklabels(["MLP on real data", "MLP on the clone"], fontsize=8)
    ax[1].axhline(0, color="k", lw=0.6)
    ax[1].set_ylabel("window_mass_3 minus phase null (20 draws)")
    fig.suptitle(f"Trained on the Gaussian clone or the real data, MNIST-1D with {mechanism_step.N_TRAIN} training "
                 f"examples ({n} seeds, mean and 95% t interval)", fontsize=9)
    fig.tight_layout()
    path = figure_path("clone")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("run", "summary", "figure"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-train", type=int, default=N_QUICK,
                    help=f"training examples (default {N_QUICK}; any other size writes clone-medium.csv with an "
                         "n_train column)")
    a = ap.parse_args(argv)
    if a.n_train < 10:
        print(f"mechanism_clone: --n-train must be >= 10, got {a.n_train}", file=sys.stderr)
        return 2
    mechanism_step.N_TRAIN = a.n_train
    if a.what == "summary":
        if a.n_train == N_QUICK:
            summary()
        else:
            medium_summary()
        return 0
    if a.what == "figure":
        print(medium_figure())
        return 0
    torch.set_num_threads(1)
    path = out_path("clone")
    for seed in a.seeds:
        if _done(path, seed):
            print(f"clone seed {seed} (n_train {a.n_train}): done already", flush=True)
            continue
        t0 = time.time()
        rows = run(seed)
        if a.n_train != N_QUICK:
            rows = [{"n_train": a.n_train, **r} for r in rows]
        _append(path, rows)
        print(f"clone seed {seed} (n_train {a.n_train}): {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
