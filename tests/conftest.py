"""Fixtures and settings shared by every test file."""

import os

import pytest
import torch

# Tiny models run much faster on one torch thread: on 2 shared cores two threads fight the other processes
# (a 120-step width-16 MNIST-1D run took 0.25 s on one thread and 7-15 s on two under load). The whole suite runs
# on one thread, and so do the processes it spawns (CLI subprocesses, submitit and --jobs workers inherit this).
# Bit-identity checks compare runs made under this same thread count.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
