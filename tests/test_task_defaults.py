"""Tasks know their kind and their own training settings; `probe tasks NAME` says what each option means."""

import json

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.config import RunConfig
from probe.sweep.spec import expand
from probe.tasks import SEQUENCE_TRAINING, config_for, task_specs
from probe.tasks.options import option_help

runner = CliRunner()


def test_every_task_option_is_described():
    missing = [(n, k) for n, s in task_specs().items() for k in s.options() if k != "path" and not option_help(n, k)]
    assert not missing, f"describe these in probe/tasks/options.py: {missing}"


def test_sequence_tasks_train_with_their_own_settings_unless_told_otherwise():
    assert config_for("mqar").optimizer == "adamw" and config_for("mqar").lr == 1e-3
    assert config_for("mqar", lr=0.05).lr == 0.05
    assert config_for("modadd").weight_decay == 1.0 and config_for("modadd").batch_size == 512
    assert config_for("mnist1d") == RunConfig(task="mnist1d")  # image tasks keep RunConfig's defaults


@pytest.mark.slow
def test_probe_train_and_sweeps_apply_the_task_defaults(tmp_path):
    res = runner.invoke(app, ["train", "--task", "mqar", "--task-opt", "n_train=64", "--task-opt", "n_test=32",
                              "--width", "8", "--depth", "1", "--steps", "2", "--lr", "0.003", "-q",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["optimizer"], cfg["batch_size"], cfg["lr"]) == ("adamw", 128, 0.003)
    sweep = expand({"name": "s", "base": {"steps": 5, "batch_size": 64},
                    "variants": [{"name": "seq", "task": "copy"}, {"name": "img", "task": "mnist1d"}]})
    seq, img = (r.config for r in sweep.runs)
    assert (seq["optimizer"], seq["lr"], seq["batch_size"]) == ("adamw", SEQUENCE_TRAINING["lr"], 64)
    assert (img["optimizer"], img["lr"]) == ("adam", RunConfig().lr)


@pytest.mark.parametrize("name", ["mqar", "mnist1d"])
def test_probe_tasks_name_shows_meanings_and_training_defaults(name):
    res = runner.invoke(app, ["tasks", name])
    assert res.exit_code == 0
    out = " ".join(res.output.split())
    assert "training examples" in out
    assert ("--optimizer adamw" in out) == (name == "mqar")
