"""`probe demo`: the built-in default job.

Trains the MLP of Greydanus & Kobak (40-100-100-10) and a CNN on MNIST-1D with the default settings, prints
their test accuracies, and takes a first look at the MLP's first layer: locality and translation measures
beside their references (the run's initialization, random Gaussian weights, the same weights with input
positions permuted), and the fields of its most localized units drawn as text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from probe.analysis.load import first_layer
from probe.config import ConfigError, RunConfig
from probe.metrics import first_layer_measures, references
from probe.metrics.locality import unit_ipr
from probe.run.folder import read_json_file, run_state
from probe.run.loop import train_or_resume

DEMO_MEASURES = ("ipr", "ipr_frac_above", "window_mass_5", "spread", "shift_match")
BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray) -> str:
    """A field as one line of block characters, height proportional to |w|."""
    a = np.abs(values) / (np.abs(values).max() + 1e-12)
    return "".join(BLOCKS[int(round(v * (len(BLOCKS) - 1)))] for v in a)


DEMO_STEPS = 6000


def demo_run_dir(out: Path, model: str, steps: int, seed: int) -> Path:
    """``OUT/mnist1d-MODEL-sSEED``, with ``-STEPSsteps`` when the steps are not the default's."""
    return Path(out) / (f"mnist1d-{model}-s{seed}" + ("" if steps == DEMO_STEPS else f"-{steps}steps"))


def run_demo(out: Path, steps: int, seed: int, console: Console) -> dict:
    out = Path(out)
    results = {}
    for model in ("mlp", "cnn"):
        run_dir = demo_run_dir(out, model, steps, seed)
        cfg = RunConfig(task="mnist1d", model=model, steps=steps, seed=seed)
        # a finished demo run of the same options is reused (and an interrupted one resumed), saying so; other
        # options train runs of their own (their folder names carry the steps)
        state = run_state(run_dir, steps)
        if (run_dir / "config.json").is_file():
            stored = RunConfig.from_dict(read_json_file(run_dir / "config.json", "the run's config"),
                                         source=str(run_dir / "config.json"))
            diff = [k for k, v in cfg.to_dict().items() if k not in ("device", "threads") and stored.to_dict()[k] != v]
            if diff:
                raise ConfigError(f"{run_dir} holds a run with other options (differs in {', '.join(diff)}); give "
                                  f"--out NEW_FOLDER, or remove {run_dir}")
        if state == "done":
            console.print(f"reusing the finished run {run_dir} ({model}, {steps} steps, seed {seed}); remove it or "
                          "give --out to train again", highlight=False, soft_wrap=True)
        elif state == "partial":
            console.print(f"resuming the interrupted run {run_dir} ({model}, {steps} steps)", highlight=False,
                          soft_wrap=True)
        else:
            console.print(f"training {model} on MNIST-1D ({steps} steps) -> {run_dir}", highlight=False)
        results[model] = train_or_resume(cfg, run_dir, progress=True)
    console.print()
    t = Table("model", "test accuracy", "published (Greydanus & Kobak)", title="MNIST-1D, seed %d" % seed)
    t.add_row("MLP 40-100-100-10", f"{results['mlp']['test_acc']:.1%}", "68%")
    t.add_row("CNN (3 conv layers)", f"{results['cnn']['test_acc']:.1%}", "94%")
    console.print(t)

    mlp_dir = demo_run_dir(out, "mlp", steps, seed)
    W, geo = first_layer(mlp_dir)
    W0, _ = first_layer(mlp_dir, step=0)
    vals = first_layer_measures(W, geo, names=DEMO_MEASURES, W0=W0)
    refs = references(W, geo, W0=W0, seed=seed, names=DEMO_MEASURES)
    t = Table(title="The MLP's first layer (100 units x 40 pixels)")
    # measure names whole on any width (piped output is 80 columns): the reading below names them
    t.add_column("measure", no_wrap=True, min_width=max(len(k) for k in vals))
    for col in ("trained", "at init", "random Gaussian", "inputs permuted", "phases randomized"):
        t.add_column(col)
    for k, v in vals.items():
        if k == "shift_match_units":
            continue
        row = [refs.get(r, {}).get(k) for r in ("init", "gaussian", "permuted", "phase")]
        t.add_row(k, f"{v:.3f}", *("" if x is None else f"{x:.3f}" for x in row))
    console.print(t)
    ipr_units = unit_ipr(W, geo)
    order = np.argsort(ipr_units)[::-1]
    console.print("Most localized units (|w| over the 40 positions):")
    for i in order[:5]:
        console.print(f"  unit {i:3d}  ipr {ipr_units[i]:.3f}  |{sparkline(W[i])}|", highlight=False)
    console.print(f"  median unit  ipr {np.median(ipr_units):.3f}  |{sparkline(W[order[len(order) // 2]])}|",
                  highlight=False)
    console.print("Reading: ipr is 1/40 = 0.025 for a flat field, 1 for a single pixel, about 3/40 for Gaussian "
                  "weights (PyTorch's uniform init scores lower: read the trained value against 'at init'). "
                  "window_mass_5 is the share of a field's energy in its best 5-pixel window; smooth fields have more "
                  "of it without being local, so its null is 'phases randomized' (the same power spectrum per unit).",
                  highlight=False)
    return {"results": results, "measures": vals, "references": refs}


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_demo(Path("runs/demo"), 6000, 0, Console())
