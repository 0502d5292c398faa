"""Time every weight-only measure against layer size (docs/design.md §8: speed is measured, not guessed).

Layers of m = 256 .. 8192 random Gaussian units over a 3 x 32 x 32 image geometry (n = 3072). Prints one
row per measure with the seconds at each m and the growth exponent b of t ~ m^b, a least-squares line in
log-log over m >= 1024 (below that, fixed costs dominate; two points alone are at the mercy of one slow run), then
checks the budget: every weight-only measure of a 4096 x 3072 layer together in under 10 s on 2 cores. A dense
circular convolution of that size is checked too, since the Hungarian matching meets many exact ties there. Last,
`probe analyze` itself on a plain state_dict holding that layer, with every reference (gaussian, permuted, phase, lcn,
init_seeds: docs/design.md §4.3), BLAS on 2 threads: budget 15 s wall on 2 idle cores.

Times are CPU seconds of this process (``time.process_time``) with BLAS limited to ``--blas-threads``
(default 1): on a machine shared with other work, wall time mostly measures the others, while the CPU
time of a single-threaded run is what the work costs, and bounds the wall time on two idle cores.
Wall seconds are printed beside the totals.

    python scripts/bench_analyze.py                   # full table (a minute or two on 2 cores)
    python scripts/bench_analyze.py --quick           # m = 256 .. 2048 only
    python scripts/bench_analyze.py --blas-threads 2  # let BLAS use both cores
    python scripts/bench_analyze.py --vs-weightwatcher  # probe analyze against weightwatcher

``--vs-weightwatcher`` builds a 3072-4096-4096-4096-10 MLP (PyTorch's default init, seeded), saves its state_dict
and, in this one process, times ``probe analyze`` on it (``analyze_checkpoint`` with ``--input-shape 3,32,32``: every
measure and every reference) twice, then weightwatcher's ``analyze()`` (its spectra and power-law fits alone), with
BLAS (and torch) limited to ``--blas-threads`` (default 2 here: the goal is on 2 cores; probe runs its jobs on
threads of one BLAS thread each, whatever this says: probe.analysis.jobs) and freed memory reused as `probe analyze`
sets it (``keep_freed_memory``: weightwatcher, timed after probe, runs with it too). The two probe timings:

- cold: the first analyze in this process (what a lone `probe analyze` pays, imports aside);
- warm: the second: what each checkpoint of an ``--all-steps`` run or a sweep costs beyond the first (every layer
  is decomposed anew; the two differ by what a first call warms up: page faults, thread starts).

It prints both times (CPU and wall), their ratios, whether probe is at least 3x faster (on wall time: the goal is
about using the 2 cores, and CPU seconds count the work of both), and checks that the two agree on every layer:
stable_rank to 1e-5 and alpha to 10% relative, the tolerances of tests/test_spectral.py (alpha only where
weightwatcher fits a spectrum of at least 20 eigenvalues; below that it switches to another estimator). Wall times
mean something only on idle cores: the CPU model and the load average are printed before and after.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from probe.geometry import Geometry
from probe.metrics import FIRST_LAYER_MEASURES, first_layer_measures, layer_measures
from probe.metrics.equivariance import circular_conv_matrix
from probe.analysis import jobs as analysis_jobs
from probe.analysis import report as analysis_report

GEOMETRY = Geometry(channels=3, spatial=(32, 32), periodic=True)
BUDGET_S = 10.0
MLP_WIDTHS = (3072, 4096, 4096, 4096, 10)  # the model of the comparison with weightwatcher
INPUT_SHAPE = (3, 32, 32)
GOAL_RATIO = 3.0  # probe analyze at least this many times faster than weightwatcher
SR_TOL, ALPHA_TOL = 1e-5, 0.10  # the tolerances of tests/test_spectral.py against weightwatcher
WW_SMALL_N = 20  # weightwatcher fits spectra of fewer eigenvalues with another estimator
ANALYZE_BUDGET_S = 15.0  # probe analyze of a 4096 x 3072 layer with every reference


def timed(f, *args) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    f(*args)
    return time.process_time() - c0, time.perf_counter() - t0


def time_measures(W: np.ndarray) -> dict[str, tuple[float, float]]:
    """(CPU, wall) seconds per registry measure, and for layer_measures, on one matrix."""
    times = {name: timed(f, W, GEOMETRY) for name, f in FIRST_LAYER_MEASURES.items()}
    times["layer_measures"] = timed(layer_measures, W)
    return times


def all_measures(W: np.ndarray) -> None:
    first_layer_measures(W, GEOMETRY)
    layer_measures(W)


def mlp(seed: int = 0) -> torch.nn.Sequential:
    """The 3072-4096-4096-4096-10 MLP with PyTorch's default (random) init."""
    torch.manual_seed(seed)
    mods = []
    for n_in, n_out in zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:]):
        mods += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*mods[:-1])


class _count_calls:
    """Replace module.name by a wrapper recording each call's CPU seconds (of its own thread: the jobs run on
    threads) and first argument's shape."""

    def __init__(self, module, name: str):
        self.real, self.cpu, self.shapes = getattr(module, name), [], []

        def wrapper(W, *args, **kwargs):
            c0 = time.thread_time()
            try:
                return self.real(W, *args, **kwargs)
            finally:
                self.cpu.append(time.thread_time() - c0)
                self.shapes.append(np.shape(W))

        setattr(module, name, wrapper)


def _time_probe(path: Path, label: str):
    """(report, CPU s, wall s) of probe analyze on ``path`` with nothing kept in this process."""
    from probe.analysis.report import analyze_checkpoint

    eig = _count_calls(analysis_report, "eigenvalues")
    try:
        c0, t0, m0 = time.process_time(), time.perf_counter(), time.thread_time()
        rep = analyze_checkpoint(path, input_shape=INPUT_SHAPE)
        cpu, wall, main = time.process_time() - c0, time.perf_counter() - t0, time.thread_time() - m0
    finally:
        analysis_report.eigenvalues = eig.real
    print(f"probe analyze {label} (every measure and reference): {cpu:.1f} CPU s ({main:.1f} in the calling thread, "
          f"the rest on the job threads), {wall:.1f} wall s; load {os.getloadavg()[0]:.2f}; on 2 idle cores the "
          f"wall time would be about CPU / 2 = {cpu / 2:.1f} s")
    if eig.cpu:
        print(f"  of which {len(eig.cpu)} eigendecompositions: {sum(eig.cpu):.1f} CPU s "
              f"(Gram matrices of {', '.join(str(min(s)) for s in eig.shapes)} rows)")
    return rep, cpu, wall


def vs_weightwatcher(threads: int, seed: int = 0) -> bool:
    """Time probe analyze (cold, then warm) and weightwatcher on :func:`mlp` in this process; True when the goal is
    met on both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import weightwatcher
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    model = mlp(seed)
    torch_threads = torch.get_num_threads()
    # as `probe analyze` does (weightwatcher, timed after it in this process, gets the same setting)
    reused = analysis_jobs.keep_freed_memory()
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"model {'-'.join(map(str, MLP_WIDTHS))} MLP (torch default init, seed {seed}); BLAS and torch threads: "
          f"{threads}; probe's job threads: {analysis_jobs.default_workers()}; freed memory reused: "
          f"{'yes' if reused else 'no'}")
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=threads, user_api="blas"):
        torch.set_num_threads(threads)
        try:
            path = Path(tmp) / "mlp.pt"
            torch.save(model.state_dict(), path)
            rep, cold_cpu, cold_wall = _time_probe(path, "cold")
            rep_warm, warm_cpu, warm_wall = _time_probe(path, "warm")
            c0, t0 = time.process_time(), time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                details = weightwatcher.WeightWatcher(model=model).analyze(plot=False, randomize=False, mp_fit=False)
            ww_cpu, ww_wall = time.process_time() - c0, time.perf_counter() - t0
            print(f"weightwatcher analyze (spectra and power-law fits): {ww_cpu:.1f} CPU s, {ww_wall:.1f} wall s; "
                  f"load {os.getloadavg()[0]:.2f}")
        finally:
            torch.set_num_threads(torch_threads)
    met = True
    for label, cpu, wall in (("cold", cold_cpu, cold_wall), ("warm", warm_cpu, warm_wall)):
        cpu_ratio, wall_ratio = ww_cpu / cpu, ww_wall / wall
        met &= wall_ratio >= GOAL_RATIO
        print(f"ratio weightwatcher / probe {label}: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU "
              f"(goal >= {GOAL_RATIO:.0f}x wall on 2 cores: {'met' if wall_ratio >= GOAL_RATIO else 'NOT met'})")

    same = all(rep.layers[n] == rep_warm.layers[n] and rep.reference["gaussian"][n] ==
               rep_warm.reference["gaussian"][n] for n in rep.layers)
    print(f"cold and warm reports identical: {'yes' if same else 'NO'}")
    agree = same
    print(f"{'layer':<8}{'shape':>12}{'stable_rank probe':>19}{'ww':>12}{'alpha probe':>13}{'ww':>10}  agree")
    for (name, values), (_, row) in zip(rep.layers.items(), details.iterrows()):
        m, n = rep.shapes[name]
        sr_ok = abs(values["stable_rank"] - row["stable_rank"]) <= SR_TOL * abs(row["stable_rank"])
        fit_alpha = min(m, n) >= WW_SMALL_N
        a_ok = not fit_alpha or abs(values["alpha"] - row["alpha"]) <= ALPHA_TOL * abs(row["alpha"])
        agree &= sr_ok and a_ok
        print(f"{name:<8}{f'{m}x{n}':>12}{values['stable_rank']:19.6g}{row['stable_rank']:12.6g}"
              f"{values['alpha']:13.5g}{row['alpha']:10.5g}  {'yes' if sr_ok and a_ok else 'NO'}"
              f"{'' if fit_alpha else ' (alpha not compared: weightwatcher small-N fit)'}")
    print("gaussian reference: " + "; ".join(f"{n}: stable_rank {g['stable_rank']:.6g}, alpha {g['alpha']:.5g}, "
                                             f"effective_rank {g['effective_rank']:.6g}"
                                             for n, g in rep.reference["gaussian"].items()))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} ({cpu_model()}); the ratios mean something only where "
          "the load stayed well under the number of cores")
    return agree and met


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform says."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 2048 only")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="BLAS/LAPACK threads (default 1; 2 with --vs-weightwatcher)")
    parser.add_argument("--vs-weightwatcher", action="store_true",
                        help="time probe analyze against weightwatcher on a 3072-4096-4096-4096-10 MLP instead")
    args = parser.parse_args()
    if args.vs_weightwatcher:
        vs_weightwatcher(2 if args.blas_threads is None else args.blas_threads)
        return
    args.blas_threads = 1 if args.blas_threads is None else args.blas_threads
    sizes = [256, 512, 1024, 2048] if args.quick else [256, 512, 1024, 2048, 4096, 8192]
    print(f"CPU: {cpu_model()}; load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"BLAS threads: {args.blas_threads}")
    rng = np.random.default_rng(0)
    table = {}
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        for m in sizes:
            W = rng.standard_normal((m, GEOMETRY.n_inputs)) / np.sqrt(GEOMETRY.n_inputs)
            table[m] = time_measures(W)

        names = list(table[sizes[0]])
        print(f"\nCPU seconds per measure, random Gaussian m x {GEOMETRY.n_inputs} ({GEOMETRY.describe()})")
        print(f"{'measure':<18}" + "".join(f"{m:>9}" for m in sizes) + "   growth b (t ~ m^b)")
        for name in names + ["total CPU", "total wall"]:
            if name.startswith("total"):
                col = 0 if name == "total CPU" else 1
                row = [sum(t[col] for t in table[m].values()) for m in sizes]
            else:
                row = [table[m][name][0] for m in sizes]
            big = [(m, t) for m, t in zip(sizes, row) if m >= 1024 and t > 0]
            growth = np.polyfit(*np.log(np.array(big)).T, 1)[0] if len(big) >= 2 else float("nan")
            print(f"{name:<18}" + "".join(f"{t:9.3f}" for t in row) + f"   {growth:5.2f}")

        # the budget: the registry in one call plus the layer spectra, best of two runs
        m = 4096
        K = rng.standard_normal((4, 3, 5, 5))  # 4 filters x 1024 positions = 4096 units
        layers = {
            "random": rng.standard_normal((m, GEOMETRY.n_inputs)) / np.sqrt(GEOMETRY.n_inputs),
            "dense conv": circular_conv_matrix(K, GEOMETRY.spatial),
        }
        print()
        for label, W in layers.items():
            cpu, wall = min(timed(all_measures, W) for _ in range(2))
            verdict = "ok" if cpu < BUDGET_S else "OVER BUDGET"
            print(f"4096 x 3072 {label}: all weight-only measures {cpu:.2f} CPU s, {wall:.2f} wall s "
                  f"(budget {BUDGET_S:.0f} s): {verdict}")
        time_analyze(layers["random"])
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def time_analyze(W: np.ndarray) -> None:
    """`probe analyze` (analysis.report.analyze_checkpoint) of a plain state_dict holding W, every reference, with
    BLAS on 2 threads: the budget is wall time on 2 cores (meaningful only when they are idle: see the load)."""
    import tempfile
    from pathlib import Path

    import torch

    from probe.analysis.report import analyze_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.pt"
        torch.save({"0.weight": torch.as_tensor(W, dtype=torch.float32)}, path)
        shape = (GEOMETRY.channels, *GEOMETRY.spatial)
        with threadpool_limits(limits=2, user_api="blas"):
            cpu, wall = timed(lambda: analyze_checkpoint(path, input_shape=shape, periodic=True))
    verdict = "ok" if wall < ANALYZE_BUDGET_S else "OVER BUDGET"
    print(f"probe analyze, 4096 x 3072, every reference, 2 BLAS threads: {wall:.2f} wall s, {cpu:.2f} CPU s "
          f"(budget {ANALYZE_BUDGET_S:.0f} s wall on 2 cores; load {os.getloadavg()[0]:.1f}): {verdict}")


if __name__ == "__main__":
    main()
