"""The run folder and what keeps it safe (docs/design.md §5, issues 8 and 18): the files a run writes, one writer
at a time (:class:`RunLock`), resuming from the last checkpoint after checking its state against the run's config,
checks before training (the folder is writable and holds no other files, the disk can hold the checkpoints),
checkpoints that never hold NaN or inf, and stopping at a step boundary on SIGINT/SIGTERM. The loop itself is
:mod:`probe.run.loop`.

Errors a run can end with, each one line for the CLI: :class:`RunFailed` (exit 1) and its kinds
:class:`DivergenceError` and :class:`StorageError`; :class:`TrainingInterrupted` (exit 130/143) carries the
checkpoint written at the stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from probe.run.checkpoint import (TEMP_MARK, CheckpointError, atomic_write, check_rng_state, is_probe_checkpoint,
                                  list_checkpoints, load_checkpoint, remove_temp_files, rng_state, save_checkpoint,
                                  set_rng_state, state_dict_mismatch, step_path)
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
    resumed: bool = False  # restored from a checkpoint (its metrics rows up to ``step`` are already written)

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


#: the signals that stop training at a step boundary with a checkpoint; a submitit job adds SIGUSR2, Slurm's warning
#: before a time limit or a preemption (probe.sweep.execute.SweepJob)
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]


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

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
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


DAMAGED_FILE = "metrics.damaged.txt"  # lines of metrics.jsonl that are not rows, kept aside by --resume


def _metrics_row(line: str):
    """The row of one metrics.jsonl line, or None when it is not a JSON object with an integer ``step`` >= 0."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool)
            and row["step"] >= 0):
        return None
    return row


def read_metrics(run_dir) -> list[dict]:
    """The rows of a run's metrics.jsonl in order ([] when there is none). A line that is not a JSON object with an
    integer ``step`` >= 0 (a row cut short by a crash, a damaged byte) is skipped, never the good rows around it
    (``probe check`` reports it; ``--resume`` keeps it aside in :data:`DAMAGED_FILE`)."""
    return _read_metrics_lines(run_dir)[0]


def _read_metrics_lines(run_dir) -> tuple[list[dict], list[str]]:
    """(rows, damaged lines) of a run's metrics.jsonl; the last line cut short by a crash (no newline after it)
    counts as neither: it is the row a crash interrupted, which a resumed run writes again."""
    p = Path(run_dir) / METRICS_FILE
    rows, damaged = [], []
    try:
        text = p.read_text(errors="replace") if p.is_file() else ""
    except OSError:
        text = ""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        row = _metrics_row(line)
        if row is not None:
            rows.append(row)
        elif i < len(lines) - 1:  # a whole line (a newline follows it) that is not a row
            damaged.append(line)
    return rows, damaged


def last_values(run_dir) -> dict:
    """Every key of metrics.jsonl at its last logged value (tracked measures are logged at fewer steps than
    losses), with ``step`` the last row's step; {} when nothing is logged."""
    merged: dict = {}
    for row in read_metrics(run_dir):
        merged.update(row)
    return merged


def is_log_step(step: int, cfg: RunConfig) -> bool:
    """Whether the loop writes a metrics row at ``step``: 0, multiples of --log-every or --eval-every, the last."""
    return step == 0 or step == cfg.steps or step % cfg.log_every == 0 or step % cfg.eval_every == 0


def log_steps(cfg: RunConfig, upto: int) -> list[int]:
    """The steps of the metrics rows an uninterrupted run writes, up to ``upto``."""
    return [s for s in range(0, min(upto, cfg.steps) + 1) if is_log_step(s, cfg)]


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


def restore(run: Run) -> None:
    """Load the run folder's last checkpoint into ``run`` (model, optimizer, scheduler, RNG, step) and drop
    metrics rows logged after it, so the resumed run writes exactly the rows an uninterrupted one would. The
    checkpoint's state is checked against the run's config first (:func:`check_resume_state`): a step outside
    [0, steps] or not its file's, weights, optimizer, schedule, RNG or loss accumulator that do not fit are
    refused, naming the part."""
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
    stored = RunConfig.from_dict(ck["config"], source=f"checkpoint {path}").replace(device=run.cfg.device,
                                                                                       threads=run.cfg.threads)
    stored = effective_config(stored, run.task)
    if stored != run.cfg:
        diff = [k for k, v in run.cfg.to_dict().items() if stored.to_dict()[k] != v]
        raise CheckpointError(f"checkpoint {path}: written with another config than {run.out / 'config.json'} "
                              f"(differs in {', '.join(diff)}); cannot resume from it")
    problem = check_resume_state(run, ck, step)
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}; cannot resume from it")
    try:
        raw_model(run.model).load_state_dict(ck["state_dict"])
        run.optimizer.load_state_dict(ck["optimizer"])
        run.scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        run.step = int(ck["step"])
        run.loss_sum = ck["loss_accum"]["sum"].to(run.device)
        run.n_loss = int(ck["loss_accum"]["n"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {path}: its training state does not fit this run "
                              f"({first_line(e)})") from None
    run.resumed = True
    metrics = run.out / METRICS_FILE
    if metrics.exists():
        rows, damaged = _read_metrics_lines(run.out)
        if damaged:  # kept aside, never dropped: they are reported and can be read there
            aside = run.out / DAMAGED_FILE
            try:
                with open(aside, "a", errors="replace") as f:
                    f.write("".join(line + "\n" for line in damaged))
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise StorageError(f"cannot write {aside} ({e.strerror or e}): {METRICS_FILE} holds {len(damaged)} "
                                   "damaged line(s) that resuming would keep there; nothing was changed") from None
            log.warning(f"note: {metrics}: {len(damaged)} damaged line(s) (not a row with an integer step) moved to "
                        f"{aside}; the good rows around them are kept")
        keep = [json.dumps(r) for r in rows if r.get("step", math.inf) <= run.step]
        atomic_write(metrics, lambda f: f.write("".join(r + "\n" for r in keep).encode()))


_RESUME_KEYS = ("config", "state_dict", "optimizer", "scheduler", "rng", "step", "loss_accum")


def effective_config(cfg: RunConfig, task: Task) -> RunConfig:
    """``cfg`` as it trains on ``task``: a batch larger than a fixed training set is the whole set (full batch),
    and that is what config.json records."""
    n = len(task.x_train)
    fixed = task.sampler is None or getattr(task.sampler, "draws_from_train_set", False)
    if fixed and 0 < n < cfg.batch_size:
        return cfg.replace(batch_size=n)
    return cfg


def check_resume_state(run: Run, ck: dict, file_step: int) -> str | None:
    """Why the training state of checkpoint ``ck`` (named ``step_<file_step>.pt``) cannot continue ``run``, or None.

    Checked against the run's config and freshly built model, optimizer and schedule, before anything is set: the
    step (an integer in [0, steps], the one in the file's name), the weights (every key with its shape; finite
    unless --on-nan continue), the optimizer (its groups' hyperparameters as the config gives them, each state
    tensor the shape of its parameter), the schedule (at that step), the RNG states (their lengths) and the
    training loss accumulated since the last metrics row (its count fits the logging cadence)."""
    cfg = run.cfg
    step = ck.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return f"its step is {step!r}, not an integer"
    if step != file_step:
        return f"its step ({step}) is not the one in its name (step_{file_step}.pt)"
    if not 0 <= step <= cfg.steps:
        return f"its step ({step}) is outside [0, {cfg.steps}] (--steps)"
    model = raw_model(run.model)
    sd = ck["state_dict"]
    bad = state_dict_mismatch(model, sd)
    if bad:
        return f"its weights do not fit model {cfg.model} ({bad})"
    if cfg.on_nan == "stop":
        nonfinite = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if nonfinite:
            return f"its weights hold NaN or inf ({nonfinite[0]})"
    bad = _optimizer_mismatch(run, ck["optimizer"], step)
    if bad:
        return f"its optimizer state does not fit ({bad})"
    sched = ck["scheduler"]
    fresh = run.scheduler.state_dict()
    if not isinstance(sched, dict) or sched.get("last_epoch") != step or isinstance(sched.get("last_epoch"), bool):
        return f"its schedule is not at step {step}"
    for k, v in sched.items():  # its load sets each key as an attribute: none may replace a method
        known = k in fresh and (type(v) is type(fresh[k]) or (_number(v) and _number(fresh[k])))
        plain = isinstance(k, str) and not k.startswith("__") and not hasattr(type(run.scheduler), k) \
            and (v is None or isinstance(v, (bool, int, float, str)))  # a key another torch version writes
        if not (known or (k not in fresh and plain)):
            return f"its schedule holds {k} = {v!r}"[:200]
    if not (isinstance(sched.get("lr_lambdas"), list) and all(f is None for f in sched["lr_lambdas"])):
        return "its schedule's lr_lambdas are not this run's"
    if not _close(sched.get("base_lrs"), fresh["base_lrs"]):
        return f"its schedule's base learning rates {sched.get('base_lrs')} are not --lr's {fresh['base_lrs']}"
    try:
        check_rng_state(ck["rng"])
    except ValueError as e:
        return f"its random state is bad ({e})"
    acc = ck["loss_accum"]
    if not (isinstance(acc, dict) and torch.is_tensor(acc.get("sum")) and acc["sum"].dim() == 0
            and acc["sum"].dtype == torch.float32 and isinstance(acc.get("n"), int) and not isinstance(acc["n"], bool)):
        return "its loss_accum is not {sum: a scalar tensor, n: an integer}"
    since = step - max(s for s in (0, step - step % cfg.log_every, step - step % cfg.eval_every))
    if step == cfg.steps:
        since = 0
    if acc["n"] != since:
        return f"its loss_accum counts {acc['n']} steps, but {since} were trained since the last metrics row"
    if cfg.on_nan == "stop" and not bool(torch.isfinite(acc["sum"])):
        return "its accumulated training loss is NaN or inf"
    return None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _close(a, b) -> bool:
    try:
        return len(a) == len(b) and all(math.isclose(float(x), float(y), rel_tol=1e-9) for x, y in zip(a, b))
    except (TypeError, ValueError):
        return False


_HYPERPARAMETERS = ("initial_lr", "weight_decay", "momentum", "dampening", "nesterov", "betas", "eps", "amsgrad",
                    "maximize")


def _seq(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _optimizer_mismatch(run: Run, state, step: int) -> str | None:
    fresh = run.optimizer.state_dict()
    if not (isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list)):
        return "not {state, param_groups}"
    groups = state["param_groups"]
    if len(groups) != len(fresh["param_groups"]):
        return f"{len(groups)} parameter groups, the model has {len(fresh['param_groups'])}"
    lam = run.scheduler.lr_lambdas[0](step)
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    for i, (g, f) in enumerate(zip(groups, fresh["param_groups"])):
        if not isinstance(g, dict) or g.get("params") != f["params"]:
            return f"group {i} holds other parameters"
        for k in _HYPERPARAMETERS:  # (keys a torch version does not write are left to load_state_dict)
            if k in f and k in g and g[k] != f[k] and not _close(_seq(g[k]), _seq(f[k])):
                return f"group {i}: {k} is {g[k]!r}, the config gives {f[k]!r}"
        lr = g.get("lr")
        if not isinstance(lr, (int, float)) or not math.isclose(lr, f["initial_lr"] * lam, rel_tol=1e-6):
            return f"group {i}: lr {lr!r} is not the schedule's {f['initial_lr'] * lam!r} at step {step}"
    for idx, st in state["state"].items():
        if not (isinstance(idx, int) and 0 <= idx < len(params)) or not isinstance(st, dict):
            return f"state for parameter {idx!r}, which the model does not have"
        for k, v in st.items():
            if k == "step":
                ok = torch.is_tensor(v) and v.numel() == 1 and (v.is_floating_point() or not v.is_complex()) \
                    and v.dtype != torch.bool
                n = float(v) if ok else v
                if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 <= n <= step:
                    return f"parameter {idx}: step {v!r} is not in [0, {step}]"
            elif not (torch.is_tensor(v) and v.is_floating_point() and v.shape == params[idx].shape):
                return f"parameter {idx}: {k} is not a float tensor of its shape {tuple(params[idx].shape)}"
    return None


# -- one writer at a time -------------------------------------------------------------------------------------------
LOCK_FILE = ".lock"
log = logging.getLogger("probe.run")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: /proc/PID/stat field 22), to tell a reused PID; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict) -> bool:
    """Whether the process a lock names is still running: on this host its PID exists and started when the lock
    says; on another host we cannot tell, so it counts as running."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    start = info.get("start")
    return start is None or _start_time(pid) in (None, start)


class RunLock:
    """The run folder's one-writer lock: ``RUN/.lock``, created atomically (O_CREAT | O_EXCL) holding the writer's
    PID, host, process start time and command line; removed by :meth:`release`. A lock whose process is gone (same
    host, PID not running or reused) is stale and is taken over, with a note on stderr; any other lock refuses
    the second writer with a ConfigError naming the holder."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self.held = False
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
                     "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}

    def acquire(self) -> "RunLock":
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.path.is_dir() or (self.path.exists() and not self.path.is_file()):
                    raise ConfigError(f"--out {self.out}: {self.path} is "
                                      f"{'a folder' if self.path.is_dir() else 'not a file'}"
                                      ", not a lock probe wrote; remove it if no probe process writes this run "
                                      "folder") from None
                raw, info = read_lock(self.out)
                if info is None and raw is not None and time.time() - _mtime(self.path) < 10:
                    raise ConfigError(f"--out {self.out}: another process is taking the run folder's lock "
                                      f"({self.path}) right now; a run folder has one writer at a time") from None
                if info is not None and _alive(info):
                    raise ConfigError(f"--out {self.out}: another probe process is writing this run folder (PID "
                                      f"{info.get('pid')} on {info.get('host')}, since {info.get('since')}); a run "
                                      f"folder has one writer at a time: wait for it, or stop it (if no such "
                                      f"process runs, delete {self.path})") from None
                if raw is not None and self._take_over(raw):
                    who = f"PID {info.get('pid')}" if info else "an unreadable lock"
                    log.warning(f"note: {self.path}: took over a stale lock ({who}, no longer running)")
                continue
            except OSError as e:
                raise ConfigError(f"--out {self.out}: cannot write there ({e.strerror or e})") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.info))
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise ConfigError(f"--out {self.out}: could not take the run folder's lock {self.path}")

    def _take_over(self, raw: str) -> bool:
        """Remove a stale lock whose content is ``raw``. The lock is renamed aside (atomic) and checked: if another
        process replaced it meanwhile, that lock is put back (link fails where a newer one exists)."""
        aside = self.out / f"{LOCK_FILE}{TEMP_MARK}{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # someone else removed it: try again
        except OSError as e:  # an immutable file, a read-only folder
            raise ConfigError(f"--out {self.out}: cannot take over the stale lock {self.path} ({e.strerror or e}); "
                              "remove it by hand if no probe process writes this run folder") from None
        try:
            try:
                ours = _read_text(aside) == raw
            except OSError:
                ours = False
            if not ours:
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
            return ours
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        raw, info = read_lock(self.out)
        if info is not None and info.get("pid") == self.info["pid"] and info.get("start") == self.info["start"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_text(path: Path) -> str:
    """A lock file's text; bytes that are not UTF-8 kept as surrogates, so any content compares exactly."""
    return path.read_bytes().decode("utf-8", "surrogateescape")


def read_lock(run_dir) -> tuple[str | None, dict | None]:
    """(raw text, parsed dict) of a run folder's lock; (None, None) when there is none, (raw, None) when it is
    not a lock probe wrote (or still being written)."""
    try:
        raw = _read_text(Path(run_dir) / LOCK_FILE)
    except FileNotFoundError:
        return None, None
    except OSError:
        return "", None
    try:
        info = json.loads(raw)
    except ValueError:
        return raw, None
    return raw, info if isinstance(info, dict) else None


def lock_holder(run_dir) -> str | None:
    """Who holds a run folder's lock, in words (``PID 123 on host, since ...``), with ``stale`` when that process is
    gone; None when it is not locked."""
    raw, info = read_lock(run_dir)
    if raw is None:
        return None
    if info is None:
        return "an unreadable lock"
    who = f"PID {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
    return who if _alive(info) else f"{who} (stale: that process is gone)"


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
