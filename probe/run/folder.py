"""The run folder (docs/design.md §5): the files a run writes and reads back (config.json, task.json; metrics.jsonl
is :mod:`probe.run.metrics_file`), its state (done, partial, fresh), the checks before training (the folder is
writable and holds no other files, the disk can hold the checkpoints) and checkpoints that never hold NaN or inf.
The other parts of keeping a run safe have a module each: the one-writer lock (:mod:`probe.run.lock`), resuming
and its checks (:mod:`probe.run.resume`), stopping on a signal (:mod:`probe.run.signals`), the errors a run ends
with (:mod:`probe.run.errors`), what a run holds in memory (:mod:`probe.run.state`). The loop itself is
:mod:`probe.run.loop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch

from probe.config import ConfigError, RunConfig
from probe.run.checkpoint import TEMP_MARK, atomic_write, list_checkpoints, step_path
from probe.run.errors import DivergenceError, StorageError, first_line
from probe.run.lock import RunLock
from probe.run.metrics_file import DAMAGED_FILE, METRICS_FILE
from probe.run.state import Run, raw_model


def read_json_file(path: Path, what: str) -> dict:
    """A run folder's JSON file as a dict; ConfigError naming the file when it is missing, unreadable or not a
    JSON object."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found ({what})") from None
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not readable as JSON ({first_line(e)})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object ({what})")
    return d


def read_config(run_dir) -> RunConfig:
    """The RunConfig of a run folder's config.json; ConfigError naming the file when it is bad."""
    path = Path(run_dir) / "config.json"
    return RunConfig.from_dict(read_json_file(path, "the run's config"), source=str(path))


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


# files a run folder holds: the run's own, and what sweeps and procedures put beside them (docs/design.md §5.1)
RUN_ENTRIES = ("config.json", "task.json", METRICS_FILE, "reference.json", "checkpoints")
COMPANION_ENTRIES = (DAMAGED_FILE, "sweep_run.json", "result.json", "error.txt", "log.txt", "procedure.json",
                     "interpolation.json", "stages", "mask.pt", "rewind.pt", "layout.json", "tensorboard", "wandb")


@contextlib.contextmanager
def claim(out: Path):
    """Create ``out`` if needed, check that it can be written to, and hold its :class:`RunLock` for the block.
    Whatever fails inside the block before anything is written there leaves no trace: the lock is released on any
    exit, and folders this call created are removed again when they are left empty."""
    out = Path(out)
    created = [p for p in (out, *out.parents) if not p.exists()][::-1]
    lock = RunLock(out)
    try:
        check_out(out)
        lock.acquire()
        yield lock
    finally:
        lock.release()
        for p in ([out / "checkpoints"] if created else []) + created[::-1]:
            with contextlib.suppress(OSError):
                p.rmdir()  # only when empty


def check_new_folder(out: Path) -> None:
    """For a new run: refuse a folder that holds a run (checkpoints) or files that are not a run's; a start that
    died before its first checkpoint (metrics rows, no checkpoint) is started over."""
    out = Path(out)
    if list_checkpoints(out):
        raise ConfigError(f"--out {out}: already holds a run (use --resume {out} to continue it, or another --out)")
    if out.is_dir():
        foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                         if not p.name.startswith(".") and p.name not in RUN_ENTRIES + COMPANION_ENTRIES)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise ConfigError(f"--out {out}: holds files that are not a run's ({', '.join(foreign[:3])}{more}); give a "
                              "new or empty folder")
    for name in (METRICS_FILE, "reference.json"):
        if (out / name).is_file():
            (out / name).unlink()


def check_out(out: Path) -> None:
    """Fail early, naming --out, if the run folder cannot be created or written to (the test file is removed
    whatever happens)."""
    probe = Path(out) / f".write-test{TEMP_MARK}{os.getpid()}"
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


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
    if step == 0 and path.exists():  # the initialization: written once, never overwritten (a resumed run at 0)
        return path
    try:
        run.checkpoint(step)
    except OSError as e:
        raise StorageError(f"cannot write {path} ({e.strerror or e}); the checkpoints before it are kept, "
                           f"continue with --resume {run.out} once there is room") from None
    except RuntimeError as e:  # torch's zip writer reports a failed write as "unexpected pos ..." (a full disk)
        raise StorageError(f"cannot write {path} (the write failed: {first_line(e)}; is the disk full?); the "
                           f"checkpoints before it are kept, continue with --resume {run.out} once there is "
                           "room") from None
    for s, p in list_checkpoints(run.out):
        if s < step and s not in run.ckpt_steps:
            p.unlink(missing_ok=True)
    return path
