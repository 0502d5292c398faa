"""Sweeps: a grid of training runs from one TOML spec, run locally or on Slurm, restartable, summarized in one table.

A sweep spec (the presets in ``probe/experiments/*.toml`` are examples)::

    name = "nlgp-example"                # default: the file name
    hypothesis = "..."                   # one line: what the sweep tests (`probe sweep --list` shows it)
    anchor = "..."                       # the published number it is read against
    final_measures = ["lie_derivative"]  # optional: functional measures of each final model (FINAL_MEASURES)

    [base]                               # config keys of every run (RunConfig fields; unset: their defaults)
    task = "nlgp"
    steps = 2000
    task_opts = { n_train = 4000 }       # option tables merge key by key

    [grid]                               # crossed: one run per combination of these lists
    seed = [0, 1]
    "task_opts.gain" = [1, 3, 10]        # a dotted key sets one entry of task_opts, model_opts or procedure_opts

    [[variants]]                         # zipped: each entry sets several keys together, one run per entry
    name = "mlp"                         # its label (run folder names, the summary column); default: its values
    model = "mlp"

    [[variants]]
    name = "cnn"
    model = "cnn"
    "model_opts.channels" = 32
    # procedure = "imp" and procedure_opts = { rounds = 3 }: a multi-stage procedure of probe.run.procedures
    # (imp, ecnn, stability, ntk_align) instead of one plain training run ("train", the default)

    # Several zipped axes: [[variants.AXIS]] tables instead of [[variants]] (whose axis is called "variant").
    # Axes are crossed with each other and with the grid.

    [quick]                              # a scale: `--scale quick` (the default when the spec has it)
    base = { steps = 500 }               # merged over [base]
    grid = { seed = [0] }                # replaces those grid keys
    # variants = [...] / [[quick.variants.AXIS]]: replaces those axes
    # [medium]                           # `--scale medium`: same form (about an hour on 2 CPU cores, --jobs 2)
    # [full]                             # `--scale full`: same form

One run's config, lowest to highest precedence: RunConfig defaults, the task's training defaults, [base], the
scale's base, the variants (in axis order), the grid values, ``--set KEY=VALUE``. Run folder names join the variant
labels and the grid values
(``cnn_task=mnist1d-shuffled_s0``); the summary has one column per axis and per grid key.

Running the runs is :mod:`probe.sweep.execute`'s job (``probe sweep`` calls it). Sweep folder: ``sweep.json`` (the
expanded runs), and one run folder per run holding, beside the usual run files,
``sweep_run.json`` (what the worker runs), ``result.json`` (status, seconds, final measures) and, for procedures,
``procedure.json``. A run is finished when its last checkpoint is at ``steps`` and its result says done; starting
the sweep again skips finished runs and resumes interrupted ones from their last checkpoint (``probe train
--resume``: bit-identical on CPU with the same thread count). Failed runs are retried; their traceback is in
``error.txt``.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from probe.analysis.function import FUNCTION_MEASURES
from probe.config import ConfigError, RunConfig, load_config_file
from probe.tasks import get_spec
from probe.run.procedures import check_procedure_options, procedure_options
from probe.models import model_specs
from probe.bounds import check_sweep_size, check_task_size

SCALES = ("quick", "medium", "full")  # CPU minutes; about an hour on 2 cores with --jobs 2; a GPU
TOP_KEYS = ("name", "hypothesis", "anchor", "final_measures", "base", "grid", "variants", *SCALES)
SCALE_KEYS = ("base", "grid", "variants", "final_measures", "measured")  # measured: the scale's wall time, in words
OPT_TABLES = ("task_opts", "model_opts", "procedure_opts")
FINAL_MEASURES = FUNCTION_MEASURES  # the functional measures a spec may ask for (probe.analysis.function)
MANIFEST = "sweep.json"


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its folder name, the values of the varied keys, and what to run."""

    name: str
    varied: dict
    config: dict
    procedure: str = "train"
    procedure_opts: dict = field(default_factory=dict)
    final_measures: tuple = ()


@dataclass(frozen=True)
class Sweep:
    """An expanded spec: its runs at one scale, and ``columns``, the varied keys (variant axes, then grid keys)."""

    name: str
    scale: str | None
    hypothesis: str
    anchor: str
    columns: tuple
    runs: tuple
    measured: str = ""  # the scale's measured wall time, as its spec records it (`measured = "..."`)


# -- specs and presets --------------------------------------------------------------------------------------
def presets() -> dict[str, Path]:
    """The preset specs shipped in ``probe/experiments``, by name."""
    folder = resources.files("probe") / "experiments"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def load_spec(path=None, preset: str | None = None) -> dict:
    """Read a spec file, or a preset by name; ``name`` defaults to the file name."""
    if preset is not None:
        known = presets()
        if preset not in known:
            raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(sorted(known))}")
        path = known[preset]
    spec = load_config_file(path)
    spec.setdefault("name", Path(path).stem)
    return spec


def expand(spec: dict, scale: str | None = None, overrides: dict | None = None) -> Sweep:
    """The runs of ``spec`` at ``scale`` (default: quick when the spec has scales), each config checked."""
    name = str(spec.get("name", "sweep"))
    where = f"sweep {name}"
    _check_keys(spec, TOP_KEYS, where)
    has_scales = [s for s in SCALES if s in spec]
    if scale is None:
        scale = "quick" if "quick" in spec else None
    elif scale not in SCALES or scale not in spec:
        raise ConfigError(f"{where}: no scale {scale!r}; it has {', '.join(has_scales) or 'no scales'}")
    sc = spec.get(scale, {}) if scale else {}
    _check_keys(sc, SCALE_KEYS, f"{where} [{scale}]")
    grid = {**_table(spec.get("grid", {}), f"{where} [grid]"), **_table(sc.get("grid", {}), f"{where} [{scale}.grid]")}
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}: grid key {k!r} must be a non-empty list, got {v!r}")
    axes = {**_axes(spec.get("variants", []), where), **_axes(sc.get("variants", []), where)}
    final = sc.get("final_measures", spec.get("final_measures", ()))
    if not isinstance(final, (list, tuple)):
        raise ConfigError(f"{where}: final_measures must be a list of measure names, got {final!r}")
    final = tuple(final)
    bad = [m for m in final if m not in FINAL_MEASURES]
    if bad:
        raise ConfigError(f"{where}: unknown final_measures {bad}; valid: {', '.join(FINAL_MEASURES)}")
    base: dict = {}
    for table, label in ((spec.get("base", {}), "[base]"), (sc.get("base", {}), f"[{scale}.base]")):
        for k, v in _table(table, f"{where} {label}").items():
            _set(base, k, v, where)
    check_sweep_size([len(v) for v in axes.values()] + [len(v) for v in grid.values()], where)
    shorts = _short_names(list(grid))
    runs, names = [], {}
    axis_items = [[(ax, e) for e in entries] for ax, entries in axes.items()]
    for combo in itertools.product(*axis_items, *[[(k, v) for v in vals] for k, vals in grid.items()]):
        d = json.loads(json.dumps(base))  # a deep copy
        varied, parts = {}, []
        for key, value in combo:
            if key in axes:
                label, settings = value
                varied[key] = label
                parts.append(label)
                for k, v in settings.items():
                    _set(d, k, v, where)
            else:
                _set(d, key, value, where)
                varied[key] = value
                parts.append(f"s{_fmt(value)}" if key == "seed" else f"{shorts[key]}={_fmt(value)}")
        for k, v in (overrides or {}).items():
            _set(d, k, v, where)
        run_name = _safe("_".join(parts) or "run")
        if len(run_name.encode()) > 200:  # a folder name: most filesystems take 255 bytes, and temp files add a suffix
            raise ConfigError(f"{where}: run folder name {run_name[:60]}... is {len(run_name.encode())} bytes, more "
                              "than 200; give the variants shorter names")
        if run_name in names:
            raise ConfigError(f"{where}: runs {names[run_name]} and {varied} get the same folder name {run_name!r}; "
                              "give the variants distinct names")
        names[run_name] = varied
        runs.append(_run_spec(run_name, varied, d, final, where))
    return Sweep(name, scale, str(spec.get("hypothesis", "")), str(spec.get("anchor", "")),
                 tuple([*axes, *grid]), tuple(runs), str(sc.get("measured", "")))


def size_text(sweep: Sweep) -> str:
    """``16 runs, 6000 steps each`` (or ``500-6000 steps``): the work of a sweep at its scale, in words."""
    steps = sorted({int(r.config.get("steps", 0)) for r in sweep.runs})
    each = f"{steps[0]} steps each" if len(steps) == 1 else f"{steps[0]}-{steps[-1]} steps"
    return f"{len(sweep.runs)} runs, {each}"


def json_dict(path: Path) -> dict | None:
    """A JSON object read from ``path``, or None when it is missing, unreadable, damaged or not an object."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def estimate_text(sweep: Sweep, out: Path | None = None, jobs: int = 1) -> str:
    """The time a sweep should take, from measured times: its own finished runs in ``out`` where there are some
    (each run left counts the mean seconds of the finished runs that differ from it only in seed, or of all finished
    runs where none does; their sum divided by ``jobs``, and never less than the longest of them), else the wall
    time its spec records for the scale."""
    import statistics

    def kind(r):  # runs that differ only in their seed take about as long
        return json.dumps({k: v for k, v in r.config.items() if k != "seed"}, sort_keys=True, default=str)

    secs, by_kind, left = [], {}, []
    for r in sweep.runs:
        result = (json_dict(Path(out) / r.name / "result.json") if out is not None else None) or {}
        if result.get("status") == "done" and isinstance(result.get("seconds"), (int, float)):
            secs.append(float(result["seconds"]))
            by_kind.setdefault(kind(r), []).append(float(result["seconds"]))
        else:
            left.append(r)
    if secs:
        if not left:
            return f"all {len(secs)} runs finished"
        overall = statistics.mean(secs)
        each = [statistics.mean(by_kind.get(kind(r), [overall])) for r in left]
        est = max(sum(each) / max(jobs, 1), max(each))
        return (f"about {_duration(est)} left for {len(left)} run{'s' * (len(left) > 1)} with --jobs {jobs} (each "
                f"timed by its finished seeds, else by the mean of the {len(secs)} finished runs, "
                f"{_duration(overall)})")
    if sweep.measured:
        return f"measured: {sweep.measured}"
    return "no measured time for this scale yet (the progress lines estimate it once a run has finished)"


def _duration(seconds: float) -> str:
    return (f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90
            else f"{seconds:.0f} s")


def default_out(sweep: Sweep) -> Path:
    """``runs/sweeps/NAME-SCALE`` (``runs/sweeps/NAME`` for a spec without scales): scales never share a folder."""
    return Path("runs") / "sweeps" / (f"{sweep.name}-{sweep.scale}" if sweep.scale else sweep.name)


def _run_spec(run_name, varied, d, final, where) -> RunSpec:
    procedure = str(d.pop("procedure", "train"))
    popts = d.pop("procedure_opts", {})
    task_training = get_spec(d["task"]).training if "task" in d else {}  # the task's own defaults, then the spec's
    cfg = RunConfig.from_dict({**RunConfig().to_dict(), **task_training, **d}, source=f"{where} run {run_name}")
    _check_options(cfg, procedure, popts, f"{where} run {run_name}")
    if not cfg.task.startswith("npz:"):  # a task too big for this machine fails here, not in a worker
        try:
            check_task_size(cfg.task, cfg.task_opts, get_spec(cfg.task).options())
        except ConfigError as e:
            raise ConfigError(f"{where} run {run_name}: {e}") from None
    return RunSpec(run_name, varied, cfg.to_dict(), procedure, popts, final)


def _check_options(cfg: RunConfig, procedure: str, popts: dict, where: str) -> None:
    """Option names checked against the task, model and procedure, so a typo fails before anything runs."""
    checks = [("task", cfg.task_opts, get_spec(cfg.task).options() if not cfg.task.startswith("npz:") else None)]
    specs = model_specs()
    if cfg.model not in specs:
        raise ConfigError(f"{where}: unknown model {cfg.model!r}; valid models: {', '.join(sorted(specs))}")
    checks.append(("model", cfg.model_opts, specs[cfg.model].options()))
    if procedure != "train":
        checks.append((f"procedure {procedure}", popts, procedure_options(procedure)))
    elif popts:
        raise ConfigError(f"{where}: procedure_opts given but procedure is train")
    for what, opts, valid in checks:
        unknown = sorted(set(opts) - set(valid)) if valid is not None else []
        if unknown:
            raise ConfigError(f"{where}: unknown {what} option(s) {', '.join(unknown)}; "
                              f"valid: {', '.join(valid) or 'none'}")
    if procedure != "train":  # the values too: a wrong type fails here, not as a traceback in the worker
        try:
            check_procedure_options(procedure, popts)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


def _check_keys(d, allowed, where):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table, got {d!r}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(allowed)}")


def _table(d, where) -> dict:
    """A table of config keys, dashes allowed in plain keys (as in `probe train --config`)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table, got {d!r}")
    return {k.replace("-", "_") if "." not in k else k: v for k, v in d.items()}


def _axes(variants, where) -> dict:
    """{axis: [(label, settings), ...]} from ``[[variants]]`` (axis "variant") or ``[[variants.AXIS]]``."""
    if not variants:
        return {}
    raw = {"variant": variants} if isinstance(variants, list) else _table(variants, f"{where} variants")
    axes = {}
    for axis, entries in raw.items():
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"{where}: variants {axis!r} must be a non-empty list of tables")
        axes[axis] = []
        for e in entries:
            settings = _table({k: v for k, v in e.items() if k != "name"}, f"{where} variants")
            label = e.get("name") or "-".join(f"{_short_names(list(settings))[k]}={_fmt(v)}"
                                              for k, v in settings.items())
            axes[axis].append((_safe(str(label)), settings))
    return axes


def _set(d: dict, key: str, value, where: str) -> None:
    """Set config key ``key`` in ``d``: a dotted key sets one option; an option table merges into the current one."""
    if "." in key:
        table, sub = key.split(".", 1)
        if table not in OPT_TABLES:
            raise ConfigError(f"{where}: dotted key {key!r}: only {', '.join(OPT_TABLES)} take dotted keys")
        d[table] = {**d.get(table, {}), sub: value}
    elif key in OPT_TABLES:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table, got {value!r}")
        d[key] = {**d.get(key, {}), **value}
    else:
        d[key] = value


def _short_names(keys: list[str]) -> dict:
    """The last part of each dotted key, or the whole key where two keys would share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _safe(s: str) -> str:
    return re.sub(r"[^\w.=+,-]", "-", s)
