"""scripts/bench.py drives probe.run.loop from outside (a synthetic task, hooks, run folders it removes): keep it
working as train.py changes. Speed targets live in the script, not here."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from probe.geometry import Geometry

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)

TINY = bench.Case("tiny", Geometry(1, (4, 4)), 8, 1, 16, "cpu", 512, 64, 5, 6)


@pytest.mark.slow
def test_bench_case_times_probe_and_bare_loops_and_cleans_up(tmp_path):
    tracking = importlib.util.find_spec("probe.run.tracking") is not None
    res = bench.bench_case(TINY, quick=False, repeats=1, compile=False, tracking=tracking, workdir=tmp_path)
    rows = {r["loop"]: r for r in res["rows"]}
    assert set(rows) == {"probe", "bare", "bare fused"}
    if tracking:
        assert "ipr" in res["costs"]["tracked_keys"] and 0 < res["default_cadence"]["tracking_ratio"] <= 1
    assert all(rows[n]["loop_rate"] > 0 for n in ("probe", "bare", "bare fused")) and rows["probe"]["run_rate"] > 0
    assert rows["probe"]["vs"] == "bare" and math.isfinite(rows["probe"]["loop_ratio"])
    assert res["costs"]["eval_s"] > 0 and res["costs"]["checkpoint_s"] > 0
    assert list(tmp_path.iterdir()) == []  # every run folder removed


@pytest.mark.slow
def test_run_probe_trains_the_synthetic_task_and_restores_make_task(tmp_path):
    task = bench.synthetic_task(TINY)
    row = bench.run_probe(bench.probe_cfg(TINY, 10), task, tmp_path)
    assert row["step"] == 10 and math.isfinite(row["test_loss"])
    assert bench.probe.run.loop.make_task is not None and "lambda" not in repr(bench.probe.run.loop.make_task)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bare_loop_runs_on_cuda_with_bf16_and_fused_adamw():
    case = bench.Case("tiny cuda", Geometry(1, (4, 4)), 8, 1, 16, "cuda", 512, 64, 5, 6)
    loop = bench.BareLoop(case, bench.synthetic_task(case), fused=True)
    assert loop.run(3) > 0 and loop.step == 3
