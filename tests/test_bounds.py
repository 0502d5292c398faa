"""Bounded inputs and one-line errors: crafted checkpoints, sizes that cannot fit, damaged files a run folder or a
sweep folder holds, signals at the edges. Each test here failed before its fix (said in its docstring)."""

import json
import time

import pytest
import torch

from probe.run.checkpoint import CheckpointError, load_checkpoint, nested_size


def shared_lists(levels: int):
    x = [torch.zeros(2)]
    for _ in range(levels):
        x = [x, x]
    return x


# -- item 8: nested containers sharing references --------------------------------------------------------------
def test_nested_size_counts_every_path_and_visits_each_object_once():
    """Exact on constructions: k levels of [x, x] over [tensor] hold 2^(k+1) - 1 lists and 2^k tensors."""
    for k in (0, 1, 5, 20):
        assert nested_size(shared_lists(k)) == (2 ** (k + 1) - 1 + 2 ** k, k + 1)
    assert nested_size({"a": [1, 2], "b": {"c": 3}}) == (6, 2)
    assert nested_size(7) == (1, 0)
    t0 = time.perf_counter()
    n, d = nested_size(shared_lists(60))
    assert n > 2 ** 60 and d == 61 and time.perf_counter() - t0 < 1
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="holds itself"):
        nested_size(loop)


def test_a_small_file_of_shared_lists_is_refused_at_once(tmp_path):
    """Before: a 2 KB file of lists sharing references 60 levels deep loaded in 1 ms and then hung every walk over
    its tensors (analyze, check, --resume), which follow each of its 2^60 paths."""
    p = tmp_path / "nest.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "junk": shared_lists(60)}, p)
    assert p.stat().st_size < 10_000
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="counted along every path"):
        load_checkpoint(p)
    assert time.perf_counter() - t0 < 5
    deep = []
    for _ in range(150):
        deep = [deep]
    torch.save({"state_dict": {"w": torch.zeros(2)}, "junk": deep}, p)
    with pytest.raises(CheckpointError, match="nested 152 levels"):
        load_checkpoint(p)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "junk": shared_lists(8)}, p)
    assert nested_size(load_checkpoint(p)["junk"])[1] == 9  # a little sharing loads
