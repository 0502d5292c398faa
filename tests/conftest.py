"""Settings and fixtures shared by every test file, and the two test tiers.

Tiers: a test is marked ``slow`` (pyproject.toml declares the marker; --strict-markers refuses unknown ones) when
it trains a real run, runs a CLI command end to end (train, analyze or figures of a trained run, a sweep), or
spawns a Python process. Three ways to say so, by what the test does:

* ``@pytest.mark.slow`` on a test that does it in its body;
* ``pytestmark = pytest.mark.slow`` in a module where every test does (test_reliability.py);
* a fixture that trains a run requests ``slow_setup``; every test that uses such a fixture, directly or through
  another fixture, is marked by :func:`pytest_collection_modifyitems` below.

``python -m pytest -q`` runs both tiers; ``python -m pytest -q -m "not slow"`` only the fast one.
"""

import os
import tempfile

import pytest
import torch

# Tiny models run much faster on one torch thread: on 2 shared cores two threads fight the other processes
# (a 120-step width-16 MNIST-1D run took 0.25 s on one thread and 7-15 s on two under load). The whole suite runs
# on one thread, and so do the processes it spawns (CLI subprocesses, submitit and --jobs workers inherit this).
# Bit-identity checks compare runs made under this same thread count.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
# generated data sets are kept on disk (probe.tasks.images.cache_dir): never in the user's cache
# from the tests; one folder for the session (and the processes it spawns), left to pytest's temporary files.
os.environ["PROBE_CACHE_DIR"] = tempfile.mkdtemp(prefix="probe-test-cache-")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def slow_setup():
    """Requested by fixtures that train a real run: the tests using them belong to the slow tier."""


def pytest_collection_modifyitems(items):
    for item in items:
        if "slow_setup" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
