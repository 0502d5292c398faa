"""The Slurm path: memory, account and any other #SBATCH option passed through to submitit, and preempted or timed
out jobs requeued through submitit's checkpointing, their runs resumed (the checkpoint hook called directly, and the
signal Slurm sends simulated in this process; no Slurm needed)."""

from __future__ import annotations

import json
import os
import signal

import pytest

pytest.importorskip("submitit")

from probe.sweep import execute  # noqa: E402
from probe.sweep.execute import SweepJob, prepare, run_sweep  # noqa: E402
from probe.sweep.spec import expand  # noqa: E402

TINY = dict(task="nlgp", task_opts={"n_train": 200, "n_test": 100, "size": 16}, model="mlp", width=8, depth=1,
            steps=40, batch_size=50, eval_every=10, log_every=10, checkpoints=2)


def fake_slurm(tmp_path, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text("#!/bin/sh\necho Submitted batch job 4242\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")


def test_memory_account_and_other_parameters_reach_the_batch_script(tmp_path, monkeypatch):
    fake_slurm(tmp_path, monkeypatch)
    s = expand({"name": "t", "base": TINY, "grid": {"seed": [0, 1]}})
    results = run_sweep(s, tmp_path / "sw", "slurm", jobs=2,
                        slurm={"time_min": 30, "gpus": 0, "cpus": 2, "mem": "32G", "account": "lab",
                               "additional": {"qos": "high", "mail-type": "END"}})
    assert [r["status"] for r in results] == ["submitted"] * 2
    script = next((tmp_path / "sw" / ".submitit").rglob("*.sh")).read_text()
    for line in ("--mem=32G", "--account=lab", "--qos=high", "--mail-type=END", "--signal=USR2@"):
        assert line in script, script


def test_checkpoint_hook_requeues_the_same_run():
    job = SweepJob()
    again = job.checkpoint("runs/x", 2)
    assert isinstance(again.function, SweepJob) and again.args == ("runs/x", 2)


@pytest.mark.slow
def test_a_preempted_job_checkpoints_at_a_step_requeues_and_resumes(tmp_path, monkeypatch):
    """SIGUSR2 during training (Slurm's warning) stops the run at its next step with a checkpoint, then reaches
    submitit's handler (here a stand-in that records it and exits as submitit does); the requeued job resumes."""
    (d,) = prepare(expand({"name": "t", "base": TINY}), tmp_path / "sw")
    calls = []

    def submitit_handler(signum, frame):  # what submitit installs: checkpoint(), requeue, exit
        calls.append(SweepJob().checkpoint(str(d), 1))
        raise SystemExit(-1)

    old = signal.signal(signal.SIGUSR2, submitit_handler)
    real = execute.train_or_resume

    def preempted_at_20(cfg, out, **kw):
        def hook(step, model):
            if step == 20:
                os.kill(os.getpid(), signal.SIGUSR2)
            return {}
        return real(cfg, out, hooks=(hook,), **kw)

    try:
        monkeypatch.setattr(execute, "train_or_resume", preempted_at_20)
        with pytest.raises(SystemExit):
            SweepJob()(str(d), 1)
        assert len(calls) == 1 and calls[0].args == (str(d), 1)
        assert json.loads((d / "result.json").read_text())["status"] == "interrupted"
        steps = sorted(int(p.stem.split("_")[1]) for p in (d / "checkpoints").glob("step_*.pt"))
        assert steps[-1] in (20, 21) and 40 not in steps  # the checkpoint written at the signal, not the end
        monkeypatch.setattr(execute, "train_or_resume", real)
        result = calls[0].function(*calls[0].args)  # the requeued job
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert result["status"] == "done"
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows]
    assert logged == sorted(set(logged)) and logged[-1] == 40  # resumed, not started over, nothing twice
    from probe.run import signals

    assert signal.SIGUSR2 not in signals.STOP_SIGNALS  # left as it was
