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
    res = runner.invoke(app, ["train", *TINY[6:], "--task", "mnist1d-shuffled", "--out", str(tmp_path / "r"),
                              "--model", "cnn", "--model-opt", "channels=3", "--model-opt", "kernel=3",
                              "--task-opt", "perm_seed=2", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
                              "--weight-decay", "1e-4", "--seed", "7", "--batch-size", "32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model_opts"] == {"channels": 3, "kernel": 3} and cfg["task_opts"] == {"perm_seed": 2}
    assert (cfg["optimizer"], cfg["lr"], cfg["momentum"], cfg["weight_decay"], cfg["seed"], cfg["batch_size"]) == \
        ("sgd", 0.05, 0.9, 1e-4, 7, 32)


@pytest.mark.slow
def test_config_file_and_flags_override_it(tmp_path):
    (tmp_path / "c.toml").write_text('task = "mnist1d"\nwidth = 12\ndepth = 1\nsteps = 30\nlr = 0.02\n'
                                     'eval-every = 10\n[model_opts]\nactivation = "tanh"\n')
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.toml"), "--steps", "20", "-q",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["width"], cfg["steps"], cfg["lr"], cfg["eval_every"]) == (12, 20, 0.02, 10)
    assert cfg["model_opts"] == {"activation": "tanh"}
    # and the stored config.json reruns the run
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "r" / "config.json"), "-q",
                              "--out", str(tmp_path / "r2")])
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


def test_version():
    from probe import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"probe {__version__}"


@pytest.mark.parametrize("model, flags, named", [("cnn", ["--width", "7", "--depth", "9"], "--width, --depth"),
                                                 ("linear", ["--param", "mean-field"], "--param")])
def test_options_a_model_does_not_use_are_refused_by_name(tmp_path, model, flags, named):
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--model", model, *flags, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and f"{named}: model {model} does not use" in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_log_tensorboard_writes_every_row_as_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = runner.invoke(app, ["train", *TINY, "--log", "tensorboard", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train_loss")]
    assert logged == [(r["step"], pytest.approx(r["train_loss"], rel=1e-6)) for r in rows if "train_loss" in r]
    assert {"test_acc", "lr"} <= set(events.Tags()["scalars"])


@pytest.mark.slow
def test_log_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    res = runner.invoke(app, ["train", *TINY, "--log", "tensorboard", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--log tensorboard needs the tensorboard package" in res.output
    assert not (tmp_path / "r").exists()
