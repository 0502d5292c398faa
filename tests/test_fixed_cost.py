"""Cutting a run's fixed cost changes no result: a `probe train` process that reads MNIST-1D from the cache and
ends without interpreter teardown writes the same metrics rows and checkpoints as one that generates the data."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.config import RunConfig
from probe.run.loop import run_training
from probe.tasks import images

ARGS = ["--task", "mnist1d", "--steps", "120", "--eval-every", "40", "--checkpoints", "4", "-q"]


def _train_process(out, cache):
    env = {**os.environ, "PROBE_CACHE_DIR": str(cache)}
    res = subprocess.run([sys.executable, "-m", "probe.cli", "train", *ARGS, "--out", str(out)], env=env,
                         capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert res.returncode == 0, res.stderr
    assert "test_acc" in res.stdout  # the summary line is printed (flushed) before the process ends
    return res


def _same(a, b):
    names = sorted(p.name for p in (a / "checkpoints").glob("*.pt"))
    assert names == sorted(p.name for p in (b / "checkpoints").glob("*.pt")) and names
    for f in ["metrics.jsonl", "reference.json", "config.json", *[f"checkpoints/{n}" for n in names]]:
        assert filecmp.cmp(a / f, b / f, shallow=False), f


@pytest.mark.slow
def test_cached_data_and_quick_exit_change_no_result(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _train_process(tmp_path / "generated", cache)  # generates the default 5,000 examples and keeps them
    assert list(cache.glob("mnist1d-*-n5000.npz"))
    _train_process(tmp_path / "cached", cache)  # reads them back
    _same(tmp_path / "generated", tmp_path / "cached")
    # and both equal a run in this process that generates without any cache, as before the cache covered them
    monkeypatch.setattr(images, "CACHE_MIN", 10**9)
    images._mnist1d_arrays.cache_clear()
    try:
        cfg = RunConfig(task="mnist1d", steps=120, eval_every=40, checkpoints=4)
        run_training(cfg, tmp_path / "inprocess", progress=False)
    finally:
        images._mnist1d_arrays.cache_clear()
    _same(tmp_path / "generated", tmp_path / "inprocess")


def test_main_without_quick_exit_returns_to_its_caller(monkeypatch):
    """A process that runs the command and goes on after it (scripts/attack.py forks such children) passes
    quick_exit=False: the command's end is a SystemExit it can catch, even after a command asked for the quick exit
    (before, the forked child ended inside main through os._exit and its result was lost)."""
    import probe.cli

    monkeypatch.setattr(probe.cli, "_quick_exit", [True])  # as a finished `probe train` leaves it
    monkeypatch.setattr(sys, "argv", ["probe", "tasks"])
    with pytest.raises(SystemExit) as e:
        probe.cli.main(quick_exit=False)
    assert e.value.code in (0, None)
