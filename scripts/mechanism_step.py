"""The pull along the applied step, over the whole trajectory, and the cause-or-consequence intervention.

Two experiments on MNIST-1D (4000 training examples, the mechanism preset's quick scale: an MLP 40-100-100-10,
Adam lr 1e-2, batch 100, 6000 steps), each seed one row block of a CSV under results/mechanism/, resumable (a
seed whose rows are written is skipped; rows are appended atomically per seed):

- ``step``: at tracked steps t (dense early, where the gradient is large), the first layer W_t, the update Adam
  applies D_t = W_{t+1} - W_t and W_{t+k} (k = 100): window_mass_3's change along D_t (``dS``) against random
  directions of ||D_t|| and another unit's step (20 draws each; probe.metrics.step.step_pull), the change along
  the plain gradient direction scaled to ||D_t|| (``dS_grad``), the realized change over k steps against the same
  nulls (``dS_k``; realized_change), the gradient's norm on the fixed 2048-example pull batch, the step's norm
  and its share along each unit's own weights, and the old energy share grad_com_share_3 with its @units null,
  labelled as where the gradient's energy sits.
- ``cause``: at step 3000 the first layer is replaced by its phase-randomized copy (each unit's power spectrum
  kept, its locality gone; probe.metrics.nulls.phase_randomize) and training continues 3000 steps with the upper
  layers kept (``phase-keep``) or re-initialized (``phase-reinit``), beside the unperturbed run (``none``); every
  arm restarts Adam at step 3000 so that only the weights differ. Read: window_mass_3 minus its phase null (mean
  over 20 phase draws) and test accuracy at the end. If the locality returns after it is erased, the training
  signal makes it (cause of the pull, not a leftover of the start); if the re-initialized upper layers change
  that, the upper layers carry it.

- ``early``: one training run; at the early steps (0-500) Adam's step, the descent direction and the displacement
  over the next K steps, read in each unit's final window (probe.metrics.final_window: the energy share there and
  the signed change of the weights' mass there) against a random window and another unit's final window (20
  draws each), also in the final windows of W_T minus the update (leave-one-out); results/mechanism/early.csv.

``--n-train N`` (cause, early; default 4000) trains on N examples (10^5: the medium presets' 125,000-example set,
25,000 for testing) and writes <experiment>-medium.csv with an n_train column; ``summary``/``figure --n-train N``
read it with t intervals (``probe.intervals.mean_interval``) and draw figures/mechanism_<experiment>-medium.png.

    nice -n 10 python scripts/mechanism_step.py step --seeds 0 1 2 3 4
    nice -n 10 python scripts/mechanism_step.py cause --seeds 0 1 2 3 4
    python scripts/mechanism_step.py summary
    python scripts/mechanism_step.py figure
    nice -n 10 python scripts/mechanism_step.py early --seeds 0 1 2 3 4
    nice -n 10 python scripts/mechanism_step.py cause --n-train 100000 --seeds 0 1 2 3 4
    nice -n 10 python scripts/mechanism_step.py early --n-train 100000 --seeds 0 1 2 3 4
    python scripts/mechanism_step.py summary --n-train 100000
    python scripts/mechanism_step.py figure --n-train 100000
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from probe.metrics.final_window import final_window_reading
from probe.metrics.locality import window_mass
from probe.metrics.nulls import phase_randomize
from probe.metrics.pull import com_share, com_share_units, first_layer_gradient, pull_batch
from probe.intervals import mean_interval
from probe.metrics.step import directional_change, realized_change, step_pull
from probe.models import build_model
from probe.run.loop import loss_fn
from probe.tasks import make_task

OUT = Path(__file__).resolve().parents[1] / "results" / "mechanism"
STEPS, LR, BATCH, WIDTH, DEPTH, K = 6000, 1e-2, 100, 100, 2, 100
TRACK = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 3000, 4000, 5000, 5899)
MID = 3000
DRAWS = 20
EARLY = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
N_QUICK = 4000  # the quick scale's training set (mnist1d's default 5000 examples, 80% for training)
N_TRAIN = N_QUICK  # set by --n-train


def task_opts(n_train: int) -> dict:
    """mnist1d options for a training set of n_train examples: the generator makes n_train / 0.8 examples (its
    80/20 split; 125,000 for 10^5, the medium presets' set, cached on disk) and the training part is cut to
    n_train. None for the quick scale, whose task is the default one."""
    if n_train == N_QUICK:
        return {}
    return {"num_samples": max(5000, -(-n_train * 5 // 4)), "n_train": n_train}


def out_path(experiment: str, n_train: int | None = None) -> Path:
    """results/mechanism/<experiment>.csv at the quick scale, <experiment>-medium.csv for any other n_train."""
    n = N_TRAIN if n_train is None else n_train
    return OUT / (f"{experiment}.csv" if n == N_QUICK else f"{experiment}-medium.csv")


def figure_path(experiment: str, n_train: int | None = None) -> Path:
    """figures/mechanism_<experiment>.png, or mechanism_<experiment>-medium.png as :func:`out_path`."""
    n = N_TRAIN if n_train is None else n_train
    name = f"mechanism_{experiment}.png" if n == N_QUICK else f"mechanism_{experiment}-medium.png"
    return Path(__file__).resolve().parents[1] / "figures" / name


def _done(path: Path, seed: int) -> bool:
    """Whether a seed's rows are in ``path`` (for the current N_TRAIN where the table has an n_train column)."""
    if not path.is_file():
        return False
    with path.open() as f:
        return any(int(r["seed"]) == seed and int(r.get("n_train") or N_TRAIN) == N_TRAIN for r in csv.DictReader(f))


def _append(path: Path, rows: list[dict]) -> None:
    """Append one seed's rows: written to a temporary copy of the whole file, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.is_file() else ""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        if old:
            f.write(old)
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if not old:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _setup(seed: int):
    torch.manual_seed(seed)
    task = make_task("mnist1d", task_opts(N_TRAIN) or None, seed=seed)
    model = build_model("mlp", task, WIDTH, DEPTH)
    return task, model


def _batch(task, seed, step):
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    idx = torch.randint(0, len(task.x_train), (BATCH,), generator=g)
    return task.x_train[idx], task.y_train[idx]


def _W(model) -> np.ndarray:
    return model.first_layer_dense().double().numpy().copy()


def _acc(model, task) -> float:
    with torch.no_grad():
        return float((model(task.x_test).argmax(-1) == task.y_test).float().mean())


def _wm_excess(W, geo, seed) -> tuple[float, float, float]:
    """window_mass_3, its phase null's mean and sd over DRAWS phase draws."""
    null = [window_mass(phase_randomize(W, geo, seed=1000 * seed + j), geo, 3) for j in range(DRAWS)]
    return window_mass(W, geo, 3), float(np.mean(null)), float(np.std(null, ddof=1))


def run_step(seed: int) -> list[dict]:
    task, model = _setup(seed)
    geo = task.geometry
    S = lambda M: window_mass(M, geo, 3)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xb_pull, yb_pull = pull_batch(task, seed)
    snaps = {}
    want = set(TRACK) | {t + 1 for t in TRACK} | {t + K for t in TRACK}
    grads = {}
    for step in range(STEPS):
        if step in want:
            snaps[step] = _W(model)
        if step in TRACK:
            grads[step] = first_layer_gradient(model, xb_pull, yb_pull, task.loss).double().numpy()
        x, y = _batch(task, seed, step)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y, task.loss).backward()
        opt.step()
    snaps[STEPS] = _W(model)
    rows = []
    for t in TRACK:
        W, D, G = snaps[t], snaps[t + 1] - snaps[t], grads[t]
        r = step_pull(S, W, D, DRAWS, seed)
        gdir = -G * (np.linalg.norm(D) / np.linalg.norm(G)) if np.linalg.norm(G) > 0 else G
        rk = realized_change(S, W, snaps[min(t + K, STEPS)], DRAWS, seed)
        wm, null, sd = _wm_excess(W, geo, seed)
        rows.append({"seed": seed, "step": t, "window_mass_3": wm, "window_mass_3@phase": null,
                     "window_mass_3@phase_sd": sd, "grad_norm": float(np.linalg.norm(G)),
                     "step_norm": r["step_norm"], "step_parallel_share": r["step_parallel_share"],
                     "dS": r["dS"], "dS@random": r["dS@random"], "dS@random_sd": r["dS@random_sd"],
                     "dS@units": r["dS@units"], "dS@units_sd": r["dS@units_sd"],
                     "dS_grad": directional_change(S, W, gdir),
                     "dS_k": rk["dS_k"], "dS_k@random": rk["dS_k@random"], "dS_k@random_sd": rk["dS_k@random_sd"],
                     "dS_k@units": rk["dS_k@units"], "dS_k@units_sd": rk["dS_k@units_sd"],
                     "move_norm_k": rk["move_norm"],
                     "energy_com_share_3": com_share(G, W, geo, 3),
                     "energy_com_share_3@units": com_share_units(G, W, geo, 3, seed)})
    return rows


def run_cause(seed: int) -> list[dict]:
    rows = []
    for arm in ("none", "phase-keep", "phase-reinit"):
        task, model = _setup(seed)
        geo = task.geometry
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        for step in range(STEPS):
            if step == MID:
                W_mid = _W(model)
                wm_mid, null_mid, _ = _wm_excess(W_mid, geo, seed)
                if arm != "none":
                    Wp = phase_randomize(W_mid, geo, seed=seed + 77)
                    model.layers[0].weight.data.copy_(torch.tensor(Wp, dtype=model.layers[0].weight.dtype))
                if arm == "phase-reinit":
                    torch.manual_seed(10_000 + seed)
                    fresh = build_model("mlp", task, WIDTH, DEPTH)
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            if not name.startswith("layers.0."):
                                p.copy_(dict(fresh.named_parameters())[name])
                opt = torch.optim.Adam(model.parameters(), lr=LR)
                after = window_mass(_W(model), geo, 3)
            x, y = _batch(task, seed, step)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y, task.loss).backward()
            opt.step()
        wm, null, sd = _wm_excess(_W(model), geo, seed)
        rows.append({"seed": seed, "arm": arm, "wm_mid": wm_mid, "wm_mid@phase": null_mid,
                     "wm_after_intervention": after,
                     "wm_end": wm, "wm_end@phase": null, "wm_end@phase_sd": sd, "excess_end": wm - null,
                     "test_acc": _acc(model, task)})
    return rows


def summary() -> None:
    step = OUT / "step.csv"
    if step.is_file():
        with step.open() as f:
            rows = list(csv.DictReader(f))
        seeds = sorted({r["seed"] for r in rows})
        print(f"step.csv: {len(seeds)} seeds; per step: mean over seeds [95% interval] of dS - dS@random "
              f"(window_mass_3's first-order change along Adam's step, minus random directions of its norm)")
        for t in TRACK:
            rs = [r for r in rows if int(r["step"]) == t]
            f = lambda k, rs=rs: mean_interval([float(r[k]) for r in rs])
            eff = mean_interval([float(r["dS"]) - float(r["dS@random"]) for r in rs])
            effu = mean_interval([float(r["dS"]) - float(r["dS@units"]) for r in rs])
            effk = mean_interval([float(r["dS_k"]) - float(r["dS_k@random"]) for r in rs])
            effku = mean_interval([float(r["dS_k"]) - float(r["dS_k@units"]) for r in rs])
            print(f"  t={t:5d} |G|={f('grad_norm')[0]:.3g} |D|={f('step_norm')[0]:.3g} "
                  f"par={f('step_parallel_share')[0]:.2f} "
                  f"dS-rand={eff[0]:+.2e} [{eff[1]:+.1e},{eff[2]:+.1e}] dS-units={effu[0]:+.2e} "
                  f"dS_grad={f('dS_grad')[0]:+.2e} dS_k-rand={effk[0]:+.2e} [{effk[1]:+.1e},{effk[2]:+.1e}] "
                  f"dS_k-units={effku[0]:+.2e} [{effku[1]:+.1e},{effku[2]:+.1e}] "
                  f"wm={f('window_mass_3')[0]:.3f} (phase {f('window_mass_3@phase')[0]:.3f}) "
                  f"energy_com={f('energy_com_share_3')[0]:.3f} (@units {f('energy_com_share_3@units')[0]:.3f})")
        print("per range of steps (each seed's mean over the range, then mean [95% interval] over seeds):")
        f = lambda r, k: float(r[k])
        for name, fn in (("dS - dS@random", lambda r: f(r, "dS") - f(r, "dS@random")),
                         ("dS - dS@units", lambda r: f(r, "dS") - f(r, "dS@units")),
                         ("dS_grad - dS@random", lambda r: f(r, "dS_grad") - f(r, "dS@random")),
                         ("dS_k - dS_k@random", lambda r: f(r, "dS_k") - f(r, "dS_k@random")),
                         ("dS_k - dS_k@units", lambda r: f(r, "dS_k") - f(r, "dS_k@units")),
                         ("energy_com_share_3 - @units",
                          lambda r: f(r, "energy_com_share_3") - f(r, "energy_com_share_3@units")),
                         ("step_parallel_share", lambda r: f(r, "step_parallel_share")),
                         ("grad_norm", lambda r: f(r, "grad_norm")), ("step_norm", lambda r: f(r, "step_norm"))):
            parts = []
            for rng in ((1, 2, 3, 5, 10), (50, 100, 200, 500), (1000, 2000, 3000, 4000, 5000, 5899)):
                m = mean_interval([np.mean([fn(r) for r in rows if r["seed"] == sd and int(r["step"]) in rng])
                                   for sd in seeds])
                parts.append(f"steps {rng[0]}-{rng[-1]} {m[0]:+.2e} [{m[1]:+.1e},{m[2]:+.1e}]")
            print(f"  {name:28s} " + "; ".join(parts))
        for t in (0, 200, TRACK[-1]):
            m = mean_interval([f(r, "window_mass_3") - f(r, "window_mass_3@phase")
                               for r in rows if int(r["step"]) == t])
            print(f"  window_mass_3 - phase null at step {t}: {m[0]:+.3f} [{m[1]:+.3f},{m[2]:+.3f}]")
    cause = OUT / "cause.csv"
    if cause.is_file():
        with cause.open() as f:
            rows = list(csv.DictReader(f))
        print(f"cause.csv: {len({r['seed'] for r in rows})} seeds; window_mass_3 - phase null (20 draws) at the end, "
              "mean [95% interval]")
        for arm in ("none", "phase-keep", "phase-reinit"):
            rs = [r for r in rows if r["arm"] == arm]
            e = mean_interval([float(r["excess_end"]) for r in rs])
            m = mean_interval([float(r["wm_mid"]) - float(r["wm_mid@phase"]) for r in rs])
            a = mean_interval([float(r["test_acc"]) for r in rs])
            print(f"  {arm:13s} excess at step {MID} {m[0]:+.3f} [{m[1]:+.3f},{m[2]:+.3f}]  at the end {e[0]:+.3f} "
                  f"[{e[1]:+.3f},{e[2]:+.3f}]  test acc {a[0]:.3f} [{a[1]:.3f},{a[2]:.3f}]")
            if arm != "none":  # paired by seed against the unperturbed run
                base = {r["seed"]: r for r in rows if r["arm"] == "none"}
                de = mean_interval([float(r["excess_end"]) - float(base[r["seed"]]["excess_end"]) for r in rs])
                da = mean_interval([float(r["test_acc"]) - float(base[r["seed"]]["test_acc"]) for r in rs])
                af = mean_interval([float(r["wm_after_intervention"]) - float(r["wm_mid@phase"]) for r in rs])
                print(f"  {'':13s} right after the intervention {af[0]:+.3f} [{af[1]:+.3f},{af[2]:+.3f}]; minus the "
                      f"unperturbed run, same seed: excess {de[0]:+.3f} [{de[1]:+.3f},{de[2]:+.3f}], test acc "
                      f"{da[0]:+.3f} [{da[1]:+.3f},{da[2]:+.3f}]")


def figure() -> Path:
    """figures/mechanism_step.png: over the trajectory (log steps), the first-order change of window_mass_3 along
    Adam's step minus its nulls, the realized change over k steps minus its random null, window mass against its
    phase null, and the gradient's and step's norms; mean over seeds with 95% t intervals (the norms: geometric mean
    and the t interval of their logarithm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (OUT / "step.csv").open() as f:
        rows = list(csv.DictReader(f))
    n = len({r["seed"] for r in rows})
    ts = np.array([max(t, 0.5) for t in TRACK])

    def band(fn, log=False):
        """Mean and 95% t interval over seeds per tracked step; for a norm (``log``), of its logarithm, drawn back
        as the geometric mean and a band that stays positive (a t band of the norm itself runs below zero where one
        seed's late norm is far off the others, and a log axis cannot draw it)."""
        if log:
            m = np.array([mean_interval([np.log(fn(r)) for r in rows if int(r["step"]) == t]) for t in TRACK])
            return np.exp(m[:, 0]), np.exp(m[:, 1]), np.exp(m[:, 2])
        m = np.array([mean_interval([fn(r) for r in rows if int(r["step"]) == t]) for t in TRACK])
        return m[:, 0], m[:, 1], m[:, 2]

    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    for a, title, curves in (
        (ax[0], "along Adam's step: dS minus null", [
            ("minus random directions", lambda r: float(r["dS"]) - float(r["dS@random"])),
            ("minus another unit's step", lambda r: float(r["dS"]) - float(r["dS@units"])),
            ("gradient direction, minus random", lambda r: float(r["dS_grad"]) - float(r["dS@random"]))]),
        (ax[1], f"realized over the next {K} steps, minus null", [
            ("minus random directions", lambda r: float(r["dS_k"]) - float(r["dS_k@random"])),
            ("minus another unit's displacement", lambda r: float(r["dS_k"]) - float(r["dS_k@units"]))]),
        (ax[2], "window_mass_3 and its phase null (20 draws)", [
            ("window_mass_3", lambda r: float(r["window_mass_3"])),
            ("phase null", lambda r: float(r["window_mass_3@phase"]))]),
        (ax[3], "norms (geometric mean, t interval of the log)", [
            ("||G|| (pull batch)", lambda r: float(r["grad_norm"])),
            ("||D|| (Adam's step)", lambda r: float(r["step_norm"]))])):
        for label, fn in curves:
            m, lo, hi = band(fn, log=a is ax[3])
            a.plot(ts, m, marker=".", label=f"{label}, n = {n}")
            a.fill_between(ts, lo, hi, alpha=0.25)
        if a is not ax[2] and a is not ax[3]:
            a.axhline(0, color="k", lw=0.6)
        a.set_xscale("log")
        a.set_xlabel("step (0 drawn at 0.5)")
        a.set_title(title, fontsize=9)
        a.legend(fontsize=7)
    ax[0].set_ylabel("change of window_mass_3")
    ax[3].set_yscale("log")
    fig.suptitle(f"MLP 40-100-100-10 on MNIST-1D (4000 examples), Adam lr 1e-2: {n} seeds, mean and 95% Student's t "
                 "interval over seeds (bands); nulls from 20 draws", fontsize=10)
    fig.tight_layout()
    path = Path(__file__).resolve().parents[1] / "figures" / "mechanism_step.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if (OUT / "cause.csv").is_file():
        cause_figure()
    return path


# -- medium scale and the early step read in the final windows ------------------------------------------------------
def run_early(seed: int) -> list[dict]:
    """One training run as ``step``'s; at the steps of EARLY, the first layer W_t, Adam's applied step D_t, the
    descent direction -G_t on the fixed pull batch and the displacement over the next K steps, each read in the
    units' final windows (window of 3 holding the most of each unit's energy at the last step;
    probe.metrics.final_window) against a random window and another unit's final window (DRAWS draws each); and
    W_t itself read there (how much of each field already sits where it ends). An update is part of the final
    field, so it could point at the final window only because it helped put the field there: the step and the
    displacement are also read in the final windows of W_T minus that update (``*_loo_*``), with the norms of the
    displacement, of W_T and of W_T - W_0 beside them."""
    task, model = _setup(seed)
    geo = task.geometry
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xb_pull, yb_pull = pull_batch(task, seed)
    want = set(EARLY) | {t + 1 for t in EARLY} | {t + K for t in EARLY}
    snaps, grads = {}, {}
    for step in range(STEPS):
        if step in want:
            snaps[step] = _W(model)
        if step in EARLY:
            grads[step] = first_layer_gradient(model, xb_pull, yb_pull, task.loss).double().numpy()
        x, y = _batch(task, seed, step)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y, task.loss).backward()
        opt.step()
    W_T = _W(model)
    acc = _acc(model, task)
    rows = []
    for t in EARLY:
        W = snaps[t]
        row = {"seed": seed, "step": t, "test_acc_end": acc, "grad_norm": float(np.linalg.norm(grads[t])),
               "step_norm": float(np.linalg.norm(snaps[t + 1] - W))}
        row.update({"disp_k_norm": float(np.linalg.norm(snaps[t + K] - W)), "final_norm": float(np.linalg.norm(W_T)),
                    "total_move_norm": float(np.linalg.norm(W_T - snaps[0]))})
        for name, D in (("step", snaps[t + 1] - W), ("grad", -grads[t]), ("disp_k", snaps[t + K] - W),
                        ("weights", W)):
            r = final_window_reading(W, D, W_T, geo, 3, DRAWS, seed=1000 * seed + t)
            for key, v in r.items():
                if name == "weights" and key.startswith("dm"):
                    continue  # the change along W itself is a rescaling: 0 by construction
                row[f"{name}_{key}"] = v
            if name in ("step", "disp_k"):
                # leave-one-out: the final windows of W_T - D, the final field without this update's own part,
                # so that an update does not point at a window only because it helped put the field there
                r = final_window_reading(W, D, W_T - D, geo, 3, DRAWS, seed=1000 * seed + t)
                row.update({f"{name}_loo_{key}": v for key, v in r.items()})
        rows.append(row)
    return rows


def _fmt(m, digits=3, signed=True) -> str:
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(m[0])} [{f.format(m[1])}, {f.format(m[2])}]"


def cause_t_summary() -> None:
    """cause(-medium).csv: each arm's window_mass_3 minus its phase null (20 draws) at the intervention and at the end,
    and test accuracy, with Student's t intervals; the perturbed arms also minus the unperturbed run, paired by seed."""
    path = out_path("cause")
    if not path.is_file():
        return
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r.get("n_train") or N_TRAIN) == N_TRAIN]
    base = {r["seed"]: r for r in rows if r["arm"] == "none"}
    sd = mean_interval([float(r["wm_end@phase_sd"]) for r in rows])[0]
    print(f"{path.name} (n_train {N_TRAIN}), with Student's t intervals: {len(base)} seeds; window_mass_3 - "
          f"phase null (mean of {DRAWS} draws; "
          f"one draw's sd {sd:.4f}), mean [95% t interval]")
    for arm in ("none", "phase-keep", "phase-reinit"):
        rs = [r for r in rows if r["arm"] == arm]
        m = mean_interval([float(r["wm_mid"]) - float(r["wm_mid@phase"]) for r in rs])
        af = mean_interval([float(r["wm_after_intervention"]) - float(r["wm_mid@phase"]) for r in rs])
        e = mean_interval([float(r["excess_end"]) for r in rs])
        a = mean_interval([100 * float(r["test_acc"]) for r in rs])
        print(f"  {arm:13s} step {MID}: {_fmt(m)}, after the intervention {_fmt(af)}; step {STEPS}: {_fmt(e)}; "
              f"test acc {_fmt(a, 1, False)}%")
        if arm != "none":
            de = mean_interval([float(r["excess_end"]) - float(base[r["seed"]]["excess_end"]) for r in rs])
            da = mean_interval([100 * (float(r["test_acc"]) - float(base[r["seed"]]["test_acc"])) for r in rs])
            print(f"  {'':13s} minus the unperturbed run (same seed): excess {_fmt(de)}, test acc {_fmt(da, 1)} points")


EARLY_RANGES = ((0,), (1, 2, 3, 5, 10), (20, 50, 100, 200, 500))
EARLY_READS = (("step", "Adam's step D_t"), ("grad", "the descent direction -G_t"),
               ("disp_k", f"the displacement over the next {K} steps"), ("weights", "the weights W_t"),
               ("step_loo", "Adam's step, windows of W_T - D_t"),
               ("disp_k_loo", f"the {K}-step displacement, windows of W_T minus it"))


def early_summary() -> None:
    """early(-medium).csv: per reading, the energy share in each unit's final window and the signed change of the
    weights' mass there, minus the random-window and other-unit nulls (20 draws each), each seed's mean over a
    range of steps, then the mean over seeds with its t interval."""
    path = out_path("early")
    if not path.is_file():
        return
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r.get("n_train") or N_TRAIN) == N_TRAIN]
    seeds = sorted({r["seed"] for r in rows})
    acc = mean_interval([100 * float(r["test_acc_end"]) for r in rows if int(r["step"]) == 0])
    print(f"{path.name} (n_train {N_TRAIN}): {len(seeds)} seeds, test acc at the end {_fmt(acc, 1, False)}%; "
          f"reading minus null (mean of {DRAWS} draws) per range of steps, mean [95% t interval] over seeds")
    for name, label in EARLY_READS:
        for q in (("share",) if name == "weights" else ("share", "dm")):
            for null in ("random", "units"):
                parts = []
                for rng in EARLY_RANGES:
                    per = [np.mean([float(r[f"{name}_{q}"]) - float(r[f"{name}_{q}@{null}"]) for r in rows
                                    if r["seed"] == sd and int(r["step"]) in rng]) for sd in seeds]
                    raw = mean_interval([float(r[f"{name}_{q}"]) for r in rows if int(r["step"]) in rng])[0]
                    nsd = mean_interval([float(r[f"{name}_{q}@{null}_sd"]) for r in rows if int(r["step"]) in rng])[0]
                    parts.append(f"steps {rng[0]}-{rng[-1]}: {raw:.4g} - null = {_fmt(mean_interval(per), 4)} "
                                 f"(null sd {nsd:.2g})")
                print(f"  {label}, {q} - @{null}: " + "; ".join(parts))
    gn = [mean_interval([float(r["grad_norm"]) for r in rows if int(r["step"]) == t])[0] for t in EARLY]
    dn = [mean_interval([float(r["step_norm"]) for r in rows if int(r["step"]) == t])[0] for t in EARLY]
    kn = [mean_interval([float(r["disp_k_norm"]) for r in rows if int(r["step"]) == t])[0] for t in EARLY]
    print("  norms by step: " + ", ".join(f"t={t} |G|={g:.3g} |D|={d:.3g} |W_t+{K} - W_t|={k:.3g}"
                                          for t, g, d, k in zip(EARLY, gn, dn, kn)))
    for key in ("final_norm", "total_move_norm"):
        print(f"  {key}: {_fmt(mean_interval([float(r[key]) for r in rows if int(r['step']) == 0]), 3, False)}")


def cause_figure() -> Path:
    """figures/mechanism_cause.png (mechanism_cause-medium.png at any other N_TRAIN): window_mass_3 minus its phase
    null (20 draws) at the intervention step and at the end, per arm, each seed a dot, the mean with its 95% t
    interval; and test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with out_path("cause").open() as f:
        rows = [r for r in csv.DictReader(f) if int(r.get("n_train") or N_TRAIN) == N_TRAIN]
    arms = ("none", "phase-keep", "phase-reinit")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    accs = []
    for i, arm in enumerate(arms):
        rs = [r for r in rows if r["arm"] == arm]
        for j, (label, vals) in enumerate((
                (f"step {MID}, before", [float(r["wm_mid"]) - float(r["wm_mid@phase"]) for r in rs]),
                (f"step {MID}, after the intervention", [float(r["wm_after_intervention"]) - float(r["wm_mid@phase"])
                                                         for r in rs]),
                (f"step {STEPS}", [float(r["excess_end"]) for r in rs]))):
            x = i + (j - 1) * 0.25
            m, lo, hi = mean_interval(vals)
            ax[0].bar(x, m, width=0.22, color=f"C{j}", alpha=0.6, label=label if i == 0 else None)
            ax[0].errorbar(x, m, yerr=[[m - lo], [hi - m]], color="k", capsize=3)
            ax[0].plot([x] * len(vals), vals, "k.", ms=3)
        vals = [100 * float(r["test_acc"]) for r in rs]
        accs += vals
        m, lo, hi = mean_interval(vals)
        ax[1].bar(i, m, width=0.5, color="C7", alpha=0.6)
        ax[1].errorbar(i, m, yerr=[[m - lo], [hi - m]], color="k", capsize=3)
        ax[1].plot([i] * len(vals), vals, "k.", ms=3)
    for a in ax:
        a.set_xticks(range(3))
        a.set_xticklabels(["unperturbed", "phase-randomized,\nupper layers kept",
                           "phase-randomized,\nupper re-initialized"], fontsize=8)
    ax[0].axhline(0, color="k", lw=0.6)
    ax[0].set_ylabel("window_mass_3 minus phase null")
    ax[0].legend(fontsize=7)
    ax[1].set_ylabel(f"test accuracy at step {STEPS} (%)")
    ax[1].set_ylim(np.floor(min(accs)) - 3, np.ceil(max(accs)) + 2)
    n = len({r["seed"] for r in rows})
    fig.suptitle(f"Cause or consequence: the MLP's first layer phase-randomized at step {MID} of {STEPS} (MNIST-1D, "
                 f"{N_TRAIN} examples; {n} seeds, mean and 95% t interval)", fontsize=9)
    fig.tight_layout()
    path = figure_path("cause")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def early_figure() -> Path:
    """figures/mechanism_early(-medium).png: over the early steps (log scale), the energy share of each unit's
    step, gradient and 100-step displacement in its final window, and of its weights, against the random-window and
    other-unit nulls; the signed change of the weights' mass there along each, minus the nulls; the norms. Mean
    over seeds with 95% t intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with out_path("early").open() as f:
        rows = [r for r in csv.DictReader(f) if int(r.get("n_train") or N_TRAIN) == N_TRAIN]
    n = len({r["seed"] for r in rows})
    ts = np.array([max(t, 0.5) for t in EARLY])

    def band(fn):
        m = np.array([mean_interval([fn(r) for r in rows if int(r["step"]) == t]) for t in EARLY])
        return m[:, 0], m[:, 1], m[:, 2]

    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    colors = {name: f"C{j}" for j, (name, _) in enumerate(EARLY_READS)}
    for name, label in EARLY_READS:
        if name == "step_loo":
            continue  # on top of the step's curve
        j = colors[name][1:]
        m, lo, hi = band(lambda r, name=name: float(r[f"{name}_share"]))
        ax[0].plot(ts, m, marker=".", color=f"C{j}", label=label)
        ax[0].fill_between(ts, lo, hi, color=f"C{j}", alpha=0.2)
        m, lo, hi = band(lambda r, name=name: float(r[f"{name}_share@units"]))
        ax[0].plot(ts, m, ls="--", color=f"C{j}", lw=0.9)
    m, lo, hi = band(lambda r: float(r["step_share@random"]))
    ax[0].plot(ts, m, ls=":", color="k", label="random window (any reading)")
    ax[0].set_title("energy share in the unit's final window\n(dashed: another unit's final window)", fontsize=9)
    for name, label in EARLY_READS:
        if name in ("weights", "step_loo"):
            continue
        j = colors[name][1:]
        for a, null, ls in ((ax[1], "units", "-"), (ax[2], "random", "-")):
            m, lo, hi = band(lambda r, name=name, null=null: float(r[f"{name}_dm"]) - float(r[f"{name}_dm@{null}"]))
            a.plot(ts, m, marker=".", color=f"C{j}", ls=ls, label=label)
            a.fill_between(ts, lo, hi, color=f"C{j}", alpha=0.2)
    ax[1].set_title("signed change of the weights' mass in the final window,\nminus another unit's window", fontsize=9)
    ax[2].set_title("signed change of the weights' mass in the final window,\nminus a random window", fontsize=9)
    ax[1].set_yscale("symlog", linthresh=1e-4)
    ax[2].set_yscale("symlog", linthresh=1e-4)
    for label, key in (("||G|| (pull batch)", "grad_norm"), ("||D|| (Adam's step)", "step_norm")):
        m, lo, hi = band(lambda r, key=key: float(r[key]))
        ax[3].plot(ts, m, marker=".", label=label)
        ax[3].fill_between(ts, lo, hi, alpha=0.25)
    ax[3].set_yscale("log")
    ax[3].set_title("norms", fontsize=9)
    for a in ax:
        a.set_xscale("log")
        a.set_xlabel("step (0 drawn at 0.5)")
        a.legend(fontsize=7)
    for a in ax[1:3]:
        a.axhline(0, color="k", lw=0.6)
    fig.suptitle(f"Early updates read in each unit's final window of 3 (MLP 40-100-100-10, MNIST-1D, {N_TRAIN} "
                 f"examples, Adam lr 1e-2): {n} seeds, mean and 95% t interval; nulls 20 draws", fontsize=10)
    fig.tight_layout()
    path = figure_path("early")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    global N_TRAIN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("step", "cause", "early", "summary", "figure"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n-train", type=int, default=N_QUICK,
                    help=f"training examples (default {N_QUICK}, the quick scale; any other size writes "
                         "<experiment>-medium.csv with an n_train column)")
    a = ap.parse_args(argv)
    if a.n_train < 10:
        print(f"mechanism_step: --n-train must be >= 10, got {a.n_train}", file=sys.stderr)
        return 2
    N_TRAIN = a.n_train
    if a.what == "summary":
        if N_TRAIN == N_QUICK:
            summary()
        cause_t_summary()
        early_summary()
        return 0
    if a.what == "figure":
        if N_TRAIN == N_QUICK:
            print(figure())
        else:
            print(cause_figure())
        if out_path("early").is_file():
            print(early_figure())
        return 0
    if a.what == "step" and N_TRAIN != N_QUICK:
        print("mechanism_step: the step experiment runs at the quick scale only (--n-train 4000)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    path = out_path(a.what)
    for seed in a.seeds:
        if _done(path, seed):
            print(f"{a.what} seed {seed} (n_train {N_TRAIN}): done already", flush=True)
            continue
        t0 = time.time()
        rows = {"step": run_step, "cause": run_cause, "early": run_early}[a.what](seed)
        if N_TRAIN != N_QUICK:
            rows = [{"n_train": N_TRAIN, **r} for r in rows]
        _append(path, rows)
        print(f"{a.what} seed {seed} (n_train {N_TRAIN}): {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
