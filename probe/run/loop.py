"""The training loop: one run = one RunConfig -> one run folder (docs/design.md §2.1, §5).

Run folder: ``config.json``, ``task.json`` (geometry and task facts), ``metrics.jsonl`` (a row per logged step)
and ``checkpoints/step_<N>.pt`` at log-spaced steps including 0 and the last.

Design choices that later parts rely on:
- Data lives as tensors on the training device; a batch is drawn by index. The batch at step t is a pure
  function of (seed, t): epoch e's order is a permutation seeded by (seed, e). Reruns see the same batches
  and a resumed run continues exactly where it stopped.
- No host synchronization per step: the training loss accumulates on the device and is read at log steps.
- ``hooks``: callables ``hook(step, model) -> dict`` run at log steps; what they return joins that row of
  metrics.jsonl (structure tracking uses this).
- Nothing is lost: SIGINT/SIGTERM stop the run at the next step boundary with a checkpoint there
  (:class:`TrainingInterrupted`); a NaN/inf loss stops it before any checkpoint holds non-finite values
  (:class:`DivergenceError`); a failed write names the file and keeps the earlier checkpoints
  (:class:`StorageError`). On CPU a resumed run ends bit for bit where an uninterrupted one would, given the
  same machine and torch thread count (matmul reductions are split by thread: 1 and 2 threads differ in the
  last bits). The run folder's files and these safety checks live in :mod:`probe.run.folder`, resuming in
  :mod:`probe.run.resume`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from probe.config import ConfigError, RunConfig
from probe.losses import loss_fn  # noqa: F401  (also imported from here by callers)
from probe.bounds import check_model_size
from probe.models import build_model, model_specs
from probe.progress import Progress
from probe.seeding import stream
from probe.threads import limit_threads
from probe.run.checkpoint import checkpoint_steps, list_checkpoints, special_file, step_path
from probe.run.errors import StorageError, TrainingInterrupted, first_line
from probe.run.folder import check_new_folder, check_space, claim, diverged, run_state, save, write_run_files
from probe.run.metrics_file import METRICS_FILE, last_values, read_metrics
from probe.run.resume import effective_config, restore
from probe.run.signals import stop_requests
from probe.run.state import Run, raw_model
from probe.run.tracking import check_model, check_tracking, tracking_hooks
from probe.tasks import Task, make_task

EVAL_BATCH = 4096
# parameters x batch below which one CPU thread beats several: measured on 2 shared cores, a 40-100-100-10 MLP
# at batch 100 (1.5e6) took 1.8 ms/step on one thread and 37 ms on two (scripts/bench.py --cases threads)
SMALL_WORK = 1e7


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(name)


# -- losses and evaluation ------------------------------------------------------------------------------
def _correct(out, y):
    mask = y != -100
    return ((out.argmax(-1) == y) & mask).sum(), mask.sum()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, amp: bool = False) -> dict:
    """Mean loss and accuracy (classes only) over (x, y), in batches. One host sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    count = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), EVAL_BATCH):
        xb, yb = x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(xb)
        loss_sum += loss_fn(out, yb, kind) * len(xb)
        if kind == "ce":
            c, n = _correct(out, yb)
            correct += c
            count += n
    model.train(was_training)
    res = {"loss": loss_sum.item() / len(x)}
    if kind == "ce":
        res["acc"] = correct.item() / max(count.item(), 1)
    return res


# -- batches ----------------------------------------------------------------------------------------------
class Batches:
    """Batch at step t as a pure function of (seed, t) (module docstring)."""

    def __init__(self, task: Task, batch_size: int, seed: int, device: torch.device):
        self.task, self.seed, self.device = task, seed, device
        self.n = len(task.x_train)
        self.B = min(batch_size, self.n) if task.sampler is None else batch_size
        self.per_epoch = max(1, self.n // self.B)
        self._epoch, self._perm = -1, None

    def __call__(self, step: int):
        if self.task.sampler is not None:
            return self.task.sampler(self.seed, step, self.B, self.device)
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = stream(self.seed, epoch)
            perm = torch.randperm(self.n, generator=g)
            if self.device.type == "cuda":  # from pageable memory the copy may wait for the queued steps
                perm = perm.pin_memory()
            self._perm = perm.to(self.device, non_blocking=True)
            self._epoch = epoch
        idx = self._perm[i * self.B : (i + 1) * self.B]
        return self.task.x_train[idx], self.task.y_train[idx]


# -- optimizer --------------------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    mult = model.lr_multipliers(cfg.optimizer) if hasattr(model, "lr_multipliers") else {}
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        groups.setdefault(mult.get(name, 1.0), []).append(p)
    params = [{"params": ps, "lr": cfg.lr * m} for m, ps in groups.items()]
    # Fused kernels on CPU too: PyTorch's CPU default is a Python for-loop over parameters, and for AdamW on a
    # 3072-1024-1024-10 MLP at batch 256 its step takes ~8 of ~37 ms per step against ~2 fused (scripts/bench.py)
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def lr_lambda(cfg: RunConfig):
    def f(step):
        if cfg.warmup and step < cfg.warmup:
            return (step + 1) / cfg.warmup
        if cfg.schedule == "cosine":
            t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        return 1.0

    return f


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """Parameters that are weights (2-D or more), the ones L1 and beta-LASSO act on; biases and norms are not."""
    return [p for p in model.parameters() if p.dim() >= 2]


def setup(cfg: RunConfig, out: Path, task: Task | None = None) -> Run:
    """Build task (unless ``task`` is given), model and optimizer for ``cfg`` (seeded), ready to train from step 0."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if task is None:
        task = make_task(cfg.task, cfg.task_opts, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # model init independent of how much randomness the task used
    try:
        model = build_model(cfg.model, task, cfg.width, cfg.depth, cfg.param, cfg.model_opts).to(device)
    except RuntimeError as e:  # torch refusing a shape: the options are at fault (a negative channel count)
        raise ConfigError(f"model {cfg.model}{_opts(cfg)} cannot be built ({first_line(e)})") from None
    task.to(device)
    cfg = effective_config(cfg, task)  # a batch larger than the training set trains (and is recorded) as full batch
    spec = model_specs()[cfg.model]
    check_model_size(cfg.model, task.n_inputs, task.n_outputs, cfg.width, cfg.depth,
                     {**spec.options(), **cfg.model_opts}, cfg.batch_size)
    _check_forward(model, task, cfg)
    opt = make_optimizer(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    return Run(cfg, Path(out), task, model, opt, sched, device, 0, checkpoint_steps(cfg.steps, cfg.checkpoints),
               torch.zeros((), device=device), 0)


def _check_forward(model: nn.Module, task: Task, cfg: RunConfig) -> None:
    """Run two training inputs through the model (eval mode, no RNG used) so that model options that build but
    cannot run (a kernel of 0, a negative channel count) fail here, as a bad option, before anything is written."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(task.x_train[:2])
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise ConfigError(f"model {cfg.model}{_opts(cfg)} does not run on task {cfg.task} ({first_line(e)})") from None
    finally:
        model.train(was_training)


def _opts(cfg: RunConfig) -> str:
    return f" with options {cfg.model_opts}" if cfg.model_opts else ""


def train(run: Run, hooks=(), progress: bool = True, on_log=None) -> dict:
    """Train ``run`` from ``run.step`` to ``cfg.steps``. Returns the last logged row."""
    cfg, model, task = run.cfg, run.model, run.task
    amp = run.device.type == "cuda"
    batches = Batches(task, cfg.batch_size, cfg.seed, run.device)
    if cfg.compile:
        model = torch.compile(model)
    weights = weight_matrices(model)
    threshold = cfg.beta_lasso * cfg.l1
    kept = read_metrics(run.out) if run.resumed else []
    last_row: dict = (kept or [{}])[-1]  # a finished resumed run: its end
    # unbuffered: each row goes to the file in one write of its own, so nothing is left to flush at close (a full
    # disk fails in log(), where the file is named, not later in close()), and a row cut short is cut back
    metrics_f = open(run.out / METRICS_FILE, "ab", buffering=0)
    bar = Progress(cfg.steps, f"{cfg.model} on {cfg.task}", "step", run.step, enabled=progress)
    t0, step0 = time.perf_counter(), run.step

    def checkpoint(step: int) -> Path:
        # the rows up to this step reach the disk before the checkpoint does: a resumed run never lacks one
        with contextlib.suppress(OSError):
            metrics_f.flush()
            os.fsync(metrics_f.fileno())
        return save(run, step)

    def log(step: int, evaluate_now: bool) -> dict:
        row = {"step": step}
        if run.n_loss:
            row["train_loss"] = run.loss_sum.item() / run.n_loss
            run.loss_sum.zero_()
            run.n_loss = 0
        row["lr"] = run.scheduler.get_last_lr()[0]
        if evaluate_now:
            te = evaluate(model, task.x_test, task.y_test, task.loss, amp)
            row["test_loss"] = te["loss"]
            if "acc" in te:
                row["test_acc"] = te["acc"]
            tr = evaluate(model, task.x_train[:5000], task.y_train[:5000], task.loss, amp)
            row.setdefault("train_loss", tr["loss"])
            if "acc" in tr:
                row["train_acc"] = tr["acc"]
        for hook in hooks:
            row.update(hook(step, raw_model(model)))
        bad = [k for k in ("train_loss", "test_loss") if k in row and not math.isfinite(row[k])]
        line = memoryview((json.dumps(row) + "\n").encode())
        start = None
        try:
            start = os.lseek(metrics_f.fileno(), 0, os.SEEK_END)
            while line:  # a raw write may take part of the line (a disk filling up): write the rest
                line = line[metrics_f.write(line):]
        except OSError as e:
            if start is not None:  # no half row stays: cut the file back to the rows before this one
                with contextlib.suppress(OSError):
                    os.ftruncate(metrics_f.fileno(), start)
            raise StorageError(f"cannot write {run.out / METRICS_FILE} ({e.strerror or e}); its rows and the "
                               f"checkpoints so far are kept, continue with --resume {run.out} once there is "
                               "room") from None
        if bad and cfg.on_nan == "stop":
            raise diverged(run, f"{bad[0]} became {row[bad[0]]} at step {step}")
        if on_log:
            on_log(row)
        return row

    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(stop_requests())
        stack.callback(metrics_f.close)
        stack.enter_context(bar)
        if run.step == 0:  # a run resumed from step_0.pt has its row 0 (and step_0.pt is never rewritten)
            if not any(r.get("step") == 0 for r in kept):
                last_row = log(0, True)
            checkpoint(0)
        model.train()
        for step in range(run.step, cfg.steps):
            if stop:  # SIGINT/SIGTERM arrived during the previous step: stop here, with a checkpoint
                path = step_path(run.out, step) if step in run.ckpt_steps else checkpoint(step)
                raise TrainingInterrupted(stop[0], step, path)
            x, y = batches(step)
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            loss = loss_fn(out, y, task.loss)
            if cfg.l1:
                loss = loss + cfg.l1 * sum(w.abs().sum() for w in weights)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.scheduler.step()
            if threshold:
                with torch.no_grad():  # beta-LASSO (Neyshabur 2020): zero every weight below beta * lambda
                    for w in weights:
                        w.mul_(w.abs() >= threshold)
            run.loss_sum += loss.detach()
            run.n_loss += 1
            done = step + 1
            run.step = done
            is_eval = done % cfg.eval_every == 0 or done == cfg.steps
            if is_eval or done % cfg.log_every == 0:
                last_row = log(done, is_eval)
                bar.update(done, _status(last_row))
            if done in run.ckpt_steps:
                checkpoint(done)
    # finishing writes (reference.json), after the last checkpoint: a failure there loses nothing already written,
    # and --resume of the finished run writes them again
    for hook in hooks:
        if hasattr(hook, "finish"):
            hook.finish(raw_model(model))
    elapsed = time.perf_counter() - t0
    last_row = dict(last_row)
    last_row["seconds"] = elapsed
    last_row["samples_per_s"] = (cfg.steps - step0) * batches.B / max(elapsed, 1e-9)
    return last_row


def _status(row: dict) -> str:
    """A metrics row as the progress status: the training loss and, at evaluations, the test accuracy."""
    status = f"loss {row['train_loss']:.4f}" if "train_loss" in row else ""
    return status + (f" acc {row['test_acc']:.3f}" if "test_acc" in row else "")


def run_training(cfg: RunConfig, out, hooks=(), progress: bool = True, resume: bool = False, prepare=None,
                 task: Task | None = None, on_log=None) -> dict:
    """Set up, write the run folder, train; the library entry point behind ``probe train``. Returns the last row.

    Args:
        cfg: the run's config; ``out``: its run folder (refused when it already holds a run, unless ``resume``).
        hooks: callables ``hook(step, model) -> dict`` run at logged steps; what they return joins the row.
        resume: continue the run in ``out`` from its last checkpoint.
        prepare: ``prepare(run, fresh)`` runs after the model is built and before training
            (:mod:`probe.run.procedures`): with ``fresh`` (not ``resume``) it may replace the initial weights, which
            become the step-0 checkpoint; in every case it may register optimizer hooks.
        task: a task built already (by :func:`probe.tasks.make_task` or by hand, e.g. in a benchmark); default:
            built from ``cfg.task`` and ``cfg.task_opts``. ``cfg`` should still name it, as config.json records it.
        on_log: ``on_log(row)`` after each metrics row is written (logging integrations).
    """
    out = Path(out)
    long = [part for part in out.parts if len(part.encode()) > 240]  # 255 bytes on most filesystems, less a temp suffix
    if long:
        raise ConfigError(f"--out {str(out)[:60]}...: a name of {len(long[0].encode())} bytes (most filesystems take "
                          "255, and probe adds a temporary suffix); choose a shorter --out")
    if len(str(out.resolve()).encode()) > 4000:
        raise ConfigError(f"--out {str(out)[:60]}...: a path of over 4000 bytes; choose a shorter --out")
    if not resume and list_checkpoints(out):  # cheap, before the task is built; checked again under the lock
        raise ConfigError(f"--out {out}: already holds a run (use --resume {out} to continue it, or another --out)")
    for name in ("config.json", "task.json", "metrics.jsonl", "checkpoints"):  # reference.json: a finishing write
        p = out / name  # a file a run writes replaced by a folder (or the folder by a file): nothing could be written
        if not p.exists():
            continue
        kind = "a folder" if p.is_dir() else special_file(p)
        if (name == "checkpoints") != (kind == "a folder") or (name != "checkpoints" and kind):
            raise ConfigError(f"{p}: is {kind or 'a file'}, where the run keeps its {name}; move it away to "
                              f"{'continue' if resume else 'train'} here")
    check_tracking(cfg)  # a bad --track fails before anything is built or written
    run = setup(cfg, out, task)  # bad data or options fail here, before the run folder is created
    # measures that do not apply to this task, before --out is touched
    names = check_tracking(cfg, run.task.geometry.kind)
    check_model(names, run.model, out, cfg.model)  # the pull and the layout shares need a model that has them
    if "tensorboard" in log_targets(cfg):
        _summary_writer()  # a missing package is a one-line error before --out is touched
    if "wandb" in log_targets(cfg):
        _wandb()
    with claim(out):  # one writer per run folder; the lock is released on any exit
        if not resume:
            check_new_folder(out)
        if prepare is not None:
            prepare(run, not resume)
        if resume:
            restore(run)
        # --track: first-layer measures in the metrics rows (probe/run/tracking.py)
        hooks = (*hooks, *tracking_hooks(run))
        check_space(run)
        if not resume:
            try:
                write_run_files(run)
            except OSError as e:
                raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None
        threads = cpu_threads(cfg, run.model)
        if progress and threads > 1 and run.device.type == "cpu":
            import sys

            print(f"note: {thread_reason(cfg, run.model)}", file=sys.stderr, flush=True)
        with limit_threads(threads, blas=False), _loggers(cfg, out, on_log) as log_row:
            return train(run, hooks=hooks, progress=progress, on_log=log_row)


def cpu_threads(cfg: RunConfig, model: nn.Module) -> int:
    """The torch CPU threads a run uses: ``cfg.threads``, or for 0 one thread for a small model (parameters x batch
    below :data:`SMALL_WORK`) and torch's current setting otherwise (a sweep worker's share of the cores)."""
    if cfg.threads:
        return cfg.threads
    work = sum(p.numel() for p in model.parameters()) * cfg.batch_size
    return 1 if work < SMALL_WORK else torch.get_num_threads()


def thread_reason(cfg: RunConfig, model: nn.Module) -> str:
    """Which torch CPU thread count a run takes, and why, in one sentence (`probe train` says it when more than one)."""
    n = cpu_threads(cfg, model)
    if cfg.threads:
        return f"{n} torch threads, as --threads asked"
    work = sum(p.numel() for p in model.parameters()) * cfg.batch_size
    if work < SMALL_WORK:
        return f"1 torch thread: a small model (parameters x batch {work:.2g} < {SMALL_WORK:.0g})"
    return (f"{n} torch thread{'s' if n > 1 else ''} (torch's setting here) for a large model (parameters x batch "
            f"{work:.2g} >= {SMALL_WORK:.0g})" + ("; where other processes keep the cores busy, --threads 1 is often "
                                                  "several times faster (README, Performance)" if n > 1 else ""))


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'probe[tensorboard]' "
                          "(or pip install tensorboard)") from None
    return SummaryWriter


def log_targets(cfg: RunConfig) -> list[str]:
    """The loggers ``--log`` names (``none``, one, or a comma list such as ``tensorboard,wandb``)."""
    return [t.strip() for t in cfg.log.split(",") if t.strip() not in ("", "none")]


def _wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError("--log wandb needs the wandb package: pip install 'probe[wandb]' (or pip install wandb); "
                          "WANDB_MODE=offline logs without a network") from None
    return wandb


def run_hparams(cfg: RunConfig) -> dict:
    """The run config as one flat dict of hyperparameters, as TensorBoard's HParams and wandb's config take them:
    nested options as ``task_opts.KEY``, None as "none", other values that are not numbers or text as JSON."""
    flat = {}
    for key, value in cfg.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}.{sub}"
            flat[name] = "none" if v is None else v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
    return flat


@contextlib.contextmanager
def _tensorboard(cfg: RunConfig, out: Path):
    """Every number of a row as a scalar under its key (``RUN/tensorboard``; a resumed run appends to the same
    folder, and TensorBoard shows the rows by step), the run config as its hparams (HParams tab)."""
    from torch.utils.tensorboard.summary import hparams

    writer = _summary_writer()(log_dir=str(Path(out) / "tensorboard"))
    for summary in hparams(run_hparams(cfg), {k: 0.0 for k in ("train_loss", "test_loss", "test_acc")}):
        writer.file_writer.add_summary(summary)

    def log(numbers: dict, step: int) -> None:
        for key, value in numbers.items():
            writer.add_scalar(key, value, step)

    try:
        yield log
    finally:
        writer.close()


@contextlib.contextmanager
def _wandb_run(cfg: RunConfig, out: Path):
    """Every number of a row logged at its step to a wandb run in ``RUN/wandb`` (offline with WANDB_MODE=offline;
    project from WANDB_PROJECT, else "probe"), the run config as its config. The run's id is kept in
    ``RUN/wandb/probe_run_id``, so a resumed run continues the same wandb run; rows a resume logs again (those after
    the last checkpoint) have steps wandb has seen, and it keeps the first."""
    import secrets

    wandb = _wandb()
    folder = Path(out) / "wandb"
    folder.mkdir(exist_ok=True)
    id_file = folder / "probe_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not run_id:
        run_id = secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
    try:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "probe"), dir=str(out), id=run_id, resume="allow",
                         name=Path(out).resolve().name, config=run_hparams(cfg), reinit="finish_previous",
                         settings=wandb.Settings(console="off", save_code=False, silent=True))
    except wandb.errors.Error as e:  # no API key, no network: the user's setup, said in one line
        raise ConfigError(f"--log wandb: {first_line(e).rstrip('.')}; or set WANDB_MODE=offline to log without an "
                          "account or a network") from None
    try:
        yield lambda numbers, step: run.log(numbers, step=step)
    finally:
        run.finish()


_LOGGERS = {"tensorboard": _tensorboard, "wandb": _wandb_run}


@contextlib.contextmanager
def _loggers(cfg: RunConfig, out: Path, on_log=None):
    """The ``on_log(row)`` that training calls after each metrics row: the caller's, and one per ``--log`` target
    (:func:`_tensorboard`, :func:`_wandb_run`) that gets every number of the row but its step."""
    targets = log_targets(cfg)
    if not targets:
        yield on_log
        return
    with contextlib.ExitStack() as stack:
        sinks = [stack.enter_context(_LOGGERS[t](cfg, out)) for t in targets]

        def log_row(row: dict) -> None:
            numbers = {k: v for k, v in row.items()
                       if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            for sink in sinks:
                sink(numbers, row["step"])
            if on_log is not None:
                on_log(row)

        yield log_row


def train_or_resume(cfg: RunConfig, out, prepare=None, hooks=(), task: Task | None = None,
                    progress: bool = False) -> dict:
    """Train ``cfg`` into run folder ``out``, or resume it, or, when it is finished, only read its result: the one
    "train, resume or skip" that sweeps, procedures and the demo share (:func:`probe.run.folder.run_state`).

    Returns the last metrics row with every key at its last logged value
    (:func:`probe.run.metrics_file.last_values`)."""
    out = Path(out)
    state = run_state(out, cfg.steps)
    if state == "done":
        return last_values(out)
    # "fresh" includes a start that died before its first checkpoint: run_training starts it over (under the lock)
    run_training(cfg, out, hooks=hooks, progress=progress, resume=state == "partial", prepare=prepare, task=task)
    return last_values(out)
