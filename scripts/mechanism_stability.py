"""Stability, decided: is an embedded, converged CNN left by training, and faster than optimizer noise would?

Per seed (MNIST-1D, 4000 training examples; the mechanism preset's stability settings: Adam, batch 25, a CNN with
circular padding and a pooled readout embedded exactly into an MLP):

1. ``converge``: the CNN trains (Adam lr 1e-3) until its accuracy on the whole training set reaches
   ``--converge`` (default 0.95), checked every 500 steps, at most ``--max-cnn-steps``; the steps taken and its
   train and test accuracy are recorded (and whether it met the criterion).
2. For each learning rate (1e-4, 3e-4, 1e-3), ``--steps`` steps from the embedded CNN:
   - ``mlp``: the MLP, unperturbed;
   - ``mlp-b``: the same from the same point with another batch order: the diffusion null. ||W_mlp - W_mlp-b|| over
     ||W|| (all embedded layers) is how far optimizer noise alone carries two runs apart, and
     conv_subspace_distance_all of each is read against it;
   - ``mlp-eps0.3``: perturbed off the convolutions by a relative norm 0.3 (every embedded layer);
   - ``cnn``: the CNN trained on for the same steps at the same lr (the same total budget as the MLP).
   Recorded: conv_subspace_distance_all at the end (0 at the start for the unperturbed runs, 0.3 for the
   perturbed), test accuracy, and the diffusion distance.

Along each MLP run, at steps 0-999 (dense early), the signed first-order change of the first layer's distance to
the convolutions of its layout along Adam's applied step, against random directions of the step's norm (20
draws): results/mechanism/stability_step.csv. Rows are appended per seed to results/mechanism/stability.csv
(resumable: a seed present is skipped).

    nice -n 10 python scripts/mechanism_stability.py run --seeds 0 1 2
    python scripts/mechanism_stability.py summary
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import time

import numpy as np
import torch

from probe.models import build_model
from probe.run.loop import loss_fn
from probe.models.conv import conv_layouts
from probe.run.procedures.ecnn import conv_subspace_distances, embed_local_net
from probe.run.procedures.stability import perturb_off_convolutions, symmetry_layouts
from probe.tasks import make_task

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from mechanism_step import OUT, _append, _done  # noqa: E402

from probe.metrics.equivariance import conv_layout, conv_subspace_distance  # noqa: E402
from probe.intervals import mean_interval  # noqa: E402
from probe.metrics.step import subspace_step  # noqa: E402

LRS = (1e-4, 3e-4, 1e-3)
BATCH = 25
CNN_OPTS = {"padding": "circular", "pool": True}


def _batch(task, seed, step):
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(0, len(task.x_train), (BATCH,), generator=g)
    return task.x_train[idx], task.y_train[idx]


@torch.no_grad()
def _acc(model, x, y) -> float:
    return float(torch.cat([model(x[i : i + 1000]).argmax(-1) == y[i : i + 1000] for i in range(0, len(x), 1000)])
                 .float().mean())


PROBE_STEPS = (0, 1, 5, 20, 100, 500, 999)


def _train(model, task, lr, steps, order_seed, start=0, index=None, record=None):
    """Train ``steps`` steps; with a first-layer layout ``index``, append to ``record`` at :data:`PROBE_STEPS` the
    signed first-order change of the first layer's distance to the layout's convolutions along Adam's applied
    step (probe.metrics.step.subspace_step, 20 draws per null) and the step's norm."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(start, start + steps):
        probe = index is not None and (step - start) in PROBE_STEPS
        if probe:
            W = model.first_layer_dense().double().numpy().copy()
        x, y = _batch(task, order_seed, step)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y, task.loss).backward()
        opt.step()
        if probe:
            D = model.first_layer_dense().double().numpy() - W
            r = subspace_step(W, D, index, draws=20, seed=order_seed)
            record.append({"step": step - start, "step_norm": float(np.linalg.norm(D)),
                           "conv_dist": conv_subspace_distance(W, index), **r})
    return model


def _flat(state, n_layers):
    return torch.cat([state[f"layers.{i}.weight"].reshape(-1).double() for i in range(n_layers)])


def run(seed: int, converge: float, max_cnn: int, steps: int) -> list[dict]:
    task = make_task("mnist1d", seed=seed)
    torch.manual_seed(seed)
    cnn = build_model("cnn", task, 100, 2, opts=dict(CNN_OPTS))
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)
    cnn_steps, train_acc = 0, 0.0
    while cnn_steps < max_cnn:
        for step in range(cnn_steps, cnn_steps + 500):
            x, y = _batch(task, seed, step)
            opt.zero_grad(set_to_none=True)
            loss_fn(cnn(x), y, task.loss).backward()
            opt.step()
        cnn_steps += 500
        train_acc = _acc(cnn, task.x_train, task.y_train)
        if train_acc >= converge:
            break
    cnn_test = _acc(cnn, task.x_test, task.y_test)
    width, depth, state = embed_local_net(cnn)
    layouts = conv_layouts(cnn)
    sym = symmetry_layouts(cnn)
    base = {"seed": seed, "converge": converge, "cnn_steps": cnn_steps, "cnn_converged": int(train_acc >= converge),
            "cnn_train_acc": train_acc, "cnn_test_acc": cnn_test, "width": width, "depth": depth, "steps": steps}
    rows, step_rows = [], []
    index0 = conv_layout(*layouts[0])

    def mlp_from(st):
        m = build_model("mlp", task, width, depth)
        m.load_state_dict(st)
        return m

    for lr in LRS:
        ends = {}
        for arm, st, order in (("mlp", state, seed), ("mlp-b", state, seed + 1000),
                               ("mlp-eps0.3", perturb_off_convolutions(state, sym, 0.3, "all", seed), seed)):
            rec = []
            m = _train(mlp_from(st), task, lr, steps, order, start=cnn_steps, index=index0, record=rec)
            step_rows += [{"seed": seed, "lr": lr, "arm": arm, **r} for r in rec]
            ends[arm] = {k: v.detach().clone() for k, v in m.state_dict().items()}
            d = conv_subspace_distances(ends[arm], layouts)
            d0 = conv_subspace_distances(st, layouts)
            rows.append({**base, "lr": lr, "arm": arm, "conv_dist_all_start": d0["conv_subspace_distance_all"],
                         "conv_dist_all_end": d["conv_subspace_distance_all"],
                         "test_acc": _acc(m, task.x_test, task.y_test),
                         "diffusion": float("nan")})
        L = len(layouts)
        a, b = _flat(ends["mlp"], L), _flat(ends["mlp-b"], L)
        diff = float((a - b).norm() / a.norm())
        for r in rows[-3:]:
            r["diffusion"] = diff
        c = _train(copy.deepcopy(cnn), task, lr, steps, seed, start=cnn_steps)
        rows.append({**base, "lr": lr, "arm": "cnn", "conv_dist_all_start": 0.0, "conv_dist_all_end": 0.0,
                     "test_acc": _acc(c, task.x_test, task.y_test), "diffusion": diff})
    return rows, step_rows


def summary() -> None:
    path = OUT / "stability.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    seeds = sorted({r["seed"] for r in rows})
    cs = [r for r in rows if r["arm"] == "cnn" and float(r["lr"]) == LRS[0]]
    print(f"stability.csv: {len(seeds)} seeds; CNN steps to converge {[int(r['cnn_steps']) for r in cs]}, converged "
          f"{[int(r['cnn_converged']) for r in cs]}, train acc {[round(float(r['cnn_train_acc']), 3) for r in cs]}, "
          f"test acc {[round(float(r['cnn_test_acc']), 3) for r in cs]}; mean [95% interval] over seeds")
    for lr in LRS:
        for arm in ("mlp", "mlp-b", "mlp-eps0.3", "cnn"):
            rs = [r for r in rows if float(r["lr"]) == lr and r["arm"] == arm]
            d = mean_interval([float(r["conv_dist_all_end"]) for r in rs])
            a = mean_interval([float(r["test_acc"]) for r in rs])
            gain = mean_interval([float(r["test_acc"]) - float(r["cnn_test_acc"]) for r in rs])
            print(f"  lr {lr:g} {arm:11s} conv distance (all layers) {d[0]:.3f} [{d[1]:.3f},{d[2]:.3f}]  test acc "
                  f"{a[0]:.3f} [{a[1]:.3f},{a[2]:.3f}]  minus the converged CNN's "
                  f"{gain[0]:+.3f} [{gain[1]:+.3f},{gain[2]:+.3f}]")
        rs = [r for r in rows if float(r["lr"]) == lr and r["arm"] == "mlp"]
        e = mean_interval([float(r["conv_dist_all_end"]) - float(r["diffusion"]) for r in rs])
        dd = mean_interval([float(r["diffusion"]) for r in rs])
        print(f"  lr {lr:g} diffusion null ||W_a - W_b|| / ||W|| {dd[0]:.3f} [{dd[1]:.3f},{dd[2]:.3f}]; "
              f"conv distance minus it {e[0]:+.3f} [{e[1]:+.3f},{e[2]:+.3f}]")
    sp = OUT / "stability_step.csv"
    if sp.is_file():
        with sp.open() as f:
            srows = list(csv.DictReader(f))
        print("first layer: d(distance to the convolutions) along Adam's step minus random directions of its norm "
              "(negative: into the subspace), mean [95% interval] over seeds")
        for lr in LRS:
            for arm in ("mlp", "mlp-eps0.3"):
                parts = []
                for lo, hi in ((0, 5), (20, 100), (500, 999)):
                    rs = [r for r in srows if float(r["lr"]) == lr and r["arm"] == arm and lo <= int(r["step"]) <= hi]
                    seeds = sorted({r["seed"] for r in rs})
                    e = mean_interval([np.mean([float(r["conv_dist_change"]) - float(r["conv_dist_change@random"])
                                                for r in rs if r["seed"] == sd]) for sd in seeds])
                    z = np.mean([float(r["conv_dist_change@random_sd"]) for r in rs]) if rs else float("nan")
                    parts.append(f"steps {lo}-{hi} {e[0]:+.1e} [{e[1]:+.1e},{e[2]:+.1e}] (random sd {z:.1e})")
                print(f"  lr {lr:g} {arm:11s} " + "; ".join(parts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("run", "summary"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--converge", type=float, default=0.95, help="train-accuracy criterion of the CNN")
    ap.add_argument("--max-cnn-steps", type=int, default=16000)
    ap.add_argument("--steps", type=int, default=2000, help="steps after the embedding, per run")
    a = ap.parse_args(argv)
    if not 0 < a.converge <= 1 or a.steps < 1 or a.max_cnn_steps < 500:
        print("error: --converge in (0, 1], --steps >= 1 and --max-cnn-steps >= 500 required", file=sys.stderr)
        return 2
    if a.what == "summary":
        summary()
        return 0
    torch.set_num_threads(1)
    path = OUT / "stability.csv"
    for seed in a.seeds:
        if _done(path, seed):
            print(f"stability seed {seed}: done already", flush=True)
            continue
        t0 = time.time()
        rows, step_rows = run(seed, a.converge, a.max_cnn_steps, a.steps)
        _append(OUT / "stability_step.csv", step_rows)  # first: a seed counts as done once stability.csv has it
        _append(path, rows)
        print(f"stability seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
