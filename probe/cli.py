"""The `probe` command. Thin: it parses options, calls library functions and prints.

Each command imports the library parts it runs when it runs (the ``# lazy:`` imports below): torch alone takes
seconds to import, and `probe --help`, `probe --version` and a mistyped option should not wait for it."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import time
import typing
from pathlib import Path
from typing import List, Optional

import typer
import typer.core
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from probe import __version__
from probe.config import MAX_SEED, ConfigError, RunConfig, load_config_file, parse_kv
from probe.run.errors import RunFailed  # no torch: the errors a run ends with are plain exceptions


# the click that typer runs on: typer._click in recent typer releases, the click package in older ones
_click = getattr(typer.core, "_click", None) or typer.core.click
_click_errors = _click.exceptions


class _OneLineErrors(TyperGroup):
    """Usage errors that click finds (``--lr abc``, an unknown flag) as one line and exit code 2, like probe's own
    checks, instead of a box of help; ``--help`` and ``probe`` alone still show the help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(_click_errors, "NoArgsIsHelpError", ()):
            return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
        except _click_errors.ClickException as e:
            msg = " ".join(e.format_message().split())
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(f"error: {msg}{hint}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            err.print("error: aborted", markup=False, highlight=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # non-standalone click returns an Exit's code


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train MLPs and controls, and measure how convolutional or attention-like they become.")
console = Console()
err = Console(stderr=True)


def _version(value: bool):
    if value:
        console.print(f"probe {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print probe's version and exit.")):
    """Train MLPs and controls, and measure how convolutional or attention-like they become."""


class ProbeError(Exception):
    """Any error the user can fix; printed as one line, exit code 2."""


def clean_errors(fn):
    """Turn the errors a user can fix into one line on stderr and exit code 2 (no traceback); a run that stopped
    (diverged, disk full) into one line and exit code 1; an interrupt into where its checkpoint went and exit code
    128 + signal (130 for Ctrl-C, 143 for SIGTERM)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        def say(msg):
            err.print(msg, markup=False, highlight=False, soft_wrap=True)

        try:  # the import too: it loads torch (seconds), and a signal then must still end in one line
            from probe.run.checkpoint import CheckpointError  # lazy: torch  # noqa: F401

            return fn(*args, **kwargs)
        except (ConfigError, ProbeError) as e:
            say(f"error: {e}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:  # train raises TrainingInterrupted, which says where it saved
            if getattr(e, "path", None) is None:
                say("interrupted")
                raise typer.Exit(128 + getattr(e, "signum", 2)) from None
            import signal

            run_dir = Path(e.path).parent.parent
            say(f"interrupted by {signal.Signals(e.signum).name} at step {e.step}: saved {e.path}; "
                f"continue with `probe train --resume {run_dir}`")
            raise typer.Exit(128 + e.signum) from None
        except Exception as e:
            from probe.run.checkpoint import CheckpointError  # lazy: torch (a failed run has imported it already)

            if isinstance(e, CheckpointError):
                say(f"error: {e}")
                raise typer.Exit(2) from None
            if not isinstance(e, RunFailed):
                raise
            say(f"error: {e}")
            raise typer.Exit(1) from None

    return wrapper


def default_out(cfg: RunConfig) -> Path:
    name = cfg.task.replace(":", "_").replace("/", "_")
    return Path("runs") / f"{name}-{cfg.model}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_config(config: Optional[Path], flags: dict, task_opts: list[str] | None,
                 model_opts: list[str] | None) -> RunConfig:
    """RunConfig's defaults <- the task's training defaults <- config file <- flags given on the command line
    (None = not given)."""
    from probe.tasks import get_spec  # lazy: torch

    d = load_config_file(config) if config else {}
    if config and "task" not in d and flags.get("task") is None:
        raise ConfigError(f"config file {config}: no task given (set task or pass --task)")
    for k, v in flags.items():
        if v is not None:
            d[k] = v
    if not isinstance(d.get("task", ""), str):
        raise ConfigError(f"{config or 'options'}: task must be str, got {d['task']!r}"[:200])
    d = {**RunConfig().to_dict(), **get_spec(d.get("task", RunConfig.task)).training, **d}
    if task_opts:
        d["task_opts"] = {**d.get("task_opts", {}), **parse_kv(task_opts, "--task-opt")}
    if model_opts:
        d["model_opts"] = {**d.get("model_opts", {}), **parse_kv(model_opts, "--model-opt")}
    return RunConfig.from_dict(d, source=str(config) if config else "options")


# -- `probe train`: one option per RunConfig field ---------------------------------------------------------------
# RunConfig's dict fields are set by repeatable KEY=VALUE options, which `train` declares itself
KEY_VALUE_OPTIONS = {"task_opts": "task_opt", "model_opts": "model_opt"}
# fields whose default --help does not show: the CLI asks for a task rather than fall back to RunConfig's mnist1d
NO_DEFAULT_SHOWN = {"task": "Required unless --config names one."}
CONFIG_PANEL = "Run config (saved as RUN/config.json)"


def field_help(name: str) -> str:
    return next(f for f in dataclasses.fields(RunConfig) if f.name == name).metadata["help"]


def field_option(f: dataclasses.Field, annotation) -> inspect.Parameter:
    """The `probe train` option of one RunConfig field: --name-with-dashes (--name/--no-name for a bool), the
    field's type and help text, and the field's default, which --help shows."""
    if annotation is dict:  # no default to show, and no one flag can hold a dict
        raise TypeError(f"RunConfig.{f.name}: a dict field needs its KEY=VALUE option in KEY_VALUE_OPTIONS")
    flag = "--" + f.name.replace("_", "-")
    if annotation is bool:
        flag += f"/--no-{flag[2:]}"
    if f.name in NO_DEFAULT_SHOWN:
        info = typer.Option(None, flag, help=f"{f.metadata['help']} {NO_DEFAULT_SHOWN[f.name]}", show_default=False,
                            rich_help_panel=CONFIG_PANEL)
        annotation = Optional[annotation]
    else:
        info = typer.Option(f.default, flag, help=f.metadata["help"], rich_help_panel=CONFIG_PANEL)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def with_config_options(command):
    """Give ``command`` (which takes ``ctx`` and ``**options``) one option per RunConfig field, in the fields'
    order, before its own options; a dict field's place goes to the KEY=VALUE option that ``command`` declares.
    typer reads a command's options from its signature, so this sets ``__signature__``."""
    own = inspect.signature(command).parameters
    types = typing.get_type_hints(RunConfig)
    params = [own["ctx"]]
    for f in dataclasses.fields(RunConfig):
        name = KEY_VALUE_OPTIONS.get(f.name)
        params.append(own[name] if name else field_option(f, types[f.name]))
    taken = {p.name for p in params}
    params += [p for p in own.values() if p.name not in taken and p.kind is not inspect.Parameter.VAR_KEYWORD]
    # typer passes every option by keyword; keyword-only lets them stand in any order
    command.__signature__ = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])
    return command


def given_flags(ctx: typer.Context, options: dict) -> dict:
    """RunConfig's fields (but the dicts) as :func:`build_config` takes them, in the fields' order: the value of
    each option given on the command line, None for the others, so that a --config file or the stored config of
    --resume sets those. (An option's default alone cannot tell: `--lr 0.01` is given, and equals it.)"""
    default = _click.core.ParameterSource.DEFAULT
    return {f.name: None if ctx.get_parameter_source(f.name) is default else options[f.name]
            for f in dataclasses.fields(RunConfig) if f.name not in KEY_VALUE_OPTIONS}


@app.command()
@clean_errors
@with_config_options
def train(
    ctx: typer.Context,
    task_opt: Optional[List[str]] = typer.Option(None, "--task-opt", metavar="KEY=VALUE", help=field_help("task_opts"),
                                                 rich_help_panel=CONFIG_PANEL),
    model_opt: Optional[List[str]] = typer.Option(None, "--model-opt", metavar="KEY=VALUE",
                                                  help=field_help("model_opts"), rich_help_panel=CONFIG_PANEL),
    out: Optional[Path] = typer.Option(None, help="Run folder; by default runs/TASK-MODEL-sSEED-TIME."),
    config: Optional[Path] = typer.Option(None, help="TOML or JSON file of the run config; flags override it."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress (a bar on a terminal, a line every few seconds in a log)."),
    **options,
):
    """Train a model on a task and write a run folder (config, metrics.jsonl, checkpoints)."""
    from probe.models import check_applies  # lazy: torch
    from probe.run.loop import run_training  # lazy: torch

    flags = given_flags(ctx, options)
    task = flags["task"]
    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise ConfigError(f"--resume continues the run in its own folder {resume}; drop --out {out}")
        if config is not None:
            raise ConfigError("--resume takes the run's stored config; drop --config")
        cfg = _resume_config(resume, flags, task_opt, model_opt)
        out = resume
    else:
        if task is None and config is None:
            raise ConfigError("--task is required (see `probe tasks`), or give --config FILE")
        cfg = build_config(config, flags, task_opt, model_opt)
        check_applies(cfg.model, [k for k, v in flags.items() if v is not None])
        out = out or default_out(cfg)
    row = run_training(cfg, out, progress=not quiet, resume=resume is not None)
    console.print(summary_line(cfg, row, out), highlight=False, soft_wrap=True)
    _quick_exit.append(True)  # every file of the run is closed: see main()


def _resume_config(folder: Path, flags, task_opt, model_opt) -> RunConfig:
    cfg_file = folder / "config.json"
    if not folder.is_dir() or not cfg_file.is_file():
        raise ConfigError(f"--resume {folder}: not a run folder (no config.json)")
    given = [k for k, v in flags.items() if v is not None and k not in ("device", "threads")]
    if given or task_opt or model_opt:
        raise ConfigError("--resume takes the run's stored config; "
                          f"drop --{given[0].replace('_', '-') if given else 'task-opt'}")
    cfg = build_config(cfg_file, {}, None, None)
    if flags.get("threads") is not None and flags["threads"] != cfg.threads:
        err.print(f"note: --threads {flags['threads']} (the run started with {cfg.threads or 'the default'}) changes "
                  "speed only, but the steps from here may differ in the last bits from an uninterrupted run (matmul "
                  "reductions are split by thread); config.json keeps the first setting",
                  markup=False, highlight=False, soft_wrap=True)
        cfg = cfg.replace(threads=flags["threads"])
    return cfg.replace(device=flags["device"]) if flags.get("device") else cfg


def summary_line(cfg: RunConfig, row: dict, out) -> str:
    parts = [f"{cfg.model} on {cfg.task}:"]
    if "test_acc" in row:
        parts.append(f"test_acc {row['test_acc']:.4f}")
    if "test_loss" in row:
        parts.append(f"test_loss {row['test_loss']:.4f}")
    parts.append(f"({cfg.steps} steps, {row.get('seconds', 0):.1f} s, {row.get('samples_per_s', 0):,.0f} samples/s)")
    parts.append(f"-> {out}")
    return " ".join(parts)


@app.command()
@clean_errors
def check(run: Path = typer.Argument(..., help="A run folder.")):
    """Verify a run folder: config, metrics rows, checkpoints (their checksums), references; says what is wrong.
    Exit code 0 when it is sound, 1 when something is wrong, 2 when it is not a run folder."""
    from probe.run.check import check_run  # lazy: torch

    report = check_run(run)
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@clean_errors
def tasks(name: Optional[str] = typer.Argument(None, help="A task to show the parameters of.")):
    """List the tasks, or one task's parameters and defaults."""
    from probe.tasks import get_spec, task_specs  # lazy: torch
    from probe.tasks.options import option_help  # lazy: torch (through probe.tasks)

    if name is None:
        t = Table("task", "kind", "description", box=None)
        for n, spec in sorted(task_specs().items()):
            t.add_row("npz:PATH" if n == "npz" else n, spec.kind, spec.description)
        console.print(t)
        return
    spec = get_spec(name)
    console.print(f"[bold]{spec.name}[/bold] ({spec.kind}): {spec.description}", highlight=False)
    t = Table("--task-opt KEY", "default", "meaning", box=None)
    for k, v in spec.options().items():
        if k != "path":
            t.add_row(k, repr(v), option_help(spec.name, k) or "")
    console.print(t)
    if spec.training:
        own = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in spec.training.items())
        console.print(f"training defaults of this task (flags override them): {own}", highlight=False)


@app.command()
@clean_errors
def models(name: Optional[str] = typer.Argument(None, help="A model to show the options of.")):
    """List the models, or one model's options and defaults."""
    from probe.models import model_specs  # lazy: torch

    specs = model_specs()
    if name is None:
        t = Table("model", "tasks", "description", box=None)
        for n, spec in sorted(specs.items()):
            t.add_row(n, ",".join(spec.kinds), spec.description)
        console.print(t)
        return
    if name not in specs:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(sorted(specs))}")
    spec = specs[name]
    console.print(f"[bold]{name}[/bold]: {spec.description}")
    t = Table("option (--model-opt KEY=VALUE)", "default", box=None)
    for k, v in spec.options().items():
        t.add_row(k, repr(v))
    console.print(t)


@app.command()
@clean_errors
def measures(name: Optional[str] = typer.Argument(None, help="A measure to show in full.")):
    """List the measures (probe/metrics/registry.py): what each is computed on, whether --track takes it, its keys."""
    from probe.metrics.registry import MEASURES  # lazy: torch and the measures

    if name is None:
        t = Table("measure", "on", "--track", "keys it writes (when not its name)", box=None)
        for n, m in MEASURES.items():
            track = ("yes, slow" if m.expensive else "yes") if m.trackable else ""
            t.add_row(n, m.scope, track, " ".join(m.keys))
        console.print(t)
        console.print("`probe measures NAME` says what high and low values mean.", style="dim")
        console.print("on: first = the first layer over the input grid, layer = any weight matrix, init = against "
                      "the initialization, data = against the inputs, function = the model on its task", style="dim")
        return
    if name not in MEASURES:
        raise ConfigError(f"unknown measure {name!r}; valid measures: {', '.join(MEASURES)}")
    m = MEASURES[name]
    console.print(f"[bold]{m.name}[/bold] ({m.group.lower()}; formula in probe.{m.formula})", highlight=False)
    console.print(f"  high: {m.high}\n  low: {m.low}\n  keys: {', '.join(m.outputs)}\n  "
                  f"tracked during training: {'yes' if m.trackable else 'no'}"
                  f"{' (seconds per step on large layers)' if m.expensive else ''}", highlight=False)


@app.command()
@clean_errors
def demo(out: Path = typer.Option(Path("runs/demo"), help="Folder for the two runs."),
         steps: int = typer.Option(6000, min=1, help="Steps for each model."),
         seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Random seed.")):
    """The built-in default: an MLP and a CNN on MNIST-1D, their accuracies, and a first look at the MLP's
    first layer."""
    from probe.demo import run_demo  # lazy: torch

    run_demo(out, steps, seed, console)


@app.command()
@clean_errors
def analyze(
    path: Path = typer.Argument(..., help="A probe checkpoint, a run folder (its last checkpoint), a plain state_dict "
                                "file (torch or .safetensors) or a save_pretrained folder."),
    all_steps: bool = typer.Option(False, "--all-steps", help="Every checkpoint of the run folder, as one table."),
    input_shape: Optional[str] = typer.Option(None, help="C,L or C,H,W: the input grid of a plain state_dict."),
    periodic: bool = typer.Option(False, "--periodic", help="The --input-shape grid wraps around."),
    first_layer: Optional[str] = typer.Option(None, "--first-layer", help="An outside checkpoint's first layer (a "
                                              "state_dict key; default: its first weight)."),
    stride: Optional[int] = typer.Option(None, help="The stride of that first layer's convolution (a state_dict does "
                                         "not store it; kernel = stride reads a patch embedding)."),
    padding: Optional[int] = typer.Option(None, help="Its zero padding (default k // 2, or 0 for a patch embedding)."),
    layer: Optional[str] = typer.Option(None, help="Report only this layer (names as the table shows them)."),
    data: bool = typer.Option(True, "--data/--no-data",
                              help="Rebuild the run's task: test accuracy, functional measures."),
    n_data: int = typer.Option(512, min=1, help="Test inputs for the functional measures."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON to this file."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write a tidy table (a row per step, layer, measure)."),
    fields: Optional[Path] = typer.Option(None, help="Draw the first layer's receptive fields (.png, .pdf or .svg)."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of the Gaussian and permuted references and of the "
                             "units drawn."),
    init: Optional[Path] = typer.Option(None, help="The initial weights of an outside checkpoint (same format): the "
                                                   "init reference and movement."),
    delta: bool = typer.Option(False, "--delta", help="Also the first layer's measures on ΔW = W - W0 (delta_*), with "
                               "their references drawn from ΔW; W0 from the run's step-0 checkpoint or --init."),
):
    """Measure a checkpoint's layers (locality, translation structure, spectra) beside their references."""
    from probe.analysis import report as an, terminal  # lazy: torch, pandas
    from probe.analysis.load import load_layers, parse_input_shape  # lazy: torch
    from probe.run.checkpoint import atomic_write, special_file  # lazy: torch
    from probe.analysis.jobs import keep_freed_memory  # lazy: torch

    keep_freed_memory()  # this process only analyzes: reuse freed memory instead of faulting it in again
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    if fields is not None and fields.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--fields {fields}: write .png, .pdf or .svg")
    for option, target in (("--json", json_file), ("--csv", csv_file), ("--fields", fields)):
        what = special_file(target) if target is not None and target.exists() else None
        if what or (target is not None and target.is_dir()):
            raise ConfigError(f"{option} {target}: is {what or 'a folder'}, not a file; give a file name to write")
    outside = {"first_layer": first_layer, "stride": stride, "padding": padding}
    if all_steps and (shape is not None or init is not None or any(v is not None for v in outside.values())):
        raise ConfigError("--all-steps reads a probe run folder; --input-shape, --init, --first-layer, --stride and "
                          "--padding are for outside checkpoints")
    # a terminal's width; piped to a file or another program, lines as long as the tables need (names never cut)
    out = console if console.is_terminal else Console(width=terminal.PIPE_WIDTH)
    width = out.width
    if all_steps:
        reports = an.analyze_steps(path, data=data, layer=layer, n_data=n_data, seed=seed, progress=True,
                                   delta=delta)
        console.print(f"{terminal.header(reports[-1])} ({len(reports)} checkpoints)", highlight=False, soft_wrap=True)
        tables, note = terminal.steps_tables(reports, width)
        if note:
            reports[-1].notes.append(note)
    else:
        reports = [an.analyze_checkpoint(path, input_shape=shape, periodic=periodic, data=data, layer=layer,
                                         n_data=n_data, seed=seed, init=init, delta=delta, **outside)]
        console.print(terminal.header(reports[0]), highlight=False, soft_wrap=True)
        tables = terminal.report_tables(reports[0])
    unfinished = terminal.unfinished_note(path)
    if unfinished:
        reports[-1].notes.insert(0, unfinished)
    for note in dict.fromkeys(n for r in reports for n in r.notes):
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for t in tables:
        out.print()
        out.print(t)
    verdicts = terminal.verdict_lines(reports[-1])
    if verdicts:
        out.print()
    for line in verdicts:
        out.print(line, highlight=False, soft_wrap=True, markup=False)
    target = None  # the file being written, named if writing it fails
    try:
        if json_file is not None:
            target = json_file
            an.write_json(reports, json_file, run=str(path) if all_steps else None)
        if csv_file is not None:
            target = csv_file
            table = an.reports_frame(reports).to_csv(index=False)
            atomic_write(csv_file, lambda f: f.write(table.encode()))
        if fields is not None:
            from probe.figures.fields import fields_figure, save_figure  # lazy: matplotlib

            target = fields
            layers, geo = load_layers(reports[-1].checkpoint, shape, periodic, **outside)
            name, W = next(iter(layers.items()))
            fig = fields_figure(W, geo, seed=seed, title=f"{reports[-1].checkpoint}: {name}")
            console.print("fields -> " + ", ".join(map(str, save_figure(fig, fields))), highlight=False)
    except OSError as e:
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from None


@app.command()
@clean_errors
def sweep(
    target: Optional[Path] = typer.Argument(None, help="A sweep spec (.toml); with --summary, a sweep folder."),
    preset: Optional[str] = typer.Option(None, help="A preset shipped with probe (see --list)."),
    scale: Optional[str] = typer.Option(None, help="The spec's scale: quick (CPU minutes), medium (about an hour on 2 "
                                                   "cores with --jobs 2) or full (a GPU); by default quick."),
    out: Optional[Path] = typer.Option(None, help="Sweep folder; by default runs/sweeps/NAME-SCALE."),
    executor: str = typer.Option("local", help="local, slurm, or submitit-local (submitit's local executor)."),
    jobs: int = typer.Option(1, min=1, help="Runs at once: local worker processes, or the Slurm array's parallelism."),
    partition: Optional[str] = typer.Option(None, help="Slurm partition; by default the cluster's."),
    time_min: int = typer.Option(60, min=1, help="Time limit per run (submitit), minutes."),
    gpus: int = typer.Option(1, min=0, help="GPUs per Slurm job."),
    cpus: int = typer.Option(4, min=1, help="CPUs per Slurm job (its torch threads)."),
    mem: Optional[str] = typer.Option(None, help="Memory per Slurm job, as Slurm writes it (32G); by default the "
                                      "partition's."),
    account: Optional[str] = typer.Option(None, help="Slurm account to charge."),
    slurm_param: Optional[List[str]] = typer.Option(None, "--slurm-param", help="Any other #SBATCH option, KEY=VALUE "
                                                    "(qos=high, constraint=a100; repeatable)."),
    wait: Optional[bool] = typer.Option(None, "--wait/--no-wait",
                                        help="Wait for submitit jobs; by default not on slurm."),
    set_: Optional[List[str]] = typer.Option(None, "--set",
                                             help="Config key of every run, KEY=VALUE (task_opts.K too; repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and stop."),
    summary: bool = typer.Option(False, "--summary", help="Collect the runs' results into summary.csv (and "
                                                          "summary.parquet when pyarrow is installed), and their mean, "
                                                          "sd and 95% t interval over seeds, and paired differences to "
                                                          "nulls, into stats.csv."),
    list_: bool = typer.Option(False, "--list", help="List the presets with their hypotheses."),
):
    """Run a grid of training runs from a spec or a preset (restartable: finished runs are skipped), or summarize
    a sweep folder."""
    from probe.sweep import execute as runner  # lazy: torch
    from probe.sweep import spec as sw, summary as sweep_summary  # lazy: torch, pandas

    if list_:
        t = Table("preset", "scales: runs, steps, measured time", "hypothesis", box=None)
        for name, path in sorted(sw.presets().items()):
            raw = sw.load_spec(path)
            sizes = []
            for sc in (s for s in sw.SCALES if s in raw):
                one = sw.expand(raw, sc)
                sizes.append(f"{sc}: {sw.size_text(one)}" + (f"; {one.measured}" if one.measured else ""))
            t.add_row(name, "\n".join(sizes), str(raw.get("hypothesis", "")))
        console.print(t)
        return
    if summary and target is not None and not target.is_file():  # a sweep folder (or a mistyped one)
        return _print_sweep_summary(sweep_summary.summarize(target), target)
    if (target is None) == (preset is None):
        raise ConfigError("give a spec file or --preset NAME (see `probe sweep --list`), "
                          "or a sweep folder with --summary")
    spec = sw.expand(sw.load_spec(target, preset), scale, parse_kv(set_, "--set"))
    out = out or sw.default_out(spec)
    if summary:
        return _print_sweep_summary(sweep_summary.summarize(out), out)
    head = f"sweep {spec.name}" + (f" ({spec.scale})" if spec.scale else "") + f": {sw.size_text(spec)} -> {out}"
    console.print(head, highlight=False, soft_wrap=True)
    console.print(f"time: {sw.estimate_text(spec, out, jobs)}", highlight=False, soft_wrap=True, markup=False)
    if dry_run:
        t = Table("run", *spec.columns, "steps", "procedure", box=None)
        for r in spec.runs:
            t.add_row(r.name, *[str(r.varied[c]) for c in spec.columns], str(r.config.get("steps")), r.procedure)
        console.print(t)
        return
    done, ran, t0 = [0], [0], time.perf_counter()

    def show(r):
        done[0] += 1
        ran[0] += r["status"] not in ("skipped", "submitted")
        acc = f" test_acc {r['test_acc']:.4f}" if isinstance(r.get("test_acc"), float) else ""
        why = f": {r['error']}" if r.get("error") else (f" job {r['job_id']}" if r.get("job_id") else "")
        secs = f" ({r['seconds']:.0f} s)" if r.get("seconds") else ""
        left = len(spec.runs) - done[0]
        # runs finish at the rate they have so far (skipped ones cost nothing): that rate times what is left
        eta = f", ~{_minutes((time.perf_counter() - t0) / ran[0] * left)} left" if ran[0] and left else ""
        console.print(f"[{done[0]}/{len(spec.runs)}{eta}] {r['run']}: {r['status']}{acc}{secs}{why}",
                      highlight=False, soft_wrap=True, markup=False)

    slurm = dict(partition=partition, time_min=time_min, gpus=gpus, cpus=cpus, mem=mem, account=account,
                 additional=parse_kv(slurm_param, "--slurm-param"))
    try:
        results = runner.run_sweep(spec, out, executor, jobs, slurm, wait, on_result=show)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (as `probe train`: exit 130 / 143)
        import signal

        err.print(f"interrupted: run the same command again to resume ({out}); finished runs are skipped")
        raise typer.Exit(128 + getattr(e, "signum", signal.SIGINT)) from None
    if any(r["status"] == "submitted" for r in results):
        console.print(f"submitted; when the jobs are done: probe sweep {out} --summary", highlight=False)
        return
    _print_sweep_summary(sweep_summary.summarize(out), out)
    if any(r["status"] not in ("done", "skipped") for r in results):
        raise typer.Exit(1)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _print_sweep_summary(df, folder: Path) -> None:
    shown = [c for c in ("run", "status", "test_acc", "test_loss", "ipr", "window_mass_3", "movement", "zero_frac",
                         "sparsity", "line_barrier", "lie_derivative") if c in df.columns]
    t = Table(box=None)
    longest = max((len(str(r)) for r in df.get("run", [])), default=3)
    for c in shown:  # run names are long: keep them whole, the numbers are narrow
        t.add_column(c, min_width=min(longest, 48) if c == "run" else None, overflow="fold")
    for _, row in df.iterrows():
        t.add_row(*["" if v != v or v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
                    for v in (row[c] for c in shown)])
    console.print(t)
    from probe.sweep.spec import MANIFEST  # lazy: torch

    if not (folder / MANIFEST).is_file():
        console.print(f"summary of {len(df)} runs (of {folder}, not a sweep folder: nothing written there)",
                      highlight=False, soft_wrap=True)
        return
    written = [folder / f for f in ("summary.csv", "summary.parquet") if (folder / f).exists()]
    console.print(f"summary of {len(df)} runs -> {', '.join(map(str, written))}", highlight=False, soft_wrap=True)
    _print_stats(folder, df, [c for c in shown if c not in ("run", "status")])
    _print_exponents(folder, df)


def _num(v: float, sign: str = "") -> str:
    """4 decimals (4 significant digits from 10^4 on): the measures' scale, so the column lines up."""
    return f"{v:{sign}.4g}" if abs(v) >= 1e4 else f"{v:{sign}.4f}"


def _print_stats(folder: Path, df, shown) -> None:
    """Per setting (every varied key but seed): the shown measures' mean and 95% t interval over seeds, and their
    paired differences to their nulls (probe.sweep.stats); every measure's are in stats.csv."""
    from probe.sweep.summary import STATS_FILE, summary_stats  # lazy: torch, pandas

    table = summary_stats(folder, df)
    if not len(table):
        return
    by = [c for c in table.columns if c not in ("measure", "null", "n", "mean", "sd", "ci_low", "ci_high", "interval")]
    t = Table("setting", "measure", "minus", "n", "mean", "95% CI", box=None,
              title="over seeds: mean and Student's t 95% interval; minus NULL: the paired difference to that null")
    for key, g in table[table["measure"].isin(shown)].groupby(by or (lambda _: ""), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        setting = " ".join(f"{v}" for v in key)
        for _, r in g.iterrows():
            sign = "+" if r["null"] else ""
            ci = "" if r["ci_low"] != r["ci_low"] else f"[{_num(r['ci_low'], sign)}, {_num(r['ci_high'], sign)}]"
            t.add_row(setting, r["measure"] if not r["null"] else "", r["null"], str(int(r["n"])),
                      _num(r["mean"], sign), ci)
            setting = ""
    console.print(t)
    console.print(f"every measure over seeds, and minus each null -> {folder / STATS_FILE}", highlight=False,
                  soft_wrap=True)


def _print_exponents(folder: Path, df) -> None:
    """A data-size sweep's sample-complexity exponents (test error ~ a n^-b): mean +- sd over seeds and the mean's 95%
    t interval."""
    from probe.sweep.summary import EXPONENT_SEEDS_FILE, EXPONENTS_FILE, exponents  # lazy: torch, pandas

    table = exponents(folder, df)
    if table is None or not len(table):
        return
    fit = ("exponent", "exponent_sd", "exponent_ci_low", "exponent_ci_high", "prefactor", "sizes")  # in the csv
    t = Table(*[{"err_at_n_max": "err@n_max"}.get(c, c) for c in table.columns if c not in fit], box=None,
              title="sample-complexity exponents, test error ~ a n^-b (b: mean +- sd [95% t interval] over seeds)")
    t.add_column("b", no_wrap=True)
    for _, row in table.iterrows():
        cells = [str(row[c]) for c in table.columns if c not in fit]
        one = row["exponent_sd"] != row["exponent_sd"]  # one seed: no sd, no interval
        spread = "" if one else (f" +- {row['exponent_sd']:.3f} [{row['exponent_ci_low']:.3f}, "
                                 f"{row['exponent_ci_high']:.3f}]")
        t.add_row(*cells[:-1], f"{row['err_at_n_max']:.4g}", f"{row['exponent']:.3f}{spread}")
    console.print(t)
    console.print(f"exponents -> {folder / EXPONENTS_FILE}, each seed's fit -> {folder / EXPONENT_SEEDS_FILE}",
                  highlight=False, soft_wrap=True)


@app.command()
@clean_errors
def figures(
    runs: List[Path] = typer.Argument(..., help="Run folders, or folders of run folders."),
    out: Optional[Path] = typer.Option(None, help="Folder for the figures (PDF + PNG); by default RUN/figures of "
                                       "the first RUN given, beside the runs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace figure files already in --out (by default "
                                   "refused, naming them)."),
    group_by: Optional[str] = typer.Option(None, help="Config key whose runs form one line: their mean "
                                       "and its 95% t interval (e.g. model)."),
    hue: Optional[str] = typer.Option(None, help="Config key that colours lines (e.g. width, seed, task_opts.gain)."),
    steps: Optional[str] = typer.Option(None, help="Checkpoint steps for the receptive fields, e.g. 0,500,6000."),
    prefix: str = typer.Option("", help="Prepended to every file name."),
    x: Optional[str] = typer.Option(None, "--x", help="Config key to draw end-of-run values against, with their "
                                    "nulls (PREFIXfinal), e.g. task.n_train, task_opts.augment_shift, variant."),
    measures: Optional[str] = typer.Option(None, help="Comma-separated metrics for the measures and final figures "
                                           "(default: every tracked one; final adds test_acc)."),
    mix_tasks: bool = typer.Option(False, "--mix-tasks", help="Runs of several tasks in the same figures (by "
                                   "default one set of figures per task, unless --hue/--group-by/--x is task)."),
):
    """Figures of runs: measures and accuracy over steps, receptive fields, spectra, routing maps (sequences),
    end-of-run values against a swept key (--x), the loss between two solutions (procedure ecnn)."""
    from probe.figures.make import make_figures  # lazy: matplotlib, pandas, torch

    try:
        chosen = [int(s) for s in steps.split(",")] if steps else None
    except ValueError:
        raise ConfigError(f"--steps expects comma-separated integers, got {steps!r}") from None
    names = [m.strip() for m in measures.split(",") if m.strip()] if measures else None
    if out is None:  # beside the runs, never a folder of the project the command runs in
        out = runs[0] / "figures"
        console.print(f"figures -> {out} (--out DIR to choose)", highlight=False, soft_wrap=True, markup=False)
    written = make_figures(runs, out, group_by, hue, chosen, prefix, measures=names, x=x, final=names,
                           say=lambda m: console.print(m, highlight=False, soft_wrap=True, markup=False), progress=True,
                           mix_tasks=mix_tasks, overwrite=overwrite)
    for p in written:
        console.print(str(p), highlight=False, soft_wrap=True)


def _terminated(signum, frame):
    """SIGTERM outside training's own handler (while the task is built, while reference.json is written): an
    interrupt like Ctrl-C's, so that the command exits 143 with a line instead of being killed without one."""
    e = KeyboardInterrupt()
    e.signum = signum
    raise e


# Set by a command whose files are all written and closed. The interpreter's own shutdown after a training run
# (tearing down torch's and torch._dynamo's modules) costs about 0.8 CPU s, a sixth of a default run's fixed cost;
# such a command's process ends without it, once stdout and stderr are flushed.
_quick_exit: list = []


def main(quick_exit: bool = True):
    """The `probe` command. ``quick_exit``: a command whose files are all written may end the process without the
    interpreter's teardown (:data:`_quick_exit`); a caller running the command inside a process that must go on after
    it (a test harness) passes False."""
    import signal

    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except KeyboardInterrupt as e:  # Ctrl-C outside a command's own handling (while modules load, or at exit)
        err.print("interrupted", markup=False, highlight=False)
        sys.exit(128 + getattr(e, "signum", 2))
    except SystemExit as e:
        if not (quick_exit and _quick_exit):
            raise
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    main()
