"""Nothing is lost: interrupts, crashes, full disks and diverging runs."""

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

import probe.run.errors
import probe.run.folder
import probe.run.state
import probe.run.loop
from probe.run.checkpoint import checkpoint_steps, list_checkpoints, step_path
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.run.errors import TrainingInterrupted
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
    assert res.output.strip() == (f"error: cannot write {step_path(out, 36)} (No space left on device); "
                                  f"the checkpoints before it are kept, continue with --resume {out} "
                                  "once there is room")
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
    assert res.output.strip() == ("error: training diverged: train_loss became NaN or inf before step 8; "
                                  f"stopped, last good checkpoint {last[1]} "
                                  "(try a smaller --lr, or --on-nan continue to keep training)")
    # found at the first checkpoint step after the NaN, long before the first log step (50)
    assert last[0] == 7
    _all_finite(out)
    # resuming replays the same steps and stops the same way
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 1 and "training diverged" in res.output


def test_nan_at_a_log_step_is_reported_with_the_row_written(tmp_path):
    cfg = RunConfig(**{**DIVERGING, "checkpoints": 2, "log_every": 10})
    with pytest.raises(probe.run.errors.DivergenceError,
                       match=r"train_loss became (nan|inf) at step 10; stopped, last good checkpoint .*step_0.pt"):
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


# -- one writer per run folder ----------------------------------------------------------------------
def _lock_of(pid, tmp_out):
    """A lock as probe writes it, for process ``pid`` (start time read as RunLock reads it)."""
    from probe.run.lock import LOCK_FILE, _start_time

    tmp_out.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "host": __import__("socket").gethostname(), "start": _start_time(pid), "since": "earlier",
            "command": "probe train"}
    (tmp_out / LOCK_FILE).write_text(json.dumps(info))


def test_a_second_writer_gets_one_line_and_exit_2(tmp_path, reference):
    import shutil

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        out = tmp_path / "new"
        _lock_of(holder.pid, out)
        res = runner.invoke(app, ["train", "--task", "mnist1d", "--steps", "5", "-q", "--out", str(out)])
        assert res.exit_code == 2
        assert res.output.strip() == (f"error: --out {out}: another probe process is writing this run folder (PID "
                                      f"{holder.pid} on {__import__('socket').gethostname()}, since earlier); a run "
                                      f"folder has one writer at a time: wait for it, or stop it (if no such process "
                                      f"runs, delete {out / '.lock'})")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written, the holder's lock kept
        r = tmp_path / "r"
        shutil.copytree(reference, r)
        _lock_of(holder.pid, r)
        res = runner.invoke(app, ["train", "--resume", str(r), "-q"])
        assert res.exit_code == 2 and "another probe process is writing this run folder" in res.output
        assert rows(r) == rows(reference)
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "r"
    _lock_of(dead.pid, out)
    run_training(RunConfig(**{**TINY, "steps": 10, "checkpoints": 2}), out, progress=False)
    assert f"took over a stale lock (PID {dead.pid}, no longer running)" in caplog.text
    assert not (out / ".lock").exists()  # released at the end


def test_two_trains_on_one_out_at_once_write_every_row_once(tmp_path):
    out = tmp_path / "r"
    args = _cli("train", "--task", "mnist1d", "--width", "8", "--depth", "1", "--steps", "40", "--batch-size", "50",
                "--log-every", "10", "--eval-every", "20", "--checkpoints", "3", "--track", "none", "-q",
                "--out", str(out))
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(e for code, e in results if code == 2)
    assert len(loser.strip().splitlines()) == 1 and "Traceback" not in loser
    assert ("another probe process is writing this run folder" in loser or "already holds a run" in loser), loser
    steps = [json.loads(r)["step"] for r in rows(out).splitlines()]
    assert steps == [0, 10, 20, 30, 40]
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("ending", ["done", "bad-option", "interrupted", "diverged", "disk-full"])
def test_the_lock_is_released_on_every_exit(tmp_path, monkeypatch, ending):
    out = tmp_path / "r"
    cfg = RunConfig(**TINY)
    if ending == "bad-option":
        import shutil

        monkeypatch.setattr(probe.run.folder.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 10))
        with pytest.raises(ConfigError):
            run_training(cfg, out, progress=False)
    elif ending == "interrupted":
        signal_at(monkeypatch, {30})
        with pytest.raises(TrainingInterrupted):
            run_training(cfg, out, progress=False)
    elif ending == "diverged":
        with pytest.raises(probe.run.errors.DivergenceError):
            run_training(RunConfig(**DIVERGING), out, progress=False)
    elif ending == "disk-full":
        real = probe.run.state.Run.checkpoint

        def full(self, step):
            if step == 11:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, step)

        monkeypatch.setattr(probe.run.state.Run, "checkpoint", full)
        with pytest.raises(probe.run.errors.StorageError):
            run_training(cfg, out, progress=False)
    else:
        run_training(cfg, out, progress=False)
    assert not (out / ".lock").exists()


def test_a_start_that_died_before_its_first_checkpoint_is_started_over(tmp_path, reference):
    """What a crash during step 0 leaves (config, task, row 0, no checkpoint): nothing to resume, so a new
    `probe train` into it starts again rather than calling it a run."""
    out = tmp_path / "r"
    out.mkdir()
    for name in ("config.json", "task.json"):
        (out / name).write_text((reference / name).read_text())
    (out / "metrics.jsonl").write_text(rows(reference).splitlines()[0] + "\n")
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 2 and res.output.strip() == f"error: --resume {out}: no checkpoints to resume from"
    res = runner.invoke(app, ["train", "--config", str(out / "config.json"), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert_same_run(out, reference)


# -- resuming exactly from any stopping point -----------------------------------------------------------------
def _stop_at_step_0(monkeypatch):
    """SIGTERM arrives while row 0 is logged: the run stops at step 0, with step_0.pt only."""
    real = probe.run.loop.save

    def save(run, step):
        path = real(run, step)
        if step == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return path

    monkeypatch.setattr(probe.run.loop, "save", save)


@pytest.mark.parametrize("stop", ["sigterm-at-step-0", "later-checkpoints-deleted", "kill-9-writing-step-1",
                                  "disk-full-at-step-1"])
def test_resume_from_step_0_writes_each_row_once(tmp_path, monkeypatch, reference, stop):
    out = tmp_path / "r"
    if stop == "sigterm-at-step-0":
        _stop_at_step_0(monkeypatch)
        with pytest.raises(TrainingInterrupted) as info:
            run_training(RunConfig(**TINY), out, progress=False)
        assert info.value.step == 0
    elif stop == "disk-full-at-step-1":
        real = probe.run.state.Run.checkpoint

        def full(self, step):
            if step == 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, step)

        monkeypatch.setattr(probe.run.state.Run, "checkpoint", full)
        with pytest.raises(probe.run.errors.StorageError):
            run_training(RunConfig(**TINY), out, progress=False)
    else:
        import shutil

        shutil.copytree(reference, out)
        for s, p in list_checkpoints(out):
            if s > 0:
                p.unlink()
        if stop == "kill-9-writing-step-1":
            (out / "checkpoints" / ".step_1.pt.tmp-99999").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    monkeypatch.undo()
    step0 = step_path(out, 0).read_bytes()
    run_training(RunConfig(**TINY), out, progress=False, resume=True)
    assert [json.loads(r)["step"] for r in rows(out).splitlines()].count(0) == 1
    assert step_path(out, 0).read_bytes() == step0  # the initialization is never rewritten
    assert_same_run(out, reference)


def _interrupted(tmp_path, monkeypatch, at=49):
    out = tmp_path / "r"
    signal_at(monkeypatch, {at})
    with pytest.raises(TrainingInterrupted):
        run_training(RunConfig(**TINY), out, progress=False)
    monkeypatch.undo()
    return out


def _craft(ck, how):
    if how == "step -50":
        ck["step"] = -50
    elif how == "step 10^9":
        ck["step"] = 10**9
    elif how == "numpy keys short":
        ck["rng"]["numpy"]["keys"] = ck["rng"]["numpy"]["keys"][:100]
    elif how == "torch rng short":
        ck["rng"]["torch"] = ck["rng"]["torch"][:10]
    elif how == "python rng":
        ck["rng"]["python"] = [3, [1, 2, 3], None]
    elif how == "lr changed":
        ck["optimizer"]["param_groups"][0]["lr"] = 5.0
    elif how == "weight decay changed":
        ck["optimizer"]["param_groups"][0]["weight_decay"] = 0.5
    elif how == "adam state shape":
        ck["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3, 3)
    elif how == "adam state for a parameter that does not exist":
        ck["optimizer"]["state"][99] = {"step": torch.tensor(1.0)}
    elif how == "schedule at another step":
        ck["scheduler"]["last_epoch"] = 7
    elif how == "loss count":
        ck["loss_accum"]["n"] = 1000
    elif how == "missing weight":
        del ck["state_dict"]["readout.weight"]
    elif how == "weight shape":
        ck["state_dict"]["readout.weight"] = torch.zeros(10, 3)
    elif how == "NaN weight":
        ck["state_dict"]["readout.bias"] = torch.full((10,), float("nan"))
    return ck


CRAFTED = {
    "step -50": "its step (-50) is not the one in its name (step_50.pt)",
    "step 10^9": "its step (1000000000) is not the one in its name",
    "numpy keys short": "its random state is bad (rng.numpy.keys is not 624 integers",
    "torch rng short": "its random state is bad (rng.torch is not a uint8 tensor of 5056 bytes)",
    "python rng": "its random state is bad (rng.python is not Python's version-3 random state)",
    "lr changed": "its optimizer state does not fit (group 0: lr 5.0 is not the schedule's 0.01 at step 50)",
    "weight decay changed": "its optimizer state does not fit (group 0: weight_decay is 0.5, the config gives 0.0)",
    "adam state shape": ("its optimizer state does not fit "
                         "(parameter 0: exp_avg is not a float tensor of its shape (16, 40))"),
    "adam state for a parameter that does not exist": "state for parameter 99, which the model does not have",
    "schedule at another step": "its schedule is not at step 50",
    "loss count": "its loss_accum counts 1000 steps, but 10 were trained since the last metrics row",
    "missing weight": "its weights do not fit model mlp (missing readout.weight)",
    "weight shape": "its weights do not fit model mlp (readout.weight has shape (10, 3), the model needs (10, 16))",
    "NaN weight": "its weights hold NaN or inf (readout.bias)",
}


@pytest.mark.parametrize("how", list(CRAFTED))
def test_crafted_resume_state_is_checked_against_the_config_before_use(tmp_path, monkeypatch, how):
    from probe.run.checkpoint import checksums

    out = _interrupted(tmp_path, monkeypatch)
    last = step_path(out, 50)
    ck = _craft(torch.load(last, weights_only=True), how)
    ck["checksums"] = checksums(ck)  # crafted, not damaged: the checksums agree, the checks must catch it
    torch.save(ck, last)
    before = {p.name: p.read_bytes() for _, p in list_checkpoints(out)}
    metrics = rows(out)
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert line == f"error: checkpoint {last}: {CRAFTED[how]}; cannot resume from it" or \
        (line.startswith(f"error: checkpoint {last}: ") and CRAFTED[how] in line), line
    assert {p.name: p.read_bytes() for _, p in list_checkpoints(out)} == before and rows(out) == metrics


def test_a_checkpoint_named_for_a_negative_step_is_refused(tmp_path, monkeypatch):
    from probe.run.checkpoint import checksums

    out = _interrupted(tmp_path, monkeypatch)
    for s, p in list_checkpoints(out):
        if s:
            p.unlink()
    ck = torch.load(step_path(out, 0), weights_only=True)
    ck["step"] = -50
    ck["checksums"] = checksums(ck)
    torch.save(ck, out / "checkpoints" / "step_-50.pt")  # sorts before step_0.pt: remove that one too
    step_path(out, 0).unlink()
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 2
    assert res.output.strip() == (f"error: checkpoint {out / 'checkpoints' / 'step_-50.pt'}: its step (-50) is outside "
                                  "[0, 120] (--steps); cannot resume from it")


# -- finishing writes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["disk-full", "reference.json-is-a-folder"])
def test_a_failed_reference_json_keeps_the_final_checkpoint_and_resume_writes_it(tmp_path, monkeypatch, reference, how):
    import probe.run.tracking

    out = tmp_path / "r"
    if how == "disk-full":
        real = probe.run.tracking.atomic_write

        def full(path, write):
            if Path(path).name == "reference.json":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(path, write)

        monkeypatch.setattr(probe.run.tracking, "atomic_write", full)
        reason = "No space left on device"
    else:
        (out / "reference.json").mkdir(parents=True)
        reason = "Is a directory"
    args = ["train", "-q", "--out", str(out)] + [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert res.output.strip() == (f"error: cannot write {out / 'reference.json'} ({reason}); the run's checkpoints "
                                  f"and metrics are kept, `probe train --resume {out}` writes it once there is room")
    assert list_checkpoints(out)[-1][0] == 120  # the final checkpoint was written first
    monkeypatch.undo()
    if how != "disk-full":
        (out / "reference.json").rmdir()
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert (out / "reference.json").read_text() == (reference / "reference.json").read_text()
    assert_same_run(out, reference)


# -- sweeps -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("jobs", [1, 2])
def test_sigterm_to_a_sweep_exits_143_like_train(tmp_path, jobs):
    (tmp_path / "s.toml").write_text('name = "t"\n[base]\ntask = "mnist1d"\nwidth = 16\ndepth = 1\nsteps = 100000\n'
                                     'batch-size = 50\neval-every = 100000\nlog_every = 10\ncheckpoints = 3\n'
                                     'track = "none"\n[grid]\nseed = [0, 1]\n')
    out = tmp_path / "sw"
    proc = subprocess.Popen(_cli("sweep", str(tmp_path / "s.toml"), "--out", str(out), "--jobs", str(jobs)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(proc, out / "s0" / "metrics.jsonl", 20, timeout=240)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, (stdout, stderr)
    assert "Traceback" not in stderr and "interrupted: run the same command again to resume" in stderr
    assert list_checkpoints(out / "s0")[-1][0] > 0  # the run stopped with a checkpoint
    assert not (out / "s0" / ".lock").exists()
