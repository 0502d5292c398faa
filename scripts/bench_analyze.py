"""Time every weight-only measure against layer size (DESIGN §6: speed is measured, not guessed).

Layers of m = 256 .. 8192 random Gaussian units over a 3 x 32 x 32 image geometry (n = 3072). Prints one
row per measure with the seconds at each m and the growth exponent b of t ~ m^b fitted over the two
largest sizes, then checks the budget: every weight-only measure of a 4096 x 3072 layer together in
under 10 s. A dense circular convolution of the same size is timed too, since the Hungarian matching
meets many exact ties there.

    python scripts/bench_analyze.py            # full table (about a minute on 2 cores)
    python scripts/bench_analyze.py --quick    # m = 256 .. 2048 only
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from probe.geometry import Geometry
from probe.metrics import WEIGHT_MEASURES, first_layer_measures, layer_measures
from probe.metrics.equivariance import circular_conv_matrix

GEOMETRY = Geometry(channels=3, spatial=(32, 32), periodic=True)
BUDGET_S = 10.0


def time_measures(W: np.ndarray) -> dict[str, float]:
    """Seconds per registry measure (and for layer_measures) on one matrix."""
    times = {}
    for name, f in WEIGHT_MEASURES.items():
        t0 = time.perf_counter()
        f(W, GEOMETRY)
        times[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    layer_measures(W)
    times["layer_measures"] = time.perf_counter() - t0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 2048 only")
    args = parser.parse_args()
    sizes = [256, 512, 1024, 2048] if args.quick else [256, 512, 1024, 2048, 4096, 8192]
    print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(timings from a machine shared with other work are upper bounds)")
    rng = np.random.default_rng(0)
    table = {}
    for m in sizes:
        W = rng.standard_normal((m, GEOMETRY.n_inputs)) / np.sqrt(GEOMETRY.n_inputs)
        table[m] = time_measures(W)
        print(f"m = {m}: total {sum(table[m].values()):.2f} s", flush=True)

    names = list(table[sizes[0]])
    print(f"\nseconds per measure, random Gaussian m x {GEOMETRY.n_inputs} ({GEOMETRY.describe()})")
    print(f"{'measure':<18}" + "".join(f"{m:>9}" for m in sizes) + "   growth b (t ~ m^b)")
    a, b = sizes[-2], sizes[-1]
    for name in names + ["total"]:
        row = [sum(table[m].values()) if name == "total" else table[m][name] for m in sizes]
        growth = np.log(row[-1] / row[-2]) / np.log(b / a) if row[-2] > 0 else float("nan")
        print(f"{name:<18}" + "".join(f"{t:9.3f}" for t in row) + f"   {growth:5.2f}")

    # the budget check: the registry in one call plus the layer spectra, best of two runs, on a random
    # layer and on the same size written as a dense convolution (many exact ties for the matching)
    m = 4096
    K = rng.standard_normal((4, 3, 5, 5))  # 4 filters x 1024 positions = 4096 units
    layers = {
        "random": rng.standard_normal((m, GEOMETRY.n_inputs)) / np.sqrt(GEOMETRY.n_inputs),
        "dense conv": circular_conv_matrix(K, GEOMETRY.spatial),
    }
    for label, W in layers.items():
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            first_layer_measures(W, GEOMETRY)
            layer_measures(W)
            runs.append(time.perf_counter() - t0)
        verdict = "ok" if min(runs) < BUDGET_S else "OVER BUDGET"
        print(f"4096 x 3072 {label}: all weight-only measures {min(runs):.2f} s "
              f"(runs: {', '.join(f'{t:.2f}' for t in runs)}; budget {BUDGET_S:.0f} s): {verdict}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

if __name__ == "__main__":
    main()
