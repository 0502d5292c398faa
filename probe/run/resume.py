"""Resuming a run from its last checkpoint (:func:`restore`), after checking the checkpoint's training state
against the run's config and its freshly built model, optimizer and schedule (:func:`check_resume_state`, which
``probe check`` uses too)."""

from __future__ import annotations

import json
import logging
import math
import os

import torch

from probe.config import ConfigError, RunConfig
from probe.run.checkpoint import (CheckpointError, atomic_write, check_rng_state, is_probe_checkpoint,
                                  list_checkpoints, load_checkpoint, remove_temp_files, set_rng_state,
                                  state_dict_mismatch)
from probe.run.errors import StorageError, first_line
from probe.run.metrics_file import DAMAGED_FILE, METRICS_FILE, parse_metrics, read_metrics_text
from probe.run.state import Run, raw_model
from probe.tasks import Task

log = logging.getLogger("probe.run")


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
    missing = [k for k in RESUME_KEYS if not isinstance(ck, dict) or k not in ck]
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
        try:
            text = read_metrics_text(run.out)
        except OSError:
            text = ""
        rows, bad = parse_metrics(text)
        damaged = [b.text for b in bad if b.whole]  # a last line cut short is the row a crash interrupted
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


RESUME_KEYS = ("config", "state_dict", "optimizer", "scheduler", "rng", "step", "loss_accum")


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
