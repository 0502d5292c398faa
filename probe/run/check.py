"""`probe check RUN`: verify a whole run folder (docs/design.md §5) and say what is wrong, file by file.

What is checked, in the order it is reported:

- ``config.json`` is a valid RunConfig; ``task.json`` a JSON object with the geometry;
- ``.lock``: a writer still at work (then what follows may change under us) or a stale lock of a process gone;
- ``metrics.jsonl``: every line a JSON object with an integer step, steps strictly increasing (no row twice),
  every row an uninterrupted run writes up to the last checkpoint present, losses finite (unless the run was
  trained with ``--on-nan continue``); rows after the last checkpoint are noted (``--resume`` drops them);
- ``checkpoints/step_N.pt``: each loads safely and passes its checksums (the damaged tensor is named), is a probe
  checkpoint with the training state, holds step N, the run's config and geometry, finite weights (unless
  ``--on-nan continue``); the log-spaced steps up to the last are all there, step 0 included; a checkpoint off
  that schedule can only be the last (where an interrupt stopped the run);
- ``reference.json`` (tracked runs that finished) is there and readable; leftover temporary files are noted;
- what was written after the checkpoints: a metrics row past a scheduled checkpoint step (or ``reference.json``) is
  written only once that checkpoint is on disk, so a scheduled checkpoint missing below them was deleted or lost
  (:func:`_lost_checkpoints`); each checkpoint's optimizer, schedule, RNG and loss accumulator are checked as
  ``--resume`` checks them (:func:`_training_state_problem`).

Findings are ``ok``, ``note`` (worth knowing, nothing wrong) or ``problem``; :func:`check_run` returns them, the CLI
prints them and exits 1 when there is a problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from probe.config import ConfigError, RunConfig
from probe.geometry import Geometry
from probe.models import build_model
from probe.run.loop import lr_lambda, make_optimizer
from probe.tasks import task_shells
from probe.run.checkpoint import (CHECKSUMS, TEMP_MARK, CheckpointError, checkpoint_steps, is_probe_checkpoint,
                                  list_checkpoints, load_checkpoint, state_dict_mismatch)
from probe.run.errors import first_line
from probe.run.folder import read_json_file
from probe.run.lock import LOCK_FILE, lock_holder
from probe.run.metrics_file import DAMAGED_FILE, METRICS_FILE, log_steps, parse_metrics, read_metrics
from probe.run.resume import RESUME_KEYS, check_resume_state
from probe.run.state import Run
from probe.run.tracking import DATA_TRACKS, REFERENCE_FILE, parse_track

OK, NOTE, PROBLEM = "ok", "note", "problem"


@dataclass
class Finding:
    level: str  # ok, note or problem
    what: str  # the file (relative to the run folder) or part
    message: str


@dataclass
class CheckReport:
    """What :func:`check_run` found in one run folder."""

    run: Path
    findings: list[Finding] = field(default_factory=list)
    state: str = "unknown"  # done, partial or fresh

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == PROBLEM]

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, level: str, what: str, message: str) -> None:
        self.findings.append(Finding(level, what, message))

    def lines(self) -> list[str]:
        """The findings as aligned lines, then a verdict."""
        width = max((len(f.what) for f in self.findings), default=0)
        out = [f"  {f.level:<8} {f.what:<{width}}  {f.message}" for f in self.findings]
        n = len(self.problems)
        verdict = "sound" if not n else f"{n} problem{'s' if n > 1 else ''}"
        out.append(f"{self.run}: {verdict} ({self.state})")
        return out


def check_run(run_dir) -> CheckReport:
    """Verify the run folder ``run_dir`` (module docstring). Raises ConfigError when it is not a run folder at all
    (no config.json and no checkpoints)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"{run}: not a run folder (no such folder)")
    ckpts = list_checkpoints(run)
    if not (run / "config.json").exists() and not ckpts:
        raise ConfigError(f"{run}: not a run folder (no config.json, no checkpoints)")
    rep = CheckReport(run)
    cfg = _config(rep)
    geometry = _task(rep)
    _lock(rep)
    last = ckpts[-1][0] if ckpts else None
    if cfg is not None:
        _metrics(rep, cfg, last)
    lost = _lost_checkpoints(rep, cfg, ckpts) if cfg is not None else False
    _checkpoints(rep, cfg, geometry, ckpts, lost)
    if cfg is not None:
        rep.state = "checkpoints lost" if lost else "done" if last == cfg.steps else \
            "partial, `probe train --resume` continues it" if ckpts else "fresh, no checkpoint yet"
        _references(rep, cfg, last)
    temps = [p.relative_to(run) for folder in (run, run / "checkpoints") if folder.is_dir()
             for p in folder.glob(f".*{TEMP_MARK}*")]
    if temps:
        rep.add(NOTE, "temporary files", f"{len(temps)} left by an interrupted write ({temps[0]}); "
                                         "`probe train --resume` removes them")
    return rep


def _config(rep: CheckReport) -> RunConfig | None:
    path = rep.run / "config.json"
    try:
        cfg = RunConfig.from_dict(read_json_file(path, "the run's config"), source=str(path))
    except ConfigError as e:
        rep.add(PROBLEM, "config.json", _without(str(e), str(path)))
        return None
    rep.add(OK, "config.json", f"{cfg.model} on {cfg.task}, {cfg.steps} steps, seed {cfg.seed}")
    return cfg


def _task(rep: CheckReport) -> dict | None:
    path = rep.run / "task.json"
    try:
        meta = read_json_file(path, "the task's geometry and facts")
        geometry = meta["geometry"]
        if not isinstance(geometry, dict):
            raise KeyError
    except ConfigError as e:
        rep.add(PROBLEM, "task.json", _without(str(e), str(path)))
        return None
    except KeyError:
        rep.add(PROBLEM, "task.json", "has no geometry")
        return None
    rep.add(OK, "task.json", f"geometry {geometry.get('channels')} x {geometry.get('spatial')}, "
                             f"{meta.get('n_train')} training examples")
    return geometry


def _lock(rep: CheckReport) -> None:
    who = lock_holder(rep.run)
    if who is None:
        return
    if "stale" in who:
        rep.add(NOTE, LOCK_FILE, f"a stale lock ({who}); the next writer takes it over")
    else:
        rep.add(NOTE, LOCK_FILE, f"being written now ({who}): what follows may change while it runs")


def _metrics(rep: CheckReport, cfg: RunConfig, last: int | None) -> None:
    path = rep.run / METRICS_FILE
    if not path.exists():
        rep.add(PROBLEM if last is not None else NOTE, METRICS_FILE, "missing")
        return
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        rep.add(PROBLEM, METRICS_FILE, f"cannot read it ({e.strerror or e})")
        return
    rows, damaged = parse_metrics(text)
    bad = [f"line {b.number} {b.reason}" + (" (cut short by a crash?)" if not b.whole else "") for b in damaged]
    for b in bad[:3]:
        rep.add(PROBLEM, METRICS_FILE, b)
    steps = [r["step"] for r in rows]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        rep.add(PROBLEM, METRICS_FILE, f"step(s) {_few(repeated)} logged more than once")
    disorder = [b for a, b in zip(steps, steps[1:]) if b < a]
    if disorder:
        rep.add(PROBLEM, METRICS_FILE, f"steps out of order (step {disorder[0]} after a later one)")
    if last is not None:
        missing = [s for s in log_steps(cfg, last) if s not in set(steps)]
        if missing:
            rep.add(PROBLEM, METRICS_FILE, f"row(s) of step {_few(missing)} missing (up to the last checkpoint, "
                                           f"step {last})")
        after = [s for s in steps if s > last]
        if after:
            rep.add(NOTE, METRICS_FILE, f"{len(after)} row(s) after the last checkpoint (step {last}); "
                                        "`probe train --resume` drops and rewrites them")
    nonfinite = [r["step"] for r in rows for k in ("train_loss", "test_loss")
                 if isinstance(r.get(k), float) and not math.isfinite(r[k])]
    if nonfinite:
        level = NOTE if cfg.on_nan == "continue" or nonfinite[0] == steps[-1] else PROBLEM
        rep.add(level, METRICS_FILE, f"the loss is NaN or inf from step {nonfinite[0]} (training diverged)")
    if (rep.run / DAMAGED_FILE).is_file():
        rep.add(NOTE, METRICS_FILE, f"damaged lines that `probe train --resume` kept aside are in {DAMAGED_FILE}")
    if not (bad or repeated or disorder or (last is not None and missing)):
        span = f", steps {steps[0]}..{steps[-1]}" if steps else ""
        rep.add(OK, METRICS_FILE, f"{len(rows)} rows{span}, none missing or repeated")


def _lost_checkpoints(rep: CheckReport, cfg: RunConfig, ckpts) -> bool:
    """Cross-check the checkpoints against what the run wrote after them: a row of metrics.jsonl at a step past a
    scheduled checkpoint step k is written only once checkpoint k is on disk (row 0 comes before step_0.pt, but
    any later row after it), and reference.json only after the last checkpoint. A scheduled checkpoint missing
    below that evidence was deleted (or ``checkpoints/`` replaced): a problem, whatever else is there. Returns
    whether one is."""
    folder = rep.run / "checkpoints"
    if folder.exists() and not folder.is_dir():
        rep.add(PROBLEM, "checkpoints", "is not a folder (replaced by a file?): the run's checkpoints are gone")
    rows = read_metrics(rep.run)
    reached = max((r["step"] for r in rows), default=-1)  # checkpoints scheduled below it were written
    evidence = f"metrics.jsonl has rows up to step {reached}, written after them"
    try:
        ref = json.loads((rep.run / REFERENCE_FILE).read_text())
        ref_step = ref.get("step") if isinstance(ref, dict) else None
    except (OSError, ValueError, RecursionError):
        ref_step = None
    if isinstance(ref_step, int) and not isinstance(ref_step, bool) and ref_step >= reached:
        reached = ref_step + 1  # written after its step's checkpoint
        evidence = f"{REFERENCE_FILE} was written after the checkpoint of step {ref_step}"
    have = {s for s, _ in ckpts}
    last = max(have, default=-1)  # (missing ones below the last checkpoint: _checkpoints reports them)
    gone = [s for s in checkpoint_steps(cfg.steps, cfg.checkpoints) if last < s < reached]
    if not gone:
        return False
    rep.add(PROBLEM, "checkpoints", f"step(s) {_few(gone)} missing though {evidence}: deleted or lost")
    return True


def _checkpoints(rep: CheckReport, cfg: RunConfig | None, geometry: dict | None, ckpts, lost: bool = False) -> None:
    if not ckpts:
        if not lost:
            rep.add(NOTE, "checkpoints", "none yet")
        return
    cfg_dict = cfg.to_dict() if cfg is not None else None
    verified, unverified, broken = 0, 0, 0
    for step, path in ckpts:
        what = str(path.relative_to(rep.run))
        try:
            ck = load_checkpoint(path)  # checksums verified here
        except CheckpointError as e:
            rep.add(PROBLEM, what, _without(str(e), f"checkpoint {path}"))
            broken += 1
            continue
        missing = [k for k in RESUME_KEYS if not isinstance(ck, dict) or k not in ck]
        if not is_probe_checkpoint(ck) or missing:
            rep.add(PROBLEM, what,
                    f"not a probe checkpoint with training state (missing {', '.join(missing) or 'format'})")
            broken += 1
            continue
        problem = _checkpoint_problem(ck, step, cfg, cfg_dict, geometry)
        if problem is None and cfg is not None:
            problem = _training_state_problem(rep, ck, step, cfg, path)
        if problem:
            rep.add(PROBLEM, what, problem)
            broken += 1
        elif CHECKSUMS in ck:
            verified += 1
        else:
            unverified += 1
    have = [s for s, _ in ckpts]
    if cfg is not None:
        schedule = checkpoint_steps(cfg.steps, cfg.checkpoints)
        missing = [s for s in schedule if s <= have[-1] and s not in have]
        if missing:
            rep.add(PROBLEM, "checkpoints", f"step(s) {_few(missing)} of the schedule missing")
        off = [s for s in have[:-1] if s not in schedule]
        if off:
            rep.add(PROBLEM, "checkpoints", f"step(s) {_few(off)} are off the log-spaced schedule and not the last")
    if unverified:
        rep.add(NOTE, "checkpoints", f"{unverified} without checksums (written before probe had them): loaded, "
                                     "not verified")
    if not broken:
        rep.add(OK, "checkpoints",
                f"{len(have)} (steps {_few(have, 8)})" + (", checksums verified" if verified else ""))


def _checkpoint_problem(ck: dict, step: int, cfg, cfg_dict, geometry) -> str | None:
    if ck.get("step") != step:
        return f"holds step {ck.get('step')!r}, not the {step} of its name"
    if cfg_dict is not None:
        if not isinstance(ck.get("config"), dict):
            return "its config is not a dict"
        try:  # as a RunConfig: keys a later probe added take their defaults on both sides
            stored = RunConfig.from_dict(ck.get("config"), source="its config").to_dict()
        except ConfigError as e:
            return str(e)
        diff = [k for k, v in cfg_dict.items() if k not in ("device", "threads") and stored.get(k) != v]
        if diff:
            return f"written with another config than config.json (differs in {', '.join(diff)})"
        if not 0 <= step <= cfg.steps:
            return f"its step is outside [0, {cfg.steps}]"
    if geometry is not None and ck.get("geometry") != geometry:
        return "its geometry is not task.json's"
    sd = ck.get("state_dict")
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        return "its state_dict is not a dict of tensors"
    if cfg is None or cfg.on_nan == "stop":
        bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            return f"{bad[0]} holds NaN or inf"
    return None


def _training_state_problem(rep: CheckReport, ck: dict, step: int, cfg: RunConfig, path: Path) -> str | None:
    """What keeps the training state of ``ck`` (optimizer, schedule, RNG, loss accumulator) from continuing the
    run, checked as ``--resume`` checks it (:func:`probe.run.resume.check_resume_state`) against the model, optimizer
    and schedule rebuilt from config.json without the task's data; None when it fits, or when the model cannot be
    rebuilt without the data (then a note says so, once)."""
    if not hasattr(rep, "_model"):
        rep._model = None
        try:
            meta_file = rep.run / "task.json"
            meta = read_json_file(meta_file, "the run's task") if meta_file.is_file() else {}
            with torch.random.fork_rng(devices=[]):
                for shell in task_shells(Geometry.from_dict(ck["geometry"]), ck["state_dict"], meta):
                    try:
                        model = build_model(cfg.model, shell, cfg.width, cfg.depth, cfg.param, cfg.model_opts)
                    except (RuntimeError, ValueError, KeyError, TypeError, ConfigError):
                        continue
                    if state_dict_mismatch(model, ck["state_dict"]) is None:
                        rep._model = model
                        break
        except (KeyError, TypeError, ValueError, OSError):
            pass
        if rep._model is None:
            rep.add(NOTE, "checkpoints", "optimizer, schedule and random state not checked: the model could not be "
                                         "rebuilt from the config without the task's data")
    if rep._model is None:
        return None
    device = torch.device("cpu")
    optimizer = make_optimizer(rep._model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    run = Run(cfg, rep.run, None, rep._model, optimizer, scheduler, device)
    try:
        return check_resume_state(run, ck, step)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        return f"its training state is malformed ({first_line(e)})"


def _references(rep: CheckReport, cfg: RunConfig, last: int | None) -> None:
    path = rep.run / REFERENCE_FILE
    try:  # the data tracks (clone_acc) have no references: a run tracking only them writes no reference.json
        tracked = tuple(n for n in parse_track(cfg.track) if n not in DATA_TRACKS)
    except ConfigError:
        tracked = ()
    if not path.exists():
        if tracked and last == cfg.steps:
            rep.add(PROBLEM, REFERENCE_FILE, f"missing for a finished tracked run; `probe train --resume {rep.run}` "
                                             "writes it")
        return
    try:
        d = read_json_file(path, "the tracked measures' references")
        if not all(isinstance(d.get(r), dict) for r in ("init", "gaussian", "permuted")):
            raise ConfigError("has no init, gaussian and permuted references")
    except ConfigError as e:
        rep.add(PROBLEM, REFERENCE_FILE, _without(str(e), str(path)))
        return
    rep.add(OK, REFERENCE_FILE, f"references of {len(d['init'])} measures")


def _without(msg: str, prefix: str) -> str:
    """A message without its leading "PATH: " (the finding names the file already)."""
    return first_line(ValueError(msg[len(prefix) + 2:] if msg.startswith(prefix + ": ") else msg))


def _few(values, n: int = 5) -> str:
    values = list(values)
    return ", ".join(map(str, values[:n])) + (f" and {len(values) - n} more" if len(values) > n else "")
