"""Throughput of probe's training loop against a bare PyTorch loop (docs/design.md §8: speed is measured, not guessed).

Both loops train the same MLP (same layers, init seed, batch, optimizer, bf16 autocast on CUDA, data already in
memory as tensors on the device) in one process, and they take turns every few steps so that both see the same
machine load: probe trains through ``probe train``'s own code path (:func:`probe.run.loop.run_training` on a
synthetic task), logging every ``chunk`` steps, and a hook at each log step runs ``chunk`` steps of each bare
loop. Probe's time between two log steps (its steps, the metrics row, the device sync that reads the loss)
and each bare loop's time for its chunk are clocked with the device synchronized; the first chunk (warm-up,
compilation) and the last interval (final evaluation) are left out.

Loops per case:
- ``bare``: about 15 lines of PyTorch (:class:`BareLoop`), the optimizer as a user writes it: PyTorch's
  default on CPU (a Python for-loop over parameters), fused on CUDA (as docs/design.md §8's reference).
- ``bare fused`` (CPU): the same loop with ``fused=True``, the implementation probe uses on CPU too.
- Optimizers (``--optimizers``, default all): SGD, Adam and AdamW, each timed as its own set of runs.
- ``probe``: evaluation only at step 0 and the end, checkpoints only at 0 and the end. ``loop`` rates hold
  the per-step cost; ``run`` rates are the whole train() call less the hook's time, so they include probe's
  two evaluations and two checkpoints. Their cost at the default cadence (6000 steps, eval every 500, 10
  checkpoints) is measured separately and printed as a share of such a run.
- ``probe compile`` against ``bare compile`` (CUDA, ``--compile``): both loops through torch.compile.
- Tracking (when probe.run.tracking exists) runs at evaluation rows only, so like evaluations and checkpoints it
  is timed on its own and printed as its share of a default-cadence run, with the ratio of tracking on to off.

Targets: probe's steps >= 0.97x the bare loop with fused kernels (``fused x``: within 3% for sgd, adam
and adamw), tracking >= 0.9x off. Whole processes (``probe train`` against a bare script, at the default cadence)
are timed by scripts/bench_process.py. Peak resident memory (VmHWM, else ru_maxrss) of the
CIFAR-sized CPU case and of the wide MNIST-1D case is measured for each loop in a fresh subprocess; target probe
within 1.5x the bare loop.

The wide MNIST-1D case is the large MLP of the data-size experiment: 40-4096-4096-10 on 10^5 training
examples of MNIST-1D's shape (1 x 40; Gaussian inputs like every case here: a dense MLP's speed and memory do not
depend on the values), batch 100 as in MNIST-1D runs.

    python scripts/bench.py               # CPU cases, and the GPU case when cuda is available
    python scripts/bench.py --quick       # shorter runs, fewer repeats
    python scripts/bench.py --compile     # GPU case also with torch.compile
    python scripts/bench.py --cases wide  # only the wide MNIST-1D case (cases: cpu, wide, cuda)
    python scripts/bench.py --optimizers sgd  # only SGD (default sgd,adam,adamw)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import probe.run.loop
from probe.run.checkpoint import checkpoint_steps
from probe.config import RunConfig
from probe.geometry import Geometry
from probe.tasks import Task

LR = 1e-3


@dataclass(frozen=True)
class Case:
    name: str
    geometry: Geometry
    width: int
    depth: int
    batch: int
    device: str
    n_train: int
    n_test: int
    chunk: int  # steps per turn: about a third of a second at docs/design.md §8's rates
    chunks: int  # turns per run (quick: half)
    tag: str = ""  # what --cases selects it by (default: its device)
    rss_steps: int = 0  # > 0: peak memory measured over this many steps in fresh processes (quick: a fifth)


CASES = [
    Case("cpu mnist 784-1024-1024-10", Geometry(1, (28, 28)), 1024, 2, 256, "cpu", 60_000, 10_000, 20, 14),
    Case("cpu cifar 3072-1024-1024-10", Geometry(3, (32, 32)), 1024, 2, 256, "cpu", 50_000, 10_000, 10, 14,
         rss_steps=200),
    Case("cpu mnist1d 40-4096-4096-10", Geometry(1, (40,)), 4096, 2, 100, "cpu", 100_000, 10_000, 3, 12,
         tag="wide", rss_steps=60),
    Case("cuda 3072-3x8192-10 bf16", Geometry(3, (32, 32)), 8192, 3, 4096, "cuda", 65_536, 10_000, 40, 14),
]


def synthetic_task(case: Case) -> Task:
    """Gaussian inputs and random labels of the case's sizes, generated on the device (no host copy)."""
    g = torch.Generator(device=case.device).manual_seed(0)
    n, dev = case.geometry.n_inputs, case.device
    return Task(name="bench", geometry=case.geometry, n_outputs=10,
                x_train=torch.randn(case.n_train, n, generator=g, device=dev),
                y_train=torch.randint(0, 10, (case.n_train,), generator=g, device=dev),
                x_test=torch.randn(case.n_test, n, generator=g, device=dev),
                y_test=torch.randint(0, 10, (case.n_test,), generator=g, device=dev))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- the bare loop ----------------------------------------------------------------------------------------
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
TARGET_LOOP = 0.97  # probe's steps against the bare loop with fused kernels: within 3%


class BareLoop:
    """What a user writes: model, optimizer (AdamW unless told), batches by index from in-memory tensors;
    ``run(k)`` trains k steps."""

    def __init__(self, case: Case, task: Task, fused: bool, compile: bool = False, optimizer: str = "adamw"):
        torch.manual_seed(0)
        dims = [case.geometry.n_inputs] + [case.width] * case.depth
        layers = [m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        self.model = nn.Sequential(*layers, nn.Linear(dims[-1], 10)).to(case.device)
        self.opt = OPTIMIZERS[optimizer](self.model.parameters(), lr=LR, fused=fused or None)
        self.fwd = torch.compile(self.model) if compile else self.model
        self.case, self.x, self.y, self.step = case, task.x_train, task.y_train, 0

    def run(self, k: int) -> float:
        """Train k steps; returns their seconds, the device synchronized before and after."""
        dev, B, amp = self.case.device, self.case.batch, self.case.device == "cuda"
        per_epoch = len(self.x) // B
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(k):
            i = self.step % per_epoch
            if i == 0:
                self.perm = torch.randperm(len(self.x), device=dev)
            idx = self.perm[i * B : (i + 1) * B]
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                out = self.fwd(self.x[idx])
            loss = F.cross_entropy(out.float(), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
        sync(dev)
        return time.perf_counter() - t0


# -- probe ------------------------------------------------------------------------------------------------
def probe_cfg(case: Case, steps: int, eval_every: int | None = None, optimizer: str = "adamw", **kw) -> RunConfig:
    """Evaluation at 0 and the end (and every ``eval_every``), a row every ``chunk`` steps, checkpoints at 0 and
    the end only."""
    return RunConfig(task="bench", width=case.width, depth=case.depth, steps=steps, batch_size=case.batch, lr=LR,
                     optimizer=optimizer, device=case.device, eval_every=eval_every or steps, log_every=case.chunk,
                     checkpoints=1, track="none", **kw)


def run_probe(cfg: RunConfig, task: Task, workdir: Path, hooks=()) -> dict:
    """Run ``probe train``'s code path in a fresh folder under workdir (removed after); returns the last row."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    try:
        return probe.run.loop.run_training(cfg, out, hooks=hooks, progress=False, task=task)
    finally:
        shutil.rmtree(out)  # checkpoints of the 8192-wide model are GBs each


def interleaved(case: Case, task: Task, cfg: RunConfig, bares: dict, workdir: Path) -> tuple[dict, float]:
    """Train probe (``cfg``) and the bare loops in turns of ``case.chunk`` steps. Returns the seconds of each
    measured turn per loop, ``{name: [s, ...]}`` (turn i of every loop ran back to back), and probe's whole-run
    rate in samples/s (its train() call less the time the bare loops took)."""
    k, steps, dev = case.chunk, cfg.steps, case.device
    turns = {"probe": [], **{name: [] for name in bares}}
    state = {"hooks_s": 0.0, "t_out": None}

    def turn(step, model):  # runs at every log step, after the row's loss was read (a device sync)
        sync(dev)
        t_in = time.perf_counter()
        measured = k < step < steps  # not the warm-up turns, nor the final evaluation
        if measured:
            turns["probe"].append(t_in - state["t_out"])
        if step < steps:
            for name, b in bares.items():
                t = b.run(k)
                if measured:
                    turns[name].append(t)
        sync(dev)
        state["t_out"] = time.perf_counter()
        state["hooks_s"] += state["t_out"] - t_in
        return {}

    row = run_probe(cfg, task, workdir, hooks=(turn,))
    return turns, steps * case.batch / (row["seconds"] - state["hooks_s"])


# -- measuring ---------------------------------------------------------------------------------------------
def fixed_costs(case: Case, task: Task, workdir: Path, tracking: bool, optimizer: str = "adamw") -> dict:
    """Seconds of what a probe run does beside its steps, each timed on its own (median of 3): an evaluation
    row (test set + 5000 training samples, as probe.run.loop's log() does), a checkpoint (with Adam's state) and,
    when tracking exists, a row of the default tracked measures and the last one (which adds the references)."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    try:
        # eval_every=1: every row is an evaluation row, and so a tracked row
        cfg = probe_cfg(case, 4, eval_every=1, optimizer=optimizer).replace(track="default" if tracking else "none")
        run = probe.run.loop.setup(cfg, out, task)
        probe.run.loop.write_run_files(run)
        hook_s, hook_rows = {}, {}
        if tracking:
            from probe.run.tracking import tracking_hooks

            def timed_hook(hook):
                def h(step, model):
                    sync(case.device)
                    t0 = time.perf_counter()
                    hook_rows[step] = hook(step, model)
                    sync(case.device)
                    hook_s[step] = time.perf_counter() - t0
                    return hook_rows[step]
                return h

            hooks = tuple(timed_hook(h) for h in tracking_hooks(run))
        probe.run.loop.train(run, hooks=hooks if tracking else (), progress=False)
        amp = case.device == "cuda"

        def evaluation():
            probe.run.loop.evaluate(run.model, task.x_test, task.y_test, task.loss, amp)
            probe.run.loop.evaluate(run.model, task.x_train[:5000], task.y_train[:5000], task.loss, amp)

        def timed(fn):
            ts = []
            for _ in range(3):
                sync(case.device)
                t0 = time.perf_counter()
                fn()
                sync(case.device)
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts)

        costs = {"eval_s": timed(evaluation), "checkpoint_s": timed(lambda: run.checkpoint(cfg.steps))}
        if tracking:
            costs["tracking_row_s"] = statistics.median(hook_s[s] for s in (1, 2, 3))
            costs["tracking_last_s"] = hook_s[cfg.steps]
            costs["tracked_keys"] = sorted(hook_rows[1])
        return costs
    finally:
        shutil.rmtree(out)


def default_cadence(case: Case, costs: dict, rate: float) -> dict:
    """What a run of RunConfig's default cadence (6000 steps, evaluation and tracking every 500, 10 checkpoints)
    with this case's model and batch spends beside its steps (at ``rate`` samples/s), as shares of the steps'
    time, and the throughput ratio of tracking on to off."""
    d = RunConfig()
    n_eval = len(set(range(0, d.steps, d.eval_every)) | {d.steps})
    n_ckpt = len(checkpoint_steps(d.steps, d.checkpoints))
    steps_s = d.steps * case.batch / rate
    fixed_s = n_eval * costs["eval_s"] + n_ckpt * costs["checkpoint_s"]
    out = {"evals": n_eval, "checkpoints": n_ckpt, "overhead": fixed_s / steps_s}
    if "tracking_row_s" in costs:  # tracked at every evaluation row; the last one adds the references
        track_s = (n_eval - 1) * costs["tracking_row_s"] + costs["tracking_last_s"]
        out["tracking_overhead"] = track_s / steps_s
        out["tracking_ratio"] = (steps_s + fixed_s) / (steps_s + fixed_s + track_s)
    return out


def bench_case(case: Case, quick: bool, repeats: int, compile: bool, tracking: bool, workdir: Path,
               optimizer: str = "adamw") -> dict:
    steps = case.chunk * (case.chunks // 2 if quick else case.chunks)
    task = synthetic_task(case)
    cuda = case.device == "cuda"
    opt = dict(optimizer=optimizer)
    runs = [("probe", probe_cfg(case, steps, **opt),
             {"bare": dict(fused=cuda, **opt), **({} if cuda else {"bare fused": dict(fused=True, **opt)})})]
    if compile and cuda:
        runs.append(("probe compile", probe_cfg(case, steps, compile=True, **opt),
                     {"bare compile": dict(fused=True, compile=True, **opt)}))
    refs = {"probe": "bare", "bare fused": "bare", "probe compile": "bare compile"}
    # the 3% target's reference: the bare loop with torch's fused kernels (on CUDA "bare" is fused already)
    fused_ref = {"probe": "bare" if cuda else "bare fused", "probe compile": "bare compile"}
    turns: dict[str, list] = {}  # seconds of each measured turn, all repeats; turn i of each loop back to back
    run_rates: dict[str, list] = {}  # probe's whole-run samples/s per repeat
    samples = case.chunk * case.batch
    for r in range(repeats):
        for name, cfg, bare_opts in runs:
            bares = {b: BareLoop(case, task, **o) for b, o in bare_opts.items()}
            ts, run_rate = interleaved(case, task, cfg, bares, workdir)
            del bares
            for loop, t in ts.items():
                turns.setdefault(name if loop == "probe" else loop, []).extend(t)
            run_rates.setdefault(name, []).append(run_rate)
        print(f"  {case.name} {optimizer}  {r + 1}/{repeats}  " + "  ".join(
            f"{n} {samples * len(t) / sum(t):,.0f}" for n, t in turns.items()) + " samples/s so far", flush=True)
    rate = {name: samples * len(t) / sum(t) for name, t in turns.items()}
    rows = []
    for name, t in turns.items():
        vs = refs.get(name)
        row = {"case": case.name, "optimizer": optimizer, "loop": name, "steps": steps, "vs": vs,
               "loop_rate": rate[name],
               "run_rate": statistics.median(run_rates[name]) if name in run_rates else float("nan")}
        if vs:  # median over turns of (reference's seconds / this loop's) in the same turn
            row["loop_ratio"] = statistics.median(b / a for a, b in zip(t, turns[vs]))
            # a whole run against the bare loop's rate: a bare loop has no evaluations or checkpoints
            row["run_ratio"] = row["run_rate"] / rate[vs]
        if name in fused_ref:  # against fused kernels, the target TARGET_LOOP
            row["fused_vs"] = fused_ref[name]
            row["fused_ratio"] = statistics.median(b / a for a, b in zip(t, turns[fused_ref[name]]))
        rows.append(row)
    costs = fixed_costs(case, task, workdir, tracking, optimizer)
    return {"case": case.name, "optimizer": optimizer, "rows": rows, "costs": costs,
            "default_cadence": default_cadence(case, costs, rate["probe"])}


def case_tag(case: Case) -> str:
    return case.tag or case.device


def rss_child(kind: str, quick: bool, case_name: str) -> None:
    """Entry point of a fresh subprocess: train case ``case_name``, print peak RSS in MiB as JSON. Probe
    runs at its default cadence (a row every 100 steps, 10 checkpoints, evaluation at 0 and the end)."""
    case = next(c for c in CASES if c.name == case_name)
    steps = max(case.rss_steps // 5, 2) if quick else case.rss_steps
    task = synthetic_task(case)
    data_mib = _proc_status_mib("VmRSS")
    if kind == "bare":
        BareLoop(case, task, fused=False).run(steps)
    else:
        with tempfile.TemporaryDirectory() as d:
            run_probe(probe_cfg(case, steps).replace(log_every=100, checkpoints=10), task, Path(d))
    # ru_maxrss survives exec: a child forked from a parent that holds more memory reports the parent's peak.
    # VmHWM is this process image's own peak; use it where Linux gives it.
    peak = _proc_status_mib("VmHWM")
    if peak != peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"kind": kind, "maxrss_mib": peak, "data_mib": data_mib}))


def _proc_status_mib(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak) in MiB; NaN elsewhere."""
    try:
        line = next(x for x in open("/proc/self/status") if x.startswith(key + ":"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration, ValueError):
        return float("nan")


def measure_rss(quick: bool, cases) -> dict:
    """{case name: {kind: {"maxrss_mib", "data_mib"}}} for the bare loop and probe, each in a fresh process, for
    the CPU cases among ``cases`` that have ``rss_steps``."""
    out = {}
    for case in cases:
        if case.device != "cpu" or not case.rss_steps:
            continue
        for kind in ("bare", "probe"):
            res = subprocess.run([sys.executable, __file__, "--rss-child", kind, "--rss-case", case.name]
                                 + (["--quick"] if quick else []), capture_output=True, text=True, check=True)
            out.setdefault(case.name, {})[kind] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# -- report -------------------------------------------------------------------------------------------------
def _num(x, fmt):
    return "" if x is None or x != x else format(x, fmt)


def print_table(results: list[dict], rss: dict, tracking: bool) -> None:
    print("\nsamples/s. loop: the steps alone, over all measured turns of all repeats; run: probe's whole train()")
    print("call (2 evaluations, 2 checkpoints), median over repeats. loop x: median over turns of the rate against")
    print("`vs` in the same turn; run x: probe's run rate against `vs`'s loop rate (a bare loop has no fixed costs);")
    print(f"fused x: loop x against the bare loop with fused kernels (target >= {TARGET_LOOP})")
    print(f"{'case':28s} {'opt':5s} {'loop':15s} {'steps':>5s} {'loop':>10s} {'run':>10s} {'loop x':>7s} "
          f"{'run x':>7s} {'fused x':>7s}  vs")
    for res in results:
        for r in res["rows"]:
            f = r.get("fused_ratio")
            verdict = "" if f is None else f"; fused x vs {r['fused_vs']}: {'met' if f >= TARGET_LOOP else 'NOT met'}"
            print(f"{r['case']:28s} {r['optimizer']:5s} {r['loop']:15s} {r['steps']:5d} "
                  f"{_num(r['loop_rate'], ',.0f'):>10s} {_num(r['run_rate'], ',.0f'):>10s} "
                  f"{_num(r.get('loop_ratio'), '.3f'):>7s} {_num(r.get('run_ratio'), '.3f'):>7s} "
                  f"{_num(f, '.3f'):>7s}  {r['vs'] or ''}{verdict}")
    print("\nwhat a probe run does beside its steps (median of 3 each), and what it adds to a run of RunConfig's")
    print("default cadence (6000 steps; evaluation, and tracking, every 500: 13 rows; 10 checkpoints) "
          "at probe's loop rate:")
    for res in results:
        c, d = res["costs"], res["default_cadence"]
        print(f"{res['case'] + ' ' + res['optimizer']:34s} evaluation {c['eval_s']:.3f} s, "
              f"checkpoint {c['checkpoint_s']:.3f} s "
              f"-> +{100 * d['overhead']:.1f}%")
        if "tracked_keys" in c:
            print(f"{'':34s} tracking ({', '.join(c['tracked_keys'])}) {c['tracking_row_s']:.3f} s a row, "
                  f"{c['tracking_last_s']:.3f} s the last (references) -> +{100 * d['tracking_overhead']:.1f}%; "
                  f"tracking on / off {d['tracking_ratio']:.3f} (target >= 0.9)")
    if not tracking:
        print("tracking: not yet available (no probe.run.tracking)")
    for name, m in rss.items():
        b, q = m["bare"], m["probe"]
        print(f"peak RSS, {name} (fresh processes): bare {b['maxrss_mib']:,.0f} MiB, probe "
              f"{q['maxrss_mib']:,.0f} MiB, ratio {q['maxrss_mib'] / b['maxrss_mib']:.2f} (target <= 1.5); above the "
              f"RSS once the data was made: bare {b['maxrss_mib'] - b['data_mib']:,.0f} MiB, "
              f"probe {q['maxrss_mib'] - q['data_mib']:,.0f} MiB")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter runs, fewer repeats")
    p.add_argument("--repeats", type=int, default=None, help="runs per case (default 5, quick 3)")
    p.add_argument("--compile", action="store_true", help="GPU case also with torch.compile (both loops)")
    p.add_argument("--cases", default="cpu,wide,cuda",
                   help="comma list among cpu, wide (the 40-4096-4096-10 MNIST-1D case), cuda (where available)")
    p.add_argument("--optimizers", default="sgd,adam,adamw",
                   help="comma list among sgd, adam, adamw: each case is timed with each (default all three)")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--rss-child", choices=("bare", "probe"), help=argparse.SUPPRESS)
    p.add_argument("--rss-case", default=CASES[1].name, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rss_child:
        return rss_child(a.rss_child, a.quick, a.rss_case)
    try:
        import probe.run.tracking  # noqa: F401

        tracking = True
    except ImportError:
        tracking = False
    repeats = a.repeats or (3 if a.quick else 5)
    wanted = set(a.cases.split(","))
    if wanted - {case_tag(c) for c in CASES}:
        p.error(f"--cases: unknown {', '.join(sorted(wanted - {case_tag(c) for c in CASES}))}; cases: cpu, wide, cuda")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, "
          + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no cuda: the GPU case is unmeasured"))
    optimizers = a.optimizers.split(",")
    if set(optimizers) - set(OPTIMIZERS):
        p.error(f"--optimizers: unknown {', '.join(sorted(set(optimizers) - set(OPTIMIZERS)))}; optimizers: "
                f"{', '.join(OPTIMIZERS)}")
    chosen = [c for c in CASES if case_tag(c) in wanted and (c.device == "cpu" or torch.cuda.is_available())]
    # memory first, while this process is small (see rss_child)
    rss = {} if a.no_rss else measure_rss(a.quick, chosen)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in chosen:
            for optimizer in optimizers:
                results.append(bench_case(case, a.quick, repeats, a.compile, tracking, Path(workdir), optimizer))
    print_table(results, rss, tracking)
    if a.json:
        a.json.write_text(json.dumps({"results": results, "rss_mib": rss}, indent=2))


if __name__ == "__main__":
    main()
