"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models run faster on one torch thread, and two threads fight other processes for 2 cores (a backward
    of a 40-8-10 MLP took 60 ms). Test files whose models are all tiny use it for every test (pytestmark)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
