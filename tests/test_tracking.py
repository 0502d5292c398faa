"""Structure tracking inside the training loop (probe/run/tracking.py)."""

import json
import os
import signal

import numpy as np
import pytest
import torch

import probe.run.tracking
import probe.run.loop
from probe.config import ConfigError, RunConfig
from probe.metrics import first_layer_measures
from probe.analysis.load import first_layer
from probe.metrics.nulls import init_seeds
from probe.run.tracking import DEFAULT_TRACK, TRACKABLE, Tracker, first_layer_at_init, parse_track
from probe.run.errors import TrainingInterrupted
from probe.run.loop import run_training

TINY = dict(task="mnist1d", width=16, depth=1, steps=120, batch_size=50, eval_every=60, log_every=20, checkpoints=3)


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def tracked_steps(run, key):
    return [r["step"] for r in rows(run) if key in r]


@pytest.mark.slow
def test_default_set_is_tracked_at_every_evaluation_step(tmp_path):
    run_training(RunConfig(**TINY), tmp_path / "r", progress=False)
    for key in DEFAULT_TRACK:
        assert tracked_steps(tmp_path / "r", key) == [0, 60, 120]
    first = rows(tmp_path / "r")[0]
    assert first["movement"] == 0.0 and 1 / 40 <= first["ipr"] <= 1


@pytest.mark.slow
def test_named_measures_at_multiples_of_track_every_and_at_both_ends(tmp_path):
    cfg = RunConfig(**{**TINY, "steps": 130, "track": "ipr, shift_match,ipr", "track_every": 40})
    run_training(cfg, tmp_path / "r", progress=False)
    assert tracked_steps(tmp_path / "r", "ipr") == [0, 40, 80, 120, 130]
    assert tracked_steps(tmp_path / "r", "shift_match_units") == [0, 40, 80, 120, 130]
    assert not any("hoyer" in r or "movement" in r for r in rows(tmp_path / "r"))


@pytest.mark.slow
def test_tracked_values_are_the_measures_of_the_checkpointed_weights(tmp_path):
    run_training(RunConfig(**{**TINY, "track": "ipr,window_mass_3,movement"}), tmp_path / "r", progress=False)
    ck0, ck = (torch.load(tmp_path / "r" / "checkpoints" / f"step_{s}.pt", weights_only=True) for s in (0, 120))
    W0, W = ck0["state_dict"]["layers.0.weight"].numpy(), ck["state_dict"]["layers.0.weight"].numpy()
    from probe.geometry import Geometry

    want = first_layer_measures(W, Geometry.from_dict(ck["geometry"]), ["ipr", "window_mass_3"], W0)
    got = rows(tmp_path / "r")[-1]
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-6)


@pytest.mark.slow
def test_references_are_written_once_at_the_last_step(tmp_path, monkeypatch):
    calls = []
    real = probe.run.tracking.write_references
    monkeypatch.setattr(probe.run.tracking, "write_references", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    run_training(RunConfig(**{**TINY, "track": "ipr,window_mass_3,alpha"}), tmp_path / "r", progress=False)
    assert calls == [120]
    ref = json.loads((tmp_path / "r" / "reference.json").read_text())
    assert ref["step"] == 120 and set(ref) == {"step", "seed", "init", "init_seeds", "gaussian", "permuted", "phase"}
    for key in ("init", "gaussian", "permuted"):
        assert set(ref[key]) == {"ipr", "window_mass_3", "alpha"}
    for key in ("init_seeds", "phase"):  # only the measures they are drawn for, and no spectra
        assert set(ref[key]) == {"ipr", "window_mass_3"}
    last = rows(tmp_path / "r")[-1]
    # permuting input positions keeps each field's concentration and the singular values
    assert ref["permuted"]["ipr"] == pytest.approx(last["ipr"])
    assert ref["permuted"]["alpha"] == pytest.approx(last["alpha"])
    assert ref["init"]["ipr"] == pytest.approx(rows(tmp_path / "r")[0]["ipr"])
    # init_seeds: the MLP's own initializer on other seeds, the mean of its first layers there
    cfg = RunConfig(**TINY)
    task = probe.run.loop.setup(cfg, tmp_path / "x").task
    draws = [first_layer_measures(first_layer_at_init(cfg, task, s), task.geometry, ["ipr"])["ipr"]
             for s in init_seeds(cfg.seed)]
    assert ref["init_seeds"]["ipr"] == pytest.approx(np.mean(draws))
    # built at the run's own seed it is the run's own step 0
    np.testing.assert_allclose(first_layer_at_init(cfg, task, cfg.seed), first_layer(tmp_path / "r", 0)[0], rtol=1e-6)


def test_unknown_measure_is_rejected_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown measure\(s\) iprr; valid: default, none, ipr"):
        run_training(RunConfig(**{**TINY, "track": "ipr,iprr"}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_track_every_off_the_logged_steps_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="--track-every 30: .* multiple of --log-every"):
        run_training(RunConfig(**{**TINY, "track_every": 30}), tmp_path / "r", progress=False)


@pytest.mark.slow
def test_track_none_adds_no_hook_and_no_references(tmp_path, monkeypatch):
    monkeypatch.setattr(probe.run.tracking.Tracker, "__call__", lambda *a: pytest.fail("tracker called"))
    run_training(RunConfig(**{**TINY, "track": "none"}), tmp_path / "r", progress=False)
    assert not any(k in r for r in rows(tmp_path / "r") for k in TRACKABLE)
    assert not (tmp_path / "r" / "reference.json").exists()


def test_parse_track_expands_default_and_keeps_order():
    assert parse_track("default") == DEFAULT_TRACK
    assert parse_track(" none ") == () == parse_track("")
    assert parse_track("hoyer,default,ipr") == ("hoyer", *[n for n in DEFAULT_TRACK if n != "hoyer"])


@pytest.mark.slow
def test_controls_are_tracked_through_their_dense_first_layer(tmp_path):
    cfg = RunConfig(**{**TINY, "model": "cnn", "steps": 20, "eval_every": 20, "track": "ipr,window_mass_5"})
    run_training(cfg, tmp_path / "r", progress=False)
    # a CNN's dense first layer is local by construction: all of each field's mass sits in one kernel window
    assert rows(tmp_path / "r")[0]["window_mass_5"] == pytest.approx(1.0)


@pytest.mark.slow
def test_resumed_run_measures_movement_against_its_step_0(tmp_path, monkeypatch):
    ref_run = tmp_path / "ref"
    run_training(RunConfig(**TINY), ref_run, progress=False)
    real = probe.run.loop.Batches

    class Interrupting(real):
        def __call__(self, step):
            if step == 70:
                os.kill(os.getpid(), signal.SIGINT)
            return super().__call__(step)

    monkeypatch.setattr(probe.run.loop, "Batches", Interrupting)
    with pytest.raises(TrainingInterrupted):
        run_training(RunConfig(**TINY), tmp_path / "r", progress=False)
    monkeypatch.undo()
    run_training(RunConfig(**TINY), tmp_path / "r", progress=False, resume=True)
    assert rows(tmp_path / "r")[-1]["movement"] == rows(ref_run)[-1]["movement"] > 0


def test_tracker_is_silent_between_tracking_steps():
    cfg = RunConfig(**{**TINY, "track_every": 40})
    from probe.geometry import Geometry

    model = torch.nn.Linear(40, 4)
    model.first_layer_dense = lambda: model.weight
    t = Tracker(("ipr",), cfg, Geometry(1, (40,)), np.ones((4, 40)))
    assert t(20, model) == {} and set(t(40, model)) == {"ipr"}


def test_diverged_weights_are_tracked_as_nan():
    from probe.geometry import Geometry

    model = torch.nn.Linear(40, 4)
    model.first_layer_dense = lambda: model.weight * float("nan")
    t = Tracker(("ipr", "shift_match"), RunConfig(**TINY), Geometry(1, (40,)), np.ones((4, 40)))
    row = t(0, model)
    assert set(row) == {"ipr", "shift_match", "shift_match_units"} and all(v != v for v in row.values())


def test_a_pruned_away_layer_is_tracked_as_nan_with_its_movement():
    from probe.geometry import Geometry

    model = torch.nn.Linear(40, 4)
    model.first_layer_dense = lambda: torch.zeros(4, 40)
    t = Tracker(("ipr", "movement"), RunConfig(**TINY), Geometry(1, (40,)), np.ones((4, 40)))
    row = t(0, model)
    assert row["ipr"] != row["ipr"] and row["movement"] == pytest.approx(1.0)


@pytest.mark.slow
def test_a_sequence_task_tracks_only_what_applies_to_it(tmp_path):
    cfg = RunConfig(task="mqar", task_opts={"n_train": 64, "n_test": 32}, width=8, depth=1, steps=4, eval_every=2,
                    log_every=2, checkpoints=1, device="cpu")
    assert parse_track("default", "sequence") == ("movement",)
    run_training(cfg, tmp_path / "default", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "default" / "metrics.jsonl").read_text().splitlines()]
    assert "movement" in rows[-1] and not {"ipr", "window_mass_3", "hoyer"} & set(rows[-1])
    # an image measure asked for by name is refused in one line, before the run folder is made
    with pytest.raises(ConfigError, match=r"--track: ipr .* do not apply to a sequence task; it can track movement"):
        run_training(cfg.replace(track="ipr,movement"), tmp_path / "named", progress=False)
    assert not (tmp_path / "named").exists()
