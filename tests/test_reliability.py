"""Nothing is lost: interrupts, crashes, full disks and diverging runs (issue 8, items 1-3 and 6)."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import probe.run.folder
import probe.run.loop
from probe.run.checkpoint import checkpoint_steps, list_checkpoints, step_path
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.run.folder import TrainingInterrupted
from probe.run.loop import run_training

runner = CliRunner()
pytestmark = pytest.mark.slow  # every test trains, runs `probe train` or spawns one (tests/conftest.py)
TINY = dict(task="mnist1d", width=16, depth=1, steps=120, batch_size=50, eval_every=60, log_every=20, checkpoints=6)
ROOT = Path(__file__).resolve().parents[1]


def rows(run):
    return (run / "metrics.jsonl").read_text()


def ckpt(run, step):
    return torch.load(step_path(run, step), weights_only=True)


def assert_same_run(a: Path, b: Path):
    """Bit-identical metrics rows, checkpoint steps, weights and optimizer state."""
    assert rows(a) == rows(b)
    steps = [s for s, _ in list_checkpoints(a)]
    assert steps == [s for s, _ in list_checkpoints(b)]
    for s in steps:
        ca, cb = ckpt(a, s), ckpt(b, s)
        assert ca["state_dict"].keys() == cb["state_dict"].keys()
        for k in ca["state_dict"]:
            assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), (s, k)
    fa, fb = ckpt(a, steps[-1])["optimizer"]["state"], ckpt(b, steps[-1])["optimizer"]["state"]
    for i in fa:
        for k in fa[i]:
            assert torch.equal(fa[i][k], fb[i][k]), (i, k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, slow_setup):
    """The uninterrupted TINY run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run_training(RunConfig(**TINY), out, progress=False)
    return out


def signal_at(monkeypatch, steps, signum=signal.SIGINT):
    """Send ``signum`` to this process while the batch of each step in ``steps`` is drawn."""
    real = probe.run.loop.Batches

    class Signalling(real):
        def __call__(self, step):
            if step in steps:
                os.kill(os.getpid(), signum)
            return super().__call__(step)

    monkeypatch.setattr(probe.run.loop, "Batches", Signalling)


# -- 1. interruption ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("at", [36, 39, 10], ids=["between-logs", "at-a-log-step", "at-a-checkpoint-step"])
def test_interrupt_saves_the_current_step_and_resume_is_bit_identical(tmp_path, monkeypatch, reference, at):
    out = tmp_path / "r"
    signal_at(monkeypatch, {at})
    with pytest.raises(TrainingInterrupted) as info:
        run_training(RunConfig(**TINY), out, progress=False)
    stop = at + 1  # the signal lands during step `at`; the run stops at the next step boundary
    assert info.value.step == stop and info.value.signum == signal.SIGINT
    assert info.value.path == step_path(out, stop) and info.value.path.exists()
    assert ckpt(out, stop)["step"] == stop
    assert [s for s, _ in list_checkpoints(out)] == [s for s in checkpoint_steps(120, 6) if s < stop] + [stop]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers are put back

    monkeypatch.undo()
    run_training(RunConfig(**TINY), out, progress=False, resume=True)
    # same rows, same weights, and the same log-spaced checkpoints: the one written at the interrupt was only
    # a resume point and is gone once a later checkpoint exists
    assert_same_run(out, reference)


def test_sigterm_and_repeated_interrupts_resume_identically(tmp_path, monkeypatch, reference):
    out = tmp_path / "r"
    signal_at(monkeypatch, {50}, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        run_training(RunConfig(**TINY), out, progress=False)
    assert info.value.signum == signal.SIGTERM and info.value.step == 51
    signal_at(monkeypatch, {70})  # interrupted again after resuming
    with pytest.raises(TrainingInterrupted):
        run_training(RunConfig(**TINY), out, progress=False, resume=True)
    assert [s for s, _ in list_checkpoints(out)] == [0, 1, 3, 11, 36, 71]  # step_51 superseded by step_71
    monkeypatch.undo()
    run_training(RunConfig(**TINY), out, progress=False, resume=True)
    assert_same_run(out, reference)


def test_a_second_signal_stops_at_once_and_the_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, reference):
    out = tmp_path / "r"
    real = probe.run.loop.Batches

    class Twice(real):
        def __call__(self, step):
            if step == 50:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            return super().__call__(step)

    monkeypatch.setattr(probe.run.loop, "Batches", Twice)
    with pytest.raises(KeyboardInterrupt) as info:
        run_training(RunConfig(**TINY), out, progress=False)
    assert not isinstance(info.value, TrainingInterrupted)
    assert list_checkpoints(out)[-1][0] == 36  # no checkpoint for the forced stop
    monkeypatch.undo()
    run_training(RunConfig(**TINY), out, progress=False, resume=True)
    assert_same_run(out, reference)


CLI_ARGS = ["--task", "mnist1d", "--width", "16", "--depth", "1", "--steps", "600", "--batch-size", "50",
            "--eval-every", "200", "--log-every", "10", "--checkpoints", "8", "--device", "cpu", "-q"]


def _cli(*args):
    return [sys.executable, "-m", "probe.cli", *args]


def _wait_for_step(proc, metrics: Path, step: int, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"run ended before it was signalled: {proc.communicate()}")
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            if lines and lines[-1].endswith("}") and json.loads(lines[-1])["step"] >= step:
                return
        time.sleep(0.01)
    pytest.fail("run made no progress")


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory, slow_setup):
    """The same run as CLI_ARGS, uninterrupted and in this process: the comparison also checks that results do
    not depend on the process they were computed in."""
    out = tmp_path_factory.mktemp("cliref") / "run"
    cfg = RunConfig(task="mnist1d", width=16, depth=1, steps=600, batch_size=50, eval_every=200, log_every=10,
                    checkpoints=8, device="cpu")
    run_training(cfg, out, progress=False)
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    return out


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_cli_signalled_mid_run_saves_says_where_and_resumes_bit_identically(tmp_path, cli_reference, signum, code):
    out = tmp_path / "r"
    proc = subprocess.Popen(_cli("train", *CLI_ARGS, "--out", str(out)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_step(proc, out / "metrics.jsonl", 30)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert (out / "config.json").read_text() == (cli_reference / "config.json").read_text()
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    m = re.search(r"interrupted by (SIG\w+) at step (\d+): saved (\S+); continue with `probe train --resume (\S+)`",
                  stderr)
    assert m and m.group(1) == signal.Signals(signum).name and m.group(4) == str(out), stderr
    step = int(m.group(2))
    assert 30 <= step < 600 and Path(m.group(3)) == step_path(out, step) and ckpt(out, step)["step"] == step
    assert all(json.loads(r)["step"] <= step for r in rows(out).splitlines())

    res = subprocess.run(_cli("train", "--resume", str(out), "-q"), cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert_same_run(out, cli_reference)


# -- 2. crash safety ----------------------------------------------------------------------------------------
KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    import torch
    from probe.run.checkpoint import save_checkpoint

    def killed_midway(obj, f, *args, **kwargs):  # half a checkpoint reaches the disk, then kill -9
        f.write(b"PK\\x03\\x04" + b"\\0" * 5000)
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = killed_midway
    save_checkpoint(sys.argv[1], step=60, state_dict={})
""")


def test_kill_9_during_a_checkpoint_write_leaves_no_file_under_its_name(tmp_path, monkeypatch, reference):
    out = tmp_path / "r"
    signal_at(monkeypatch, {49})
    with pytest.raises(TrainingInterrupted):
        run_training(RunConfig(**TINY), out, progress=False)  # checkpoint at step 50
    monkeypatch.undo()
    target = step_path(out, 60)
    res = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(target)], cwd=ROOT, capture_output=True,
                         timeout=120)
    assert res.returncode == -signal.SIGKILL
    assert not target.exists()
    leftovers = list((out / "checkpoints").glob(".step_60.pt.tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 5000
    assert [s for s, _ in list_checkpoints(out)][-1] == 50  # the temp file is not a checkpoint

    run_training(RunConfig(**TINY), out, progress=False, resume=True)
    assert not list((out / "checkpoints").glob(".*"))  # stale temp files are cleared on resume
    assert_same_run(out, reference)


def test_resume_drops_metrics_rows_after_the_checkpoint_and_a_row_cut_by_a_crash(tmp_path, monkeypatch, reference):
    out = tmp_path / "r"
    signal_at(monkeypatch, {49})
    with pytest.raises(TrainingInterrupted):
        run_training(RunConfig(**TINY), out, progress=False)
    monkeypatch.undo()
    with open(out / "metrics.jsonl", "a") as f:  # rows a crashed process wrote after its last checkpoint
        f.write('{"step": 60, "train_loss": 1.0, "lr": 0.01}\n{"step": 80, "train_lo')
    run_training(RunConfig(**TINY), out, progress=False, resume=True)
    assert_same_run(out, reference)


def test_out_that_cannot_be_written_is_reported_before_training(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "run"
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--steps", "10", "-q", "--out", str(out)])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: --out {out}: cannot write there (Not a directory)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_out_is_reported_before_training(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        res = runner.invoke(app, ["train", "--task", "mnist1d", "--steps", "10", "-q", "--out", str(ro / "run")])
    finally:
        ro.chmod(0o700)
    assert res.exit_code == 2 and "cannot write there (Permission denied)" in res.output


def test_a_disk_too_full_for_the_checkpoints_is_reported_before_training(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(probe.run.folder.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 20_000))
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--width", "16", "--depth", "1", "-q", "--out", str(out)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert re.match(rf"error: --out {out}: the checkpoints need about [\d.]+ MB but only 0.0 MB is free", res.output)
    assert not (out / "metrics.jsonl").exists()


def test_disk_full_during_a_checkpoint_write_keeps_the_earlier_ones(tmp_path, monkeypatch, reference):
    real_save = torch.save

    def full_disk_at_36(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 36:
            f.write(b"\0" * 1000)  # part of it was written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_36)
    out = tmp_path / "r"
    args = ["train", "--task", "mnist1d", "--width", "16", "--depth", "1", "--steps", "120", "--batch-size", "50",
            "--eval-every", "60", "--log-every", "20", "--checkpoints", "6", "-q", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert res.output.strip() == (f"error: cannot write {step_path(out, 36)} (No space left on device); the checkpoints "
                                  f"before it are kept, continue with --resume {out} once there is room")
    assert [s for s, _ in list_checkpoints(out)] == [0, 1, 3, 11]
    assert not list((out / "checkpoints").glob(".*"))  # no temp file left behind
    assert ckpt(out, 11)["step"] == 11
    monkeypatch.undo()  # room again
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert_same_run(out, reference)


# -- 3. divergence ------------------------------------------------------------------------------------------
DIVERGING = dict(task="mnist1d", width=16, depth=1, steps=200, batch_size=50, optimizer="sgd", lr=1e3, log_every=50,
                 eval_every=100, checkpoints=30)  # the loss of step 8 is inf; checkpoints at 1, 2, 3, 4, 5, 7, 8, 10...


def _all_finite(run):
    for s, p in list_checkpoints(run):
        ck = torch.load(p, weights_only=True)
        assert all(torch.isfinite(v).all() for v in ck["state_dict"].values()), s
        assert torch.isfinite(ck["loss_accum"]["sum"]), s


def test_nan_loss_stops_with_one_line_and_keeps_only_finite_checkpoints(tmp_path):
    out = tmp_path / "r"
    args = ["train", "-q", "--out", str(out)] + [f"--{k.replace('_', '-')}={v}" for k, v in DIVERGING.items()]
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    last = list_checkpoints(out)[-1]
    assert res.output.strip() == (f"error: training diverged: train_loss became NaN or inf before step 8; stopped, last "
                                  f"good checkpoint {last[1]} (try a smaller --lr, or --on-nan continue to keep training)")
    # found at the first checkpoint step after the NaN, long before the first log step (50)
    assert last[0] == 7
    _all_finite(out)
    # resuming replays the same steps and stops the same way
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 1 and "training diverged" in res.output


def test_nan_at_a_log_step_is_reported_with_the_row_written(tmp_path):
    cfg = RunConfig(**{**DIVERGING, "checkpoints": 2, "log_every": 10})
    with pytest.raises(probe.run.folder.DivergenceError, match=r"train_loss became (nan|inf) at step 10; stopped, last good "
                                                          r"checkpoint .*step_0.pt"):
        run_training(cfg, tmp_path / "r", progress=False)
    assert json.loads(rows(tmp_path / "r").splitlines()[-1])["step"] == 10
    _all_finite(tmp_path / "r")


def test_on_nan_continue_trains_to_the_end(tmp_path):
    out = tmp_path / "r"
    args = ["train", "-q", "--out", str(out), "--on-nan", "continue"] + \
        [f"--{k.replace('_', '-')}={v}" for k, v in DIVERGING.items()]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    r = [json.loads(x) for x in rows(out).splitlines()]
    assert r[-1]["step"] == 200 and r[-1]["train_loss"] != r[-1]["train_loss"]  # NaN
    assert [s for s, _ in list_checkpoints(out)] == checkpoint_steps(200, 30)


# -- 6. reproducibility -------------------------------------------------------------------------------------
def test_same_seed_and_config_give_identical_runs_and_another_seed_does_not(tmp_path, reference):
    run_training(RunConfig(**TINY), tmp_path / "again", progress=False)
    assert_same_run(tmp_path / "again", reference)
    run_training(RunConfig(**{**TINY, "seed": 1}), tmp_path / "seed1", progress=False)
    assert rows(tmp_path / "seed1") != rows(reference)


def test_config_json_of_a_run_reruns_it(tmp_path, reference):
    res = runner.invoke(app, ["train", "--config", str(reference / "config.json"), "--out", str(tmp_path / "re"), "-q"])
    assert res.exit_code == 0, res.output
    assert_same_run(tmp_path / "re", reference)


def test_resume_refuses_a_checkpoint_written_with_another_config(tmp_path, monkeypatch):
    out = tmp_path / "r"
    signal_at(monkeypatch, {49})
    with pytest.raises(TrainingInterrupted):
        run_training(RunConfig(**TINY), out, progress=False)
    monkeypatch.undo()
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "lr": 0.5}))
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 2
    assert res.output.strip() == (f"error: checkpoint {step_path(out, 50)}: written with another config than "
                                  f"{out / 'config.json'} (differs in lr); cannot resume from it")


def test_resume_needs_a_checkpoint(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(RunConfig(**TINY).to_dict()))
    with pytest.raises(ConfigError, match="no checkpoints to resume from"):
        run_training(RunConfig(**TINY), out, progress=False, resume=True)
