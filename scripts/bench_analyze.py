"""Time every weight-only measure against layer size (docs/design.md §8: speed is measured, not guessed).

Layers of m = 256 .. 8192 random Gaussian units over a 3 x 32 x 32 image geometry (n = 3072). Prints one
row per measure with the seconds at each m and the growth exponent b of t ~ m^b, a least-squares line in
log-log over m >= 1024 (below that, fixed costs dominate; two points alone are at the mercy of one slow run), then checks the budget: every weight-only measure of a 4096 x 3072 layer together in
under 10 s on 2 cores. A dense circular convolution of that size is checked too, since the Hungarian
matching meets many exact ties there. Last, `probe analyze` itself on a plain state_dict holding that layer,
with every reference (gaussian, permuted, phase, lcn, init_seeds: docs/design.md §4.3), BLAS on 2 threads: budget
15 s wall on 2 idle cores.

Times are CPU seconds of this process (``time.process_time``) with BLAS limited to ``--blas-threads``
(default 1): on a machine shared with other work, wall time mostly measures the others, while the CPU
time of a single-threaded run is what the work costs, and bounds the wall time on two idle cores.
Wall seconds are printed beside the totals.

    python scripts/bench_analyze.py                   # full table (a minute or two on 2 cores)
    python scripts/bench_analyze.py --quick           # m = 256 .. 2048 only
    python scripts/bench_analyze.py --blas-threads 2  # let BLAS use both cores
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from probe.geometry import Geometry
from probe.metrics import WEIGHT_MEASURES, first_layer_measures, layer_measures
from probe.metrics.equivariance import circular_conv_matrix

GEOMETRY = Geometry(channels=3, spatial=(32, 32), periodic=True)
BUDGET_S = 10.0
ANALYZE_BUDGET_S = 15.0  # probe analyze of a 4096 x 3072 layer with every reference


def timed(f, *args) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    f(*args)
    return time.process_time() - c0, time.perf_counter() - t0


def time_measures(W: np.ndarray) -> dict[str, tuple[float, float]]:
    """(CPU, wall) seconds per registry measure, and for layer_measures, on one matrix."""
    times = {name: timed(f, W, GEOMETRY) for name, f in WEIGHT_MEASURES.items()}
    times["layer_measures"] = timed(layer_measures, W)
    return times


def all_measures(W: np.ndarray) -> None:
    first_layer_measures(W, GEOMETRY)
    layer_measures(W)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 2048 only")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS/LAPACK threads (default 1)")
    args = parser.parse_args()
    sizes = [256, 512, 1024, 2048] if args.quick else [256, 512, 1024, 2048, 4096, 8192]
    print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
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
