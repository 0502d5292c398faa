"""The run folder and what keeps it safe (docs/design.md §5, issue 8): the files a run writes, resuming from the last
checkpoint, checks before training (the folder is writable, the disk can hold the checkpoints), checkpoints that
never hold NaN or inf, and stopping at a step boundary on SIGINT/SIGTERM. The loop itself is :mod:`probe.run.loop`.

Errors a run can end with, each one line for the CLI: :class:`RunFailed` (exit 1) and its kinds
:class:`DivergenceError` and :class:`StorageError`; :class:`TrainingInterrupted` (exit 130/143) carries the
checkpoint written at the stop.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import threading
from pathlib import Path
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from probe.run.checkpoint import (CheckpointError, atomic_write, is_probe_checkpoint, list_checkpoints, load_checkpoint,
                                  remove_temp_files, rng_state, save_checkpoint, set_rng_state, step_path)
from probe.config import ConfigError, RunConfig
from probe.tasks import Task


class RunFailed(RuntimeError):
    """Training stopped for a reason the message gives in one line (the CLI exits with code 1)."""


class DivergenceError(RunFailed):
    """The loss (or the weights) became NaN or inf."""


class StorageError(RunFailed):
    """A run file could not be written (disk full, permissions); the checkpoints written before are kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at ``step``; the checkpoint written there is ``path``."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"{signal.Signals(signum).name} at step {step}, checkpoint {path}")
        self.signum, self.step, self.path = signum, step, path


# -- what a run holds ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything a training run holds; built by :func:`setup`, advanced by :func:`train`."""

    cfg: RunConfig
    out: Path
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    step: int = 0
    ckpt_steps: list = field(default_factory=list)
    # training loss summed since the last logged row (on the device), and how many steps it holds; stored in
    # checkpoints so that a resumed run logs exactly the rows an uninterrupted one would
    loss_sum: torch.Tensor | None = None
    n_loss: int = 0

    def checkpoint(self, step: int) -> Path:
        path = step_path(self.out, step)
        save_checkpoint(
            path,
            config=self.cfg.to_dict(),
            geometry=self.task.geometry.to_dict(),
            task_info=self.task.info,
            model=self.cfg.model,
            state_dict={k: v.detach().cpu() for k, v in raw_model(self.model).state_dict().items()},
            step=step,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng_state(),
            loss_accum={"sum": self.loss_sum.detach().cpu(), "n": self.n_loss},
        )
        return path


@contextlib.contextmanager
def stop_requests():
    """While training, SIGINT and SIGTERM only append to the yielded list, which the loop reads between steps, so
    the run stops at a step boundary with a consistent checkpoint. A second signal stops at once (no checkpoint).
    Signal handlers can only be set from the main thread; elsewhere signals keep their usual effect."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, frame):
        if got:
            raise KeyboardInterrupt
        got.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def raw_model(model):
    return getattr(model, "_orig_mod", model)


def first_line(e: BaseException) -> str:
    msg = str(e).strip()
    return (msg.splitlines()[0] if msg else type(e).__name__)[:160]


# -- the files of a run folder ------------------------------------------------------------------------------------
METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir) -> list[dict]:
    """The rows of a run's metrics.jsonl in order ([] when there is none); a row cut short by a crash, and every
    row after it, is left out (resuming drops them the same way)."""
    p = Path(run_dir) / METRICS_FILE
    rows = []
    for line in (p.read_text().splitlines() if p.exists() else []):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def last_values(run_dir) -> dict:
    """Every key of metrics.jsonl at its last logged value (tracked measures are logged at fewer steps than
    losses), with ``step`` the last row's step; {} when nothing is logged."""
    merged: dict = {}
    for row in read_metrics(run_dir):
        merged.update(row)
    return merged


def run_state(run_dir, steps: int) -> str:
    """``done`` (last checkpoint at ``steps``), ``partial`` (checkpoints to resume from) or ``fresh``."""
    ckpts = list_checkpoints(run_dir)
    if ckpts and ckpts[-1][0] == steps:
        return "done"
    if ckpts and (Path(run_dir) / "config.json").exists():
        return "partial"
    return "fresh"


def write_run_files(run: Run) -> None:
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "checkpoints").mkdir(exist_ok=True)
    atomic_write(run.out / "config.json", lambda f: f.write(json.dumps(run.cfg.to_dict(), indent=2).encode()))
    meta = {"geometry": run.task.geometry.to_dict(), "info": run.task.info, "n_train": len(run.task.x_train),
            "n_test": len(run.task.x_test), "n_outputs": run.task.n_outputs, "loss": run.task.loss,
            "n_params": sum(p.numel() for p in run.model.parameters())}
    atomic_write(run.out / "task.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))


def restore(run: Run) -> None:
    """Load the run folder's last checkpoint into ``run`` (model, optimizer, scheduler, RNG, step) and drop
    metrics rows logged after it, so the resumed run writes exactly the rows an uninterrupted one would."""
    remove_temp_files(run.out)  # left by a write that a crash or kill -9 cut short
    ckpts = list_checkpoints(run.out)
    if not ckpts:
        raise ConfigError(f"--resume {run.out}: no checkpoints to resume from")
    step, path = ckpts[-1]
    ck = load_checkpoint(path, map_location=run.device)
    missing = [k for k in _RESUME_KEYS if not isinstance(ck, dict) or k not in ck]
    if not is_probe_checkpoint(ck) or missing:
        raise CheckpointError(f"checkpoint {path}: not a probe checkpoint with training state (missing "
                              f"{', '.join(missing) or 'format'}); cannot resume from it")
    stored = RunConfig.from_dict(ck["config"], source=f"checkpoint {path}").replace(device=run.cfg.device)
    if stored != run.cfg:
        diff = [k for k, v in run.cfg.to_dict().items() if stored.to_dict()[k] != v]
        raise CheckpointError(f"checkpoint {path}: written with another config than {run.out / 'config.json'} "
                              f"(differs in {', '.join(diff)}); cannot resume from it")
    try:
        raw_model(run.model).load_state_dict(ck["state_dict"])
        run.optimizer.load_state_dict(ck["optimizer"])
        run.scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        run.step = int(ck["step"])
        run.loss_sum = ck["loss_accum"]["sum"].to(run.device)
        run.n_loss = int(ck["loss_accum"]["n"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path}: its training state does not fit this run ({first_line(e)})") from None
    metrics = run.out / METRICS_FILE
    if metrics.exists():
        keep = [json.dumps(r) for r in read_metrics(run.out) if r.get("step", math.inf) <= run.step]
        atomic_write(metrics, lambda f: f.write("".join(r + "\n" for r in keep).encode()))


_RESUME_KEYS = ("config", "state_dict", "optimizer", "scheduler", "rng", "step", "loss_accum")


def check_out(out: Path) -> None:
    """Fail early, naming --out, if the run folder cannot be created or written to."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out / "checkpoints" / f".write-test.tmp-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def check_space(run: Run) -> None:
    """Fail before training if the disk under --out cannot hold the checkpoints still to come (weights plus
    optimizer state, estimated from the parameter count)."""
    state = {"adam": 2, "adamw": 2}.get(run.cfg.optimizer, 1 if run.cfg.momentum else 0)
    per_ckpt = sum(p.numel() * p.element_size() for p in run.model.parameters()) * (1 + state)
    need = per_ckpt * (1 + sum(1 for s in run.ckpt_steps if s > run.step))
    free = shutil.disk_usage(run.out).free
    if need > free:
        raise ConfigError(f"--out {run.out}: the checkpoints need about {need / 1e6:.1f} MB but only "
                          f"{free / 1e6:.1f} MB is free there (use fewer --checkpoints or another --out)")


def last_checkpoint(run: Run) -> str:
    ckpts = list_checkpoints(run.out)
    return str(ckpts[-1][1]) if ckpts else "none"


def diverged(run: Run, what: str) -> DivergenceError:
    return DivergenceError(f"training diverged: {what}; stopped, last good checkpoint {last_checkpoint(run)} "
                           "(try a smaller --lr, or --on-nan continue to keep training)")


def save(run: Run, step: int) -> Path:
    """Write the checkpoint at ``step``, after making sure (unless --on-nan continue) that it holds no NaN or inf:
    the loss is only read at log steps, so a checkpoint step can come after a NaN that no row has seen yet. Then
    drop older checkpoints that are not on the log-spaced schedule (written when a run was interrupted): they were
    only there to resume from, and the run folder ends as an uninterrupted run's would."""
    if run.cfg.on_nan == "stop":
        params = [v for v in raw_model(run.model).state_dict().values() if v.is_floating_point()]
        finite = torch.stack([torch.isfinite(run.loss_sum), *[torch.isfinite(v).all() for v in params]])
        if not bool(finite.all()):  # one host sync, at checkpoint steps only
            what = "train_loss" if not bool(finite[0]) else "the weights"
            raise diverged(run, f"{what} became NaN or inf before step {step}")
    path = step_path(run.out, step)
    try:
        run.checkpoint(step)
    except OSError as e:
        raise StorageError(f"cannot write {path} ({e.strerror or e}); the checkpoints before it are kept, "
                           f"continue with --resume {run.out} once there is room") from None
    for s, p in list_checkpoints(run.out):
        if s < step and s not in run.ckpt_steps:
            p.unlink(missing_ok=True)
    return path
