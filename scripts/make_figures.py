"""Run the preset experiments and regenerate every figure of docs/findings.md into figures/.

    python scripts/make_figures.py                       # quick scale: 609 runs of 13 presets (5 seeds, 3
                                                         # where runs take minutes); at 2 seeds 192 of 204 runs took
                                                         # 90 + 28 min on 2 shared CPU cores
    python scripts/make_figures.py --scale medium --only data_size  # about an hour on 2 cores: data_size-medium_*
    python scripts/make_figures.py --scale medium --only patches    # natural-image patches: patches-medium_*
    python scripts/make_figures.py --scale full --jobs 8 # the papers' scale, for a GPU machine
    python scripts/make_figures.py --only mnist1d nlgp   # some experiments only
    python scripts/make_figures.py --figures-only        # redraw from the runs already there

Each experiment is a sweep preset of probe/experiments (`probe sweep --preset NAME`), run into RUNS/NAME
(restartable: finished runs are skipped), then drawn with probe.figures.make.make_figures into OUT/<prefix>_*.png and
.pdf. Every figure printed here can also be drawn by hand with `probe figures RUN... --out DIR` on the same runs.
docs/findings.md shows them with their commands; the README's Figures section says how to draw any set of runs.
After a null changes, scripts/refresh_references.py rewrites the runs' reference.json and --figures-only redraws.
The mechanism entry then runs the scripts whose results "Why" quotes (SCRIPTS below; their tables and figures go to
results/mechanism/ and figures/ whatever --out says):

    python scripts/make_figures.py --only mechanism                  # quick: 4000 examples
    python scripts/make_figures.py --scale medium --only mechanism   # --n-train 100000 to the scripts
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from probe.sweep import execute as runner
from probe.sweep import spec as sw
from probe.figures.tables import flat_config, run_dirs
from probe.figures.make import make_figures


@dataclass
class Fig:
    """One call of make_figures on the runs of an experiment whose config matches ``where``."""

    which: tuple
    where: dict = field(default_factory=dict)
    exclude: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    extra: tuple = ()  # other sweep folders under the same runs root whose runs join this figure, where they exist


AUGMENTATION_FINAL = dict(x="task_opts.augment_shift", hue="variant", xlabel="largest training shift k (pixels)",
                          final=["test_acc", "shift_consistency_1", "noise_consistency_1", "lie_ratio",
                                 "lie_derivative", "window_mass_3", "spread", "shift_match", "ipr"],
                          final_references=("phase",))

PATCHES_FINAL = dict(x="task.n_train", hue="variant", xlabel="training patches",
                     final=["test_acc", "ipr", "window_mass_5", "spread", "shift_match", "conv_distance_5", "movement"],
                     final_references=("phase", "init_seeds", "lcn"))

# experiment -> (sweep preset, figures); file names are EXPERIMENT_<figure>.png
EXPERIMENTS = {
    # MLP vs CNN vs LCN on clean and position-shuffled MNIST-1D (Greydanus & Kobak): accuracy, and how local and
    # how far from init each first layer is over training; lines are means over seeds, styles clean / shuffled
    # (hue by variant, not model: at medium scale the MLP of width 1024 is a model "mlp" too)
    "mnist1d": ("mnist1d-controls", [
        Fig(("accuracy",), options=dict(hue="variant", group_by="task")),
        Fig(("measures",), exclude={"model": "linear"},
            options=dict(hue="variant", group_by="task", references=("phase", "init_seeds", "lcn"),
                         measures=["ipr", "window_mass_3", "spread", "shift_match", "conv_distance_5", "movement"])),
        Fig(("fields", "spectra"), where={"seed": 0, "model": ("mlp", "cnn", "lcn")},
            exclude={"task": "mnist1d-shuffled", "model": "lcn"}, options=dict(mix_tasks=True)),
    ]),
    # one ReLU unit on NLGP inputs vs their Gaussian clone (Lufkin, Saxe & Grant): ipr over training per gain
    "nlgp": ("nlgp-gain", [
        Fig(("measures",), options=dict(hue="task_opts.gain", group_by="task", measures=["ipr", "window_mass_3"],
                                        references=("gaussian", "phase"))),
        Fig(("fields",), where={"seed": 0, "task_opts.gain": (1.0, 100.0)}, options=dict(mix_tasks=True)),
    ]),
    # width x standard / mean-field parametrization on NLGP (gain 100): do wide MLPs move and localize?
    "width": ("width-parametrization", [
        Fig(("measures",), where={"task": "nlgp"},
            options=dict(hue="width", group_by="param", measures=["ipr", "window_mass_3", "movement"],
                         references=("gaussian", "phase"))),
        Fig(("accuracy",), where={"task": "nlgp"}, options=dict(hue="width", group_by="param")),
        Fig(("fields",), where={"task": "nlgp", "seed": 0, "width": (32, 1024, 4096)}),  # 4096: medium scale
    ]),
    # associative recall (4 pairs, length 16): the flattened MLP's routing map beside attention (seed 0), accuracy
    # over training (mean over seeds), and the end-of-run routing scores on both MQAR tasks with their init nulls
    "routing": ("routing", [
        Fig(("routing",), where={"task": "mqar", "task_opts.pairs": 4, "seed": 0}, options=dict(hue="model")),
        Fig(("accuracy",), where={"task": "mqar", "task_opts.pairs": 4}, options=dict(hue="model", group_by="model")),
        Fig((), where={"task": "mqar"}, options=dict(
            x="model", hue="task_opts.pairs", xlabel="model",
            final=["test_acc", "routing_accuracy", "routing_accuracy_value", "intervention_follow", "swap_follow_keys",
                   "swap_follow_values"])),
        Fig((), where={"task": "induction"}, options=dict(
            prefix="routing_induction_", x="model", hue="task_opts.length", xlabel="model", mix_tasks=True,
            final=["test_acc", "routing_accuracy", "routing_accuracy_value", "intervention_follow",
                   "input_dependence"])),
    ]),
    # recurrent tasks (parity, count, Dyck depth, delayed copy) and "add two numbers": drawn and tabled by
    # scripts/recurrence_figures.py (docs/findings-recurrence.md); the clone's accuracy over training by
    # scripts/clone_dynamics.py (SCRIPTS)
    "recurrence": ("recurrence", []),
    "spectrum": ("spectrum", []),
    "clone_dynamics": ("clone-dynamics", []),
    # SGD vs L1 vs beta-LASSO vs IMP with rewinding (MNIST-1D MLP 40-500-500-10): end-of-run accuracy, sparsity
    # and locality against the permuted null, and the fields of seed 0 at the last step
    "sparsity": ("sparsity", [
        Fig((), options=dict(x="variant", final=["test_acc", "zero_frac", "ipr", "window_mass_3",
                                                 "displacement_mean", "movement"], xlabel="method",
                             final_references=("phase", "permuted", "init_seeds"))),
        Fig(("fields",), where={"seed": 0}, options=dict(steps=[3000])),
    ]),
    # MLP vs CNN against the training-set size: accuracy and first-layer locality with their nulls
    "data_size": ("data-size", [
        Fig((), options=dict(x="task.n_train", hue="variant", xlabel="training examples",
                             final=["test_acc", "ipr", "window_mass_3", "spread", "shift_match", "movement"],
                             final_references=("phase", "init_seeds"))),
    ]),
    # natural-image patches (scikit-image's photographs and textures): linear, MLP (width 100 and 1024) and CNN against
    # the number of training patches: accuracy and first-layer locality with their nulls; fields at 10^5 patches
    # (medium: at the preset's Adam lr 1e-2 the 1024-wide MLP and the CNN often do not train; the second figure and the
    # fields are the same grid at lr 1e-3, docs/specs/patches-controls-lr1e-3.toml, run into
    # runs/figures-medium/patches-controls-lr1e-3)
    "patches": ("patches-controls", [
        Fig((), options=dict(PATCHES_FINAL)),
        Fig((), where={"lr": 0.001}, extra=("patches-controls-lr1e-3",),
            options=dict(PATCHES_FINAL, prefix="patches_lr1e-3_")),
        # (medium and full scales: the quick one stops at 10^4 patches)
        Fig(("fields",), where={"seed": 0, "task_opts.n_train": 100000, "lr": 0.001,
                                "variant": ("mlp-lr1e-3", "mlp-1024-lr1e-3", "cnn-lr1e-3")},
            extra=("patches-controls-lr1e-3",), options=dict(prefix="patches_lr1e-3_")),
    ]),
    # CNN, plain MLP and eCNNs (CNN trained t steps, embedded, trained on as an MLP): conv_distance over
    # training, end-of-run values, and the loss on the line eCNN -> plain MLP
    "ecnn": ("ecnn", [
        Fig(("measures",), options=dict(hue="variant", group_by="variant", references=("lcn", "phase"),
                                        measures=["conv_distance_5", "window_mass_3", "movement"])),
        Fig((), options=dict(x="variant", xlabel="model", final_references=("lcn", "phase"),
                             final=["test_acc", "mlp_test_acc", "conv_distance_5", "conv_subspace_distance",
                                    "window_mass_3", "line_error_barrier", "line_barrier", "line_barrier_unaligned",
                                    "line_error_barrier_unaligned"])),
        Fig(("interpolation",), where={"procedure": "ecnn"}, options=dict(hue="variant")),
    ]),
    # random circular shifts of up to k pixels: accuracy, shift consistency, Lie derivative, locality
    # (medium: on patches the wide MLP does not train at lr 1e-2; the second figure puts in its place the same MLP at
    # lr 1e-3, docs/specs/augmentation-wide-patches-lr1e-3.toml, its runs in
    # runs/figures-medium/augmentation-wide-lr1e-3, a folder or a link to the sweep folder)
    "augmentation": ("augmentation", [
        Fig((), options=dict(AUGMENTATION_FINAL)),
        Fig((), where={"task": "patches"}, exclude={"variant": "mlp-wide"}, extra=("augmentation-wide-lr1e-3",),
            options=dict(AUGMENTATION_FINAL, prefix="augmentation_patches-lr1e-3_")),
    ]),
    # why: ΔW and the pull G = dL/dW1 of the MLP against the CNN, LCN and eCNN (per-step nulls dotted);
    # what the solutions rest on (the Gaussian clone); NLGP's four marginals; the embedded CNN's stability;
    # NTK alignment with a trained CNN
    "mechanism": ("mechanism", [
        Fig(("measures",), where={"variant": ("mlp", "cnn", "lcn", "ecnn")},
            options=dict(prefix="mechanism_delta_", hue="variant", group_by="variant",
                         references=("phase", "gaussian"),
                         measures=["delta_ipr", "delta_window_mass_3", "delta_hoyer", "movement"])),
        Fig(("measures",), where={"variant": ("mlp", "cnn", "lcn", "ecnn")},
            options=dict(prefix="mechanism_pull_", hue="variant", group_by="variant", references=(),
                         measures=["grad_window_mass_3", "grad_com_share_3", "grad_ipr"])),
        Fig(("measures",), where={"variant": ("cnn", "lcn", "ecnn")},
            options=dict(prefix="mechanism_layout_", hue="variant", group_by="variant", references=(),
                         measures=["grad_conv_share", "delta_conv_share", "grad_local_share", "delta_local_share"])),
        Fig(("measures",), where={"variant": ("mlp", "cnn", "lcn", "mlp-clone", "cnn-clone")},
            options=dict(prefix="mechanism_clone_", hue="variant", group_by="variant", references=(),
                         measures=["test_acc", "clone_acc", "real_acc"])),
        Fig(("measures",), where={"task": "nlgp"},
            options=dict(prefix="mechanism_nlgp_", hue="variant", group_by="variant", references=("gaussian", "phase"),
                         measures=["ipr", "window_mass_3", "delta_ipr", "grad_com_share_3"])),
        Fig(("fields",), where={"task": "nlgp", "seed": 0}, options=dict(prefix="mechanism_nlgp_", mix_tasks=True)),
        Fig(("measures",), where={"procedure": "stability"},
            options=dict(prefix="mechanism_stability_", hue="variant", group_by="variant", references=(),
                         measures=["conv_complement_growth_all", "equiv_complement_growth_all",
                                   "conv_subspace_distance_all", "test_acc"])),
        Fig(("measures",), where={"procedure": "ntk_align"},
            options=dict(prefix="mechanism_ntk_", hue="variant", group_by="variant", references=(),
                         measures=["ntk_cka", "ntk_kta", "ntk_input_cka", "test_acc"])),
    ]),
}


# The mechanism experiments that docs/findings.md "Why" reads are scripts, not presets: after the mechanism preset's
# sweep, each runs (resumable: a seed whose rows are in results/mechanism/ is skipped), then prints its summary, draws
# its figure and the per-seed tables become results/mechanism-*/summary.csv (scripts/mechanism_tables.py), from which
# tests/test_claims.py checks every number "Why" quotes. At medium scale the scripts get --n-train (10^5 examples,
# the medium presets' set) and write <experiment>-medium.csv; the step experiment and stability run at quick only.
MEDIUM_N_TRAIN = 100_000
SEEDS5, SEEDS3 = ("--seeds", "0", "1", "2", "3", "4"), ("--seeds", "0", "1", "2")


@dataclass
class Script:
    """One command of scripts/: ``run`` its experiment (skipped with --figures-only), at the scales listed."""

    script: str
    args: tuple
    scales: tuple = ("quick", "medium")
    run: bool = True


SCRIPTS = {
    # the presets drawn by their own scripts ({runs}: the sweeps' folder, {sweep}: this preset's sweep in it)
    "recurrence": [Script("recurrence_figures.py", ("--only", "recurrence", "--runs", "{runs}"), run=False)],
    "spectrum": [Script("recurrence_figures.py", ("--only", "spectrum", "--runs", "{runs}"), run=False)],
    "clone_dynamics": [Script("clone_dynamics.py", ("{sweep}",), run=False)],
    "mechanism": [
        Script("mechanism_step.py", ("step", *SEEDS5), scales=("quick",)),
        Script("mechanism_step.py", ("cause", *SEEDS5), scales=("quick",)),
        Script("mechanism_step.py", ("cause", *SEEDS5), scales=("medium",)),
        Script("mechanism_step.py", ("early", *SEEDS5)),
        Script("mechanism_clone.py", ("run", *SEEDS3)),
        Script("mechanism_stability.py", ("run", *SEEDS3, "--steps", "1000", "--max-cnn-steps", "12000"),
               scales=("quick",)),
        Script("mechanism_detect.py", ("run", *SEEDS5), scales=("quick",)),
        Script("mechanism_step.py", ("summary",), run=False),
        Script("mechanism_step.py", ("figure",), run=False),
        Script("mechanism_clone.py", ("summary",), run=False),
        Script("mechanism_clone.py", ("figure",), scales=("medium",), run=False),
        Script("mechanism_stability.py", ("summary",), scales=("quick",), run=False),
        Script("mechanism_detect.py", ("summary",), scales=("quick",), run=False),
        Script("mechanism_tables.py", (), run=False),
    ],
}


def run_scripts(name: str, scale: str, figures_only: bool, runs: Path, preset: str) -> None:
    """Run the scripts of an experiment (:data:`SCRIPTS`) in order; stop at the first that fails."""
    for s in SCRIPTS.get(name, []):
        if scale not in s.scales or (s.run and figures_only):
            continue
        if any("{" in a for a in s.args) and not (runs / preset).is_dir():  # draws from the sweep: none here
            print(f"== {name}: scripts/{s.script} left out (no runs in {runs / preset})", flush=True)
            continue
        args = [a.format(runs=runs, sweep=runs / preset) for a in s.args]
        if scale != "quick" and s.script.startswith("mechanism_") and s.script != "mechanism_tables.py":
            args += ["--n-train", str(MEDIUM_N_TRAIN)]
        cmd = [sys.executable, str(Path(__file__).resolve().parent / s.script), *args]
        print(f"== {name}: {' '.join(['python', 'scripts/' + s.script, *args])}", flush=True)
        t0 = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"make_figures: scripts/{s.script} {' '.join(args)} failed")
        print(f"   done in {time.perf_counter() - t0:.0f} s", flush=True)


def matches(cfg: dict, where: dict, exclude: dict) -> bool:
    """Whether a flattened config matches every ``where`` key (a value or a tuple of values) and not all of
    ``exclude`` (a run is left out only when it matches every key there)."""
    def hit(k, v):
        return cfg.get(k) in (v if isinstance(v, tuple) else (v,))

    return all(hit(k, v) for k, v in where.items()) and not (exclude and all(hit(k, v) for k, v in exclude.items()))


def has_scale(preset: str, scale: str) -> bool:
    return scale in sw.load_spec(preset=preset)


def run_experiment(name: str, preset: str, scale: str, runs: Path, jobs: int) -> Path:
    spec = sw.expand(sw.load_spec(preset=preset), scale)
    out = runs / preset
    t0 = time.perf_counter()
    print(f"== {name}: sweep {preset} ({spec.scale}), {len(spec.runs)} runs -> {out}", flush=True)
    results = runner.run_sweep(spec, out, "local", jobs)
    bad = [r for r in results if r["status"] not in ("done", "skipped")]
    for r in bad:
        print(f"   {r['run']}: {r['status']} {r.get('error', '')}")
    print(f"   {len(results) - len(bad)} runs done in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def draw(name: str, figs: list[Fig], folder: Path, out: Path) -> list[Path]:
    """Draw ``figs`` from the runs under ``folder`` into ``out``, files ``NAME_*`` unless a figure names its prefix."""
    written = []
    for fig in figs:
        folders = [f for f in [folder, *(folder.parent / e for e in fig.extra)] if f.is_dir()]
        dirs = [d for d in run_dirs(folders) if (d / "metrics.jsonl").exists()]
        chosen = [d for d in dirs if matches(flat_config(d), fig.where, fig.exclude)]
        if not chosen:
            print(f"   {name} {', '.join(fig.which)}: no runs match {fig.where}")
            continue
        options = {"prefix": f"{name}_", **fig.options}  # a figure may name its own prefix
        written += make_figures(chosen, out, which=fig.which, say=lambda m: print(f"   {m}"), **options)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sw.SCALES, default="quick",
                        help="quick (the default), medium (the presets that have it; figures NAME-medium_*) or full")
    parser.add_argument("--runs", type=Path, default=None, help="folder for the sweeps (default runs/figures-SCALE)")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="folder for the figures (default figures)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), help="these experiments only")
    parser.add_argument("--figures-only", action="store_true", help="draw from the runs already there")
    args = parser.parse_args()
    runs = args.runs or Path("runs") / f"figures-{args.scale}"
    t0 = time.perf_counter()
    for name in args.only or EXPERIMENTS:
        preset, figs = EXPERIMENTS[name]
        if not has_scale(preset, args.scale):
            print(f"== {name}: preset {preset} has no {args.scale} scale; left out")
            continue
        folder = runs / preset if args.figures_only else run_experiment(name, preset, args.scale, runs, args.jobs)
        # figures of other scales than quick get their own names: NAME-SCALE_*.png
        tag = name if args.scale == "quick" else f"{name}-{args.scale}"
        figs = [Fig(f.which, f.where, f.exclude, {**f.options, "prefix": f.options["prefix"].replace(name, tag, 1)}
                    if "prefix" in f.options else f.options, f.extra) for f in figs]
        if not folder.is_dir():  # --figures-only without the preset's runs: its scripts can still redraw, and a
            # figure drawn from another spec's runs beside it (``extra``) still can
            figs = [f for f in figs if any((runs / e).is_dir() for e in f.extra)]
            print(f"== {name}: no runs in {folder}; the preset's figures left out"
                  + (f" but the {len(figs)} drawn from runs beside it" if figs else ""))
        for p in draw(tag, figs, folder, args.out):
            if p.suffix == ".png":
                print(f"   {p}")
        run_scripts(name, args.scale, args.figures_only, runs, preset)
    print(f"all done in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
