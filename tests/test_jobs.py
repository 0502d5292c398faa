"""The analysis's scheduler: independent jobs on threads give what they give in turn, errors in a fixed order."""

import threading

import numpy as np
import pytest
import torch

from probe.analysis.jobs import run_jobs


@pytest.fixture
def cpu_only(monkeypatch):
    """run_jobs uses threads only where torch sees no GPU: these tests pretend there is none."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _eig(seed, shape=(120, 90)):
    W = np.random.default_rng(seed).standard_t(3, size=shape)
    return lambda: np.linalg.eigvalsh(W.T @ W)


def test_jobs_on_threads_give_the_values_of_the_jobs_in_turn_in_the_order_given(cpu_only):
    jobs = {("spectrum", s): _eig(s) for s in (3, 1, 2)}
    jobs["rng"] = lambda: np.random.default_rng([7, 1]).standard_normal(5)  # seeded inside: no shared state
    alone = run_jobs(jobs, workers=1)
    together = run_jobs(jobs, workers=3)
    assert list(together) == list(jobs) == list(alone)
    for key in jobs:
        np.testing.assert_array_equal(together[key], alone[key])


def test_jobs_run_single_threaded_on_worker_threads_and_the_settings_come_back(cpu_only):
    seen = []
    barrier = threading.Barrier(2, timeout=30)  # both jobs under way at once: two threads, not one in turn

    def job():
        barrier.wait()
        seen.append((threading.current_thread().name, torch.get_num_threads()))

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_jobs({"a": job, "b": job}, workers=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert len({name for name, _ in seen}) == 2 and all(n == 1 for _, n in seen)
    assert all(name.startswith("probe-jobs") for name, _ in seen)


def test_every_job_ends_and_the_first_failed_one_in_the_order_given_raises(cpu_only):
    done = []
    later_fails_first = threading.Event()

    def fails(msg, wait=None):
        def fn():
            if wait is not None:
                assert wait.wait(30)  # fail after the other one has failed
            else:
                later_fails_first.set()
            raise ValueError(msg)
        return fn

    jobs = {"first": fails("first", later_fails_first), "ok": lambda: done.append(1), "second": fails("second")}
    with pytest.raises(ValueError, match="^first$"):
        run_jobs(jobs, workers=2)
    assert done == [1]
    with pytest.raises(ValueError, match="^first$"):  # in turn: the same error
        run_jobs({"first": fails("first"), "second": fails("second")}, workers=1)


def test_one_worker_runs_the_jobs_in_turn_in_this_thread(cpu_only):
    where = []
    run_jobs({k: lambda: where.append(threading.current_thread().name) for k in "abc"}, workers=1)
    assert where == [threading.current_thread().name] * 3


@pytest.mark.slow
def test_single_threaded_holds_for_a_blas_first_loaded_inside_the_block():
    """threadpoolctl limits only the libraries loaded when a limit is set: scipy's own OpenBLAS, loaded by a first
    ``import scipy.linalg`` inside the block, must run on one thread too (in a fresh process, where it is not
    loaded yet)."""
    import os
    import subprocess
    import sys

    code = """
import sys
assert "scipy.linalg" not in sys.modules
from probe.analysis.jobs import single_threaded
from threadpoolctl import threadpool_info
with single_threaded(2):
    import scipy.linalg
    print(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}  # two threads unless limited
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1"]
