import json

import pytest
from typer.testing import CliRunner

from probe.cli import app

runner = CliRunner()
TINY = ["--task", "mnist1d", "--width", "8", "--depth", "1", "--steps", "40", "--eval-every", "20", "--log-every", "10",
        "--checkpoints", "3", "-q"]


@pytest.mark.slow
def test_train_writes_a_run_folder_and_a_summary_line(tmp_path):
    res = runner.invoke(app, ["train", *TINY, "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "mlp on mnist1d: test_acc" in res.output and str(tmp_path / "r") in res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["width"] == 8 and cfg["steps"] == 40 and cfg["task"] == "mnist1d"
    assert (tmp_path / "r" / "checkpoints" / "step_40.pt").exists()


@pytest.mark.slow
def test_options_map_onto_config_fields(tmp_path):
    res = runner.invoke(app, ["train", *TINY[2:], "--task", "mnist1d-shuffled", "--out", str(tmp_path / "r"), "--model", "cnn", "--model-opt", "channels=3",
                              "--model-opt", "kernel=3", "--task-opt", "perm_seed=2", "--optimizer", "sgd", "--lr", "0.05",
                              "--momentum", "0.9", "--weight-decay", "1e-4", "--seed", "7", "--batch-size", "32",
                              "--param", "standard", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model_opts"] == {"channels": 3, "kernel": 3} and cfg["task_opts"] == {"perm_seed": 2}
    assert (cfg["optimizer"], cfg["lr"], cfg["momentum"], cfg["weight_decay"], cfg["seed"], cfg["batch_size"]) == \
        ("sgd", 0.05, 0.9, 1e-4, 7, 32)


@pytest.mark.slow
def test_config_file_and_flags_override_it(tmp_path):
    (tmp_path / "c.toml").write_text('task = "mnist1d"\nwidth = 12\ndepth = 1\nsteps = 30\nlr = 0.02\n'
                                     'eval-every = 10\n[model_opts]\nactivation = "tanh"\n')
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.toml"), "--steps", "20", "-q", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["width"], cfg["steps"], cfg["lr"], cfg["eval_every"]) == (12, 20, 0.02, 10)
    assert cfg["model_opts"] == {"activation": "tanh"}
    # and the stored config.json reruns the run
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "r" / "config.json"), "-q", "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == (tmp_path / "r2" / "metrics.jsonl").read_text()


def test_tasks_and_models_list_what_exists():
    res = runner.invoke(app, ["tasks"])
    assert res.exit_code == 0 and all(t in res.output for t in ("mnist1d", "nlgp-gauss", "cifar10", "npz:PATH"))
    res = runner.invoke(app, ["tasks", "nlgp"])
    assert res.exit_code == 0 and "gain" in res.output and "3.0" in res.output
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and all(m in res.output for m in ("mlp", "cnn", "lcn", "linear"))
    res = runner.invoke(app, ["models", "cnn"])
    assert res.exit_code == 0 and "kernel" in res.output


@pytest.mark.parametrize("args,message", [
    (["train", "--task", "mnist2d"], "valid tasks"),
    (["train", "--task", "mnist1d", "--model", "resnet"], "valid models"),
    (["train", "--task", "mnist1d", "--optimizer", "lbfgs"], "--optimizer must be one of sgd, adam, adamw"),
    (["train", "--task", "mnist1d", "--width", "0"], "--width must be a positive integer"),
    (["train", "--task", "mnist1d", "--task-opt", "nonsense"], "KEY=VALUE"),
    (["train"], "--task is required"),
    (["tasks", "nope"], "valid tasks"),
])
def test_bad_options_get_one_line_and_exit_code_2(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
