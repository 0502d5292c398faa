"""The `probe` command. Thin: it parses options, calls library functions and prints."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
import typer.core
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from probe.config import ConfigError, RunConfig, load_config_file, parse_kv


# the click that typer runs on: typer._click in recent typer releases, the click package in older ones
_click_errors = (getattr(typer.core, "_click", None) or getattr(typer.core, "click")).exceptions


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


class ProbeError(Exception):
    """Any error the user can fix; printed as one line, exit code 2."""


def clean_errors(fn):
    """Turn the errors a user can fix into one line on stderr and exit code 2 (no traceback); a run that stopped
    (diverged, disk full) into one line and exit code 1; an interrupt into where its checkpoint went and exit code
    128 + signal (130 for Ctrl-C, 143 for SIGTERM)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from probe.checkpoint import CheckpointError

        def say(msg):
            err.print(msg, markup=False, highlight=False, soft_wrap=True)

        try:
            return fn(*args, **kwargs)
        except (ConfigError, CheckpointError, ProbeError) as e:
            say(f"error: {e}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:  # train raises TrainingInterrupted, which says where it saved
            if getattr(e, "path", None) is None:
                say("interrupted")
                raise typer.Exit(130) from None
            import signal

            run_dir = Path(e.path).parent.parent
            say(f"interrupted by {signal.Signals(e.signum).name} at step {e.step}: saved {e.path}; "
                f"continue with `probe train --resume {run_dir}`")
            raise typer.Exit(128 + e.signum) from None
        except Exception as e:
            from probe.train import RunFailed  # imported only here: a failed run has imported it already

            if not isinstance(e, RunFailed):
                raise
            say(f"error: {e}")
            raise typer.Exit(1) from None

    return wrapper


def default_out(cfg: RunConfig) -> Path:
    name = cfg.task.replace(":", "_").replace("/", "_")
    return Path("runs") / f"{name}-{cfg.model}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_config(config: Optional[Path], flags: dict, task_opts: list[str] | None, model_opts: list[str] | None) -> RunConfig:
    """Defaults <- config file <- flags given on the command line (None = not given)."""
    d = load_config_file(config) if config else {}
    if config and "task" not in d and flags.get("task") is None:
        raise ConfigError(f"config file {config}: no task given (set task or pass --task)")
    d = {**RunConfig().to_dict(), **d}
    for k, v in flags.items():
        if v is not None:
            d[k] = v
    if task_opts:
        d["task_opts"] = {**d.get("task_opts", {}), **parse_kv(task_opts, "--task-opt")}
    if model_opts:
        d["model_opts"] = {**d.get("model_opts", {}), **parse_kv(model_opts, "--model-opt")}
    return RunConfig.from_dict(d, source=str(config) if config else "options")


@app.command()
@clean_errors
def train(
    task: Optional[str] = typer.Option(None, help="Task name (see `probe tasks`), or npz:PATH."),
    task_opt: Optional[List[str]] = typer.Option(None, "--task-opt", help="Task parameter KEY=VALUE (repeatable)."),
    model: Optional[str] = typer.Option(None, help="Model name (see `probe models`). [default: mlp]"),
    model_opt: Optional[List[str]] = typer.Option(None, "--model-opt", help="Model option KEY=VALUE (repeatable)."),
    width: Optional[int] = typer.Option(None, help="Hidden units per layer. [default: 100]"),
    depth: Optional[int] = typer.Option(None, help="Number of hidden layers. [default: 2]"),
    param: Optional[str] = typer.Option(None, help="Parametrization: standard or mean-field."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps. [default: 6000]"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size. [default: 100]"),
    lr: Optional[float] = typer.Option(None, help="Learning rate. [default: 0.01]"),
    optimizer: Optional[str] = typer.Option(None, help="sgd, adam or adamw. [default: adam]"),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum. [default: 0]"),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay. [default: 0]"),
    schedule: Optional[str] = typer.Option(None, help="Learning-rate schedule: constant or cosine."),
    warmup: Optional[int] = typer.Option(None, help="Linear warm-up steps. [default: 0]"),
    l1: Optional[float] = typer.Option(None, help="L1 penalty strength lambda on weight matrices. [default: 0]"),
    beta_lasso: Optional[float] = typer.Option(None, help="beta-LASSO: after each step zero weights below beta*lambda."),
    seed: Optional[int] = typer.Option(None, help="Random seed. [default: 0]"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda. [default: auto]"),
    out: Optional[Path] = typer.Option(None, help="Run folder. [default: runs/TASK-MODEL-sSEED-TIME]"),
    eval_every: Optional[int] = typer.Option(None, help="Evaluate on the test split every N steps. [default: 500]"),
    log_every: Optional[int] = typer.Option(None, help="Write a metrics row every N steps. [default: 100]"),
    checkpoints: Optional[int] = typer.Option(None, help="How many log-spaced checkpoints (with 0 and the last)."),
    track: Optional[str] = typer.Option(None, help="Measures tracked during training: comma list, 'default' or 'none'."),
    track_every: Optional[int] = typer.Option(None, help="Track every N steps (0: at every evaluation)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    on_nan: Optional[str] = typer.Option(None, help="On a NaN/inf loss: stop (default) or continue."),
    config: Optional[Path] = typer.Option(None, help="TOML or JSON file of these options; flags override it."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a model on a task and write a run folder (config, metrics.jsonl, checkpoints)."""
    from probe.train import run_training

    flags = dict(task=task, model=model, width=width, depth=depth, param=param, steps=steps, batch_size=batch_size,
                 lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
                 warmup=warmup, l1=l1, beta_lasso=beta_lasso, seed=seed, device=device, eval_every=eval_every,
                 log_every=log_every, checkpoints=checkpoints, track=track, track_every=track_every, compile=compile,
                 on_nan=on_nan)
    if resume is not None:
        cfg = _resume_config(resume, flags, task_opt, model_opt)
        out = resume
    else:
        if task is None and config is None:
            raise ConfigError("--task is required (see `probe tasks`), or give --config FILE")
        cfg = build_config(config, flags, task_opt, model_opt)
        out = out or default_out(cfg)
    row = run_training(cfg, out, progress=not quiet and sys.stderr.isatty(), resume=resume is not None)
    console.print(summary_line(cfg, row, out), highlight=False, soft_wrap=True)


def _resume_config(folder: Path, flags, task_opt, model_opt) -> RunConfig:
    cfg_file = folder / "config.json"
    if not folder.is_dir() or not cfg_file.is_file():
        raise ConfigError(f"--resume {folder}: not a run folder (no config.json)")
    given = [k for k, v in flags.items() if v is not None and k not in ("device",)]
    if given or task_opt or model_opt:
        raise ConfigError(f"--resume takes the run's stored config; drop --{given[0].replace('_', '-') if given else 'task-opt'}")
    cfg = build_config(cfg_file, {}, None, None)
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
def tasks(name: Optional[str] = typer.Argument(None, help="A task to show the parameters of.")):
    """List the tasks, or one task's parameters and defaults."""
    from probe.tasks import get_spec, task_specs

    if name is None:
        t = Table("task", "kind", "description", box=None)
        for n, spec in sorted(task_specs().items()):
            t.add_row("npz:PATH" if n == "npz" else n, spec.kind, spec.description)
        console.print(t)
        return
    spec = get_spec(name)
    console.print(f"[bold]{spec.name}[/bold]: {spec.description}")
    t = Table("option (--task-opt KEY=VALUE)", "default", box=None)
    for k, v in spec.options().items():
        if k != "path":
            t.add_row(k, repr(v))
    console.print(t)


@app.command()
@clean_errors
def models(name: Optional[str] = typer.Argument(None, help="A model to show the options of.")):
    """List the models, or one model's options and defaults."""
    from probe.models import model_specs

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
def demo(out: Path = typer.Option(Path("runs/demo"), help="Folder for the two runs."),
         steps: int = typer.Option(6000, help="Steps for each model."),
         seed: int = typer.Option(0, help="Random seed.")):
    """The built-in default: an MLP and a CNN on MNIST-1D, their accuracies, and a first look at the MLP's
    first layer."""
    from probe.demo import run_demo

    run_demo(out, steps, seed, console)


def main():
    app()


if __name__ == "__main__":
    main()
