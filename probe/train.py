"""The training loop: one run = one RunConfig -> one run folder (DESIGN §2).

Run folder: ``config.json``, ``task.json`` (geometry and task facts), ``metrics.jsonl`` (a row per logged step)
and ``checkpoints/step_<N>.pt`` at log-spaced steps including 0 and the last.

Design choices that later parts rely on:
- Data lives as tensors on the training device; a batch is drawn by index. The batch at step t is a pure
  function of (seed, t): epoch e's order is a permutation seeded by (seed, e). Reruns see the same batches
  and a resumed run continues exactly where it stopped.
- No host synchronization per step: the training loss accumulates on the device and is read at log steps.
- ``hooks``: callables ``hook(step, model) -> dict`` run at log steps; what they return joins that row of
  metrics.jsonl (structure tracking uses this).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from probe.checkpoint import (atomic_write, checkpoint_steps, list_checkpoints, load_checkpoint, rng_state,
                              save_checkpoint, set_rng_state, step_path)
from probe.config import ConfigError, RunConfig
from probe.models import build_model
from probe.tasks import Task, make_task

EVAL_BATCH = 4096


class DivergenceError(RuntimeError):
    """The loss became NaN or inf."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(name)


# -- losses and evaluation ------------------------------------------------------------------------------
def loss_fn(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(out.float(), y.float())
    if out.dim() == 3:  # per-position logits (B, T, K) with targets (B, T), -100 = not asked
        return F.cross_entropy(out.float().flatten(0, 1), y.flatten(), ignore_index=-100)
    return F.cross_entropy(out.float(), y)


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
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).to(self.device, non_blocking=True)
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
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
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


# -- the run ----------------------------------------------------------------------------------------------
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
            state_dict={k: v.detach().cpu() for k, v in _raw(self.model).state_dict().items()},
            step=step,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng_state(),
            loss_accum={"sum": self.loss_sum.detach().cpu(), "n": self.n_loss},
        )
        return path


def _raw(model):
    return getattr(model, "_orig_mod", model)


def setup(cfg: RunConfig, out: Path) -> Run:
    """Build task, model and optimizer for ``cfg`` (seeded), ready to train from step 0."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    task = make_task(cfg.task, cfg.task_opts, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # model init independent of how much randomness the task used
    model = build_model(cfg.model, task, cfg.width, cfg.depth, cfg.param, cfg.model_opts).to(device)
    task.to(device)
    opt = make_optimizer(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    return Run(cfg, Path(out), task, model, opt, sched, device, 0, checkpoint_steps(cfg.steps, cfg.checkpoints),
               torch.zeros((), device=device), 0)


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
    ckpts = list_checkpoints(run.out)
    if not ckpts:
        raise ConfigError(f"--resume {run.out}: no checkpoints to resume from")
    step, path = ckpts[-1]
    ck = load_checkpoint(path, map_location=run.device)
    _raw(run.model).load_state_dict(ck["state_dict"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"])
    run.step = int(ck["step"])
    run.loss_sum = ck["loss_accum"]["sum"].to(run.device)
    run.n_loss = int(ck["loss_accum"]["n"])
    metrics = run.out / "metrics.jsonl"
    if metrics.exists():
        rows = [line for line in metrics.read_text().splitlines() if line.strip()]
        keep = []
        for line in rows:
            try:
                if json.loads(line)["step"] <= run.step:
                    keep.append(line)
            except (ValueError, KeyError):
                break  # a row cut by a crash: drop it and all after
        atomic_write(metrics, lambda f: f.write("".join(r + "\n" for r in keep).encode()))


def train(run: Run, hooks=(), progress: bool = True, on_log=None) -> dict:
    """Train ``run`` from ``run.step`` to ``cfg.steps``. Returns the last logged row."""
    cfg, model, task = run.cfg, run.model, run.task
    amp = run.device.type == "cuda"
    batches = Batches(task, cfg.batch_size, cfg.seed, run.device)
    if cfg.compile:
        model = torch.compile(model)
    weights = weight_matrices(model)
    threshold = cfg.beta_lasso * cfg.l1
    last_row: dict = {}
    metrics_f = open(run.out / "metrics.jsonl", "a")
    bar = _progress(cfg, progress, run.step)
    t0, step0 = time.perf_counter(), run.step

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
            row.update(hook(step, _raw(model)))
        bad = [k for k in ("train_loss", "test_loss") if k in row and not math.isfinite(row[k])]
        metrics_f.write(json.dumps(row) + "\n")
        metrics_f.flush()
        if bad and cfg.on_nan == "stop":
            raise DivergenceError(f"{bad[0]} became {row[bad[0]]} at step {step}")
        if on_log:
            on_log(row)
        return row

    try:
        if run.step == 0:
            last_row = log(0, True)
            run.checkpoint(0)
        model.train()
        for step in range(run.step, cfg.steps):
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
                if bar:
                    bar.update(done, last_row)
            if done in run.ckpt_steps:
                run.checkpoint(done)
    finally:
        metrics_f.close()
        if bar:
            bar.close()
    elapsed = time.perf_counter() - t0
    last_row = dict(last_row)
    last_row["seconds"] = elapsed
    last_row["samples_per_s"] = (cfg.steps - step0) * batches.B / max(elapsed, 1e-9)
    return last_row


class _Bar:
    def __init__(self, cfg, start):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn(f"{cfg.model} on {cfg.task}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
        self.t = self.p.add_task("train", total=cfg.steps, completed=start, info="")
        self.p.start()

    def update(self, step, row):
        info = f"loss {row.get('train_loss', float('nan')):.4f}"
        if "test_acc" in row:
            info += f" acc {row['test_acc']:.3f}"
        self.p.update(self.t, completed=step, info=info)

    def close(self):
        self.p.stop()


def _progress(cfg, enabled, start):
    return _Bar(cfg, start) if enabled else None


def run_training(cfg: RunConfig, out, hooks=(), progress: bool = True, resume: bool = False) -> dict:
    """Set up, write the run folder, train; the library entry point behind ``probe train``."""
    out = Path(out)
    if not resume and (out / "metrics.jsonl").exists():
        raise ConfigError(f"--out {out}: already holds a run (use --resume {out} to continue it, or another --out)")
    run = setup(cfg, out)
    if resume:
        restore(run)
    else:
        write_run_files(run)
    return train(run, hooks=hooks, progress=progress)
