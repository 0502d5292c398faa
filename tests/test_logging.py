"""--log: TensorBoard and wandb (offline, no network) beside each other, each with the run config as hparams."""

from __future__ import annotations

import builtins
import json

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.run.loop import log_targets, run_hparams

runner = CliRunner()
TINY = ["--task", "mnist1d", "--width", "8", "--depth", "1", "--steps", "20", "--eval-every", "10", "--log-every", "10",
        "--checkpoints", "2", "-q"]


def test_run_hparams_is_the_config_flat():
    cfg = RunConfig(task="mnist1d", width=8, task_opts={"n": 3}, model_opts={"bias": False})
    hp = run_hparams(cfg)
    assert hp["width"] == 8 and hp["task"] == "mnist1d" and hp["task_opts.n"] == 3 and hp["model_opts.bias"] is False
    assert all(isinstance(v, (bool, int, float, str)) for v in hp.values())
    assert set(k.split(".")[0] for k in hp) == set(cfg.to_dict())


def test_log_takes_one_target_or_a_list():
    assert log_targets(RunConfig(log="tensorboard,wandb")) == ["tensorboard", "wandb"]
    assert log_targets(RunConfig(log="none")) == []
    with pytest.raises(ConfigError, match="--log must be one of none, tensorboard, wandb; got 'mlflow'"):
        RunConfig(log="wandb,mlflow")


@pytest.mark.slow
def test_log_wandb_without_the_package_is_one_line(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_wandb(name, *a, **k):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    res = runner.invoke(app, ["train", *TINY, "--log", "wandb", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--log wandb needs the wandb package" in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_tensorboard_and_wandb_offline_get_every_row_and_the_config(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", *TINY, "--log", "tensorboard,wandb", "--out", str(out)])
    assert res.exit_code == 0, res.output
    # TensorBoard: the hparams session carries the config
    hp = None
    for f in (out / "tensorboard").glob("events.*"):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                if v.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                    hp = data.session_start_info.hparams
    assert hp is not None and hp["width"].number_value == 8 and hp["task"].string_value == "mnist1d"
    # wandb: one offline run under RUN/wandb with the id probe keeps, holding the rows' keys and the config
    run_id = (out / "wandb" / "probe_run_id").read_text().strip()
    (record,) = (out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    data = record.read_bytes()
    assert b"train_loss" in data and b"test_acc" in data and b"width" in data and b"mnist1d" in data
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 3


@pytest.mark.slow
def test_log_wandb_without_an_account_is_one_line_and_the_folder_takes_a_retry(tmp_path):
    """Before: wandb.errors.UsageError ("No API key configured") as a traceback, and the run folder it left (with
    wandb/ in it) refused the retry with WANDB_MODE=offline as holding files that are not a run's. Each in a process
    of its own, as a user's would be (wandb keeps the settings of the first run it set up in a process)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc, no wandb settings
    args = [sys.executable, "-m", "probe", "train", "--task", "mnist1d", "--width", "8", "--depth", "1", "--steps",
            "4", "-q", "--log", "wandb", "--out", str(tmp_path / "r")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: --log wandb:") and "WANDB_MODE=offline" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**env, "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr
