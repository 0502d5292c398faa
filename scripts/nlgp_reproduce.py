"""The Reproduced rows of Ingrosso & Goldt (2022) and Lufkin, Saxe & Grant (2025): the measures a sweep's tracking
does not take, added to its summary, and the summary's statistics over seeds, written under results/.

``ig SWEEP --out DIR`` (docs/specs/nlgp-ig.toml): per MLP run, its first layer's ``tiling`` against the same fields
at random centres (``tiling@random``, 20 placements) and its ``filter_match`` with the first-layer filters of the
CNN of the same task and seed (:func:`probe.analysis.load.cnn_filters`) against phase-randomized fields
(``filter_match@phase``, 20 randomizations); the MLP on the Gaussian clone is read against the clone's CNN.

``fields SWEEP --out DIR`` (any sweep of first layers on a grid): per run, ``spectral_entropy`` and
``peak_frequency`` of the final first layer (:mod:`probe.metrics.spectral`) beside the same of its own
initialization (``@init``, the step-0 checkpoint). A pure sinusoid has spectral entropy log 2 / log(|S| - 1) (0.19
at 40 pixels) and its peak at its frequency; a localized field and an initialization's white noise have broad
spectra (entropy near 1): an oscillating field is one whose entropy falls far below its initialization's with its
peak at 2 cycles or more (one cycle over the grid is a single broad bump).

``modes`` (no sweep): the eigenvectors of R_1 - R_0, the difference of the two classes' input covariances (the
same for every marginal of the kurtosis controls), with the largest eigenvalues of either sign and the frequency
(cycles per grid length) each is a Fourier mode of. A unit trained on inputs with nothing but these covariances
(the Gaussian clone; elliptical inputs, whose directions are the Gaussian's) is drawn toward the leading ones, so
their frequency is the one its field can oscillate at.

``ig`` and ``fields`` write DIR/summary.csv (the sweep's summary, ``probe sweep SWEEP --summary``, with the added
columns) and DIR/stats.csv (mean, sd, 95% t interval over seeds and the paired differences to each ``@`` null,
:func:`probe.sweep.stats.seed_stats`), which results/claims.csv reads.

    python scripts/nlgp_reproduce.py ig runs/sweeps/nlgp-ig --out results/nlgp-ig
    python scripts/nlgp_reproduce.py fields runs/sweeps/nlgp-kurtosis --out results/nlgp-kurtosis
    python scripts/nlgp_reproduce.py modes --xi 1 3 --gain 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probe.analysis.load import cnn_filters, first_layer
from probe.metrics.spectral import peak_frequency, spectral_entropy
from probe.metrics.tiling import filter_match, tiling
from probe.run.checkpoint import list_checkpoints
from probe.sweep.stats import seed_stats
from probe.sweep.summary import _manifest_runs, summarize, write_csv


def _spectra(run_dir: Path) -> dict:
    W, geo = first_layer(run_dir)
    out = {"spectral_entropy": spectral_entropy(W, geo), "peak_frequency": peak_frequency(W, geo)}
    have = dict(list_checkpoints(run_dir))
    if 0 in have:
        W0, _ = first_layer(run_dir, 0)
        out.update({"spectral_entropy@init": spectral_entropy(W0, geo), "peak_frequency@init": peak_frequency(W0, geo)})
    return out


def _ig_row(sweep: Path, row) -> dict:
    """tiling and filter_match of one MLP run, against the CNN run of its task and seed."""
    run = sweep / row["run"]
    W, geo = first_layer(run)
    seed = int(row["seed"])
    t = tiling(W, geo, seed=seed)
    partner = [r for r in sweep.iterdir() if r.is_dir() and r.name == row["run"].replace("mlp_", "cnn_", 1)]
    if not partner:
        raise SystemExit(f"{run}: no CNN run {row['run'].replace('mlp_', 'cnn_', 1)} beside it")
    f = filter_match(W, geo, cnn_filters(partner[0]), seed=seed)
    return {**t, **f}  # tiling, tiling@random, filter_match, filter_match@phase


def modes(xi0: float, xi1: float, gain: float, size: int = 40, top: int = 3) -> list[tuple[float, int]]:
    """(eigenvalue, frequency) of the ``top`` most negative and most positive eigenvectors of R_1 - R_0 on a
    periodic line of ``size`` pixels (module docstring)."""
    import numpy as np

    from probe.tasks.nlgp import reference_covariances

    R0, R1 = reference_covariances(1, size, xi0, xi1, gain, True)
    lam, V = np.linalg.eigh(R1 - R0)
    out = []
    for i in [*range(top), *range(size - top, size)]:
        P = np.abs(np.fft.fft(V[:, i])) ** 2
        out.append((float(lam[i]), int(np.argmax(P[: size // 2 + 1]))))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("ig", "fields", "modes"))
    p.add_argument("sweep", type=Path, nargs="?")
    p.add_argument("--out", type=Path, help="results folder (results/NAME)")
    p.add_argument("--xi", type=float, nargs=2, default=(1.0, 3.0), help="modes: the classes' correlation lengths")
    p.add_argument("--gain", type=float, default=10.0, help="modes: the NLGP gain of the covariances")
    a = p.parse_args(argv)
    if a.what == "modes":
        for lam, f in modes(*a.xi, a.gain):
            print(f"eigenvalue {lam:+.3f}: {f} cycles per grid length")
        return 0
    if a.sweep is None or a.out is None:
        print(f"{a.what} needs a sweep folder and --out", file=sys.stderr)
        return 2
    if not a.sweep.is_dir():
        print(f"no sweep folder {a.sweep}", file=sys.stderr)
        return 2
    df = summarize(a.sweep)
    df = df[df["status"] == "done"].reset_index(drop=True)
    if not len(df):
        print(f"{a.sweep}: no finished runs", file=sys.stderr)
        return 2
    extra = []
    for _, row in df.iterrows():
        e = _spectra(a.sweep / row["run"])
        if a.what == "ig" and row.get("variant") == "mlp":
            e.update(_ig_row(a.sweep, row))
        extra.append(e)
    for key in dict.fromkeys(k for e in extra for k in e):
        df[key] = [e.get(key) for e in extra]
    _, columns = _manifest_runs(a.sweep)
    a.out.mkdir(parents=True, exist_ok=True)
    write_csv(df, a.out / "summary.csv")
    write_csv(seed_stats(df, [c for c in columns if c != "seed"]), a.out / "stats.csv")
    print(f"{len(df)} runs -> {a.out}/summary.csv, stats.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
