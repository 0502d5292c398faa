"""Property tests of the loaders of untrusted files: random .npz files given to `probe train --task npz:`,
random checkpoint dicts given to `probe analyze` and `probe train --resume`. Whatever the file, the command ends
with one line and exit 2 (or 1: a run that failed, one line too) or does its job; never a traceback."""

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from probe.cli import app
from probe.config import RunConfig
from probe.run.check import check_run
from probe.run.checkpoint import checksums, list_checkpoints, load_checkpoint
from probe.run.loop import run_training

runner = CliRunner()
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ends_cleanly(res, codes=(0, 1, 2)) -> None:
    """One line on error, the exit code in ``codes``, and no exception escaping the command."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code in codes, res.output
    if res.exit_code:
        lines = res.output.strip().splitlines()
        assert lines and lines[-1].startswith("error: ") and "Traceback" not in res.output, res.output


# -- random .npz files ---------------------------------------------------------------------------------------
DTYPES = [np.int8, np.int64, np.uint8, np.float16, np.float32, np.float64, np.bool_, np.complex64, "<U3", object]


@st.composite
def arrays(draw, n=None):
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
    if n is not None and ndim:
        shape = (n, *shape[1:])
    size = int(np.prod(shape)) if shape else 1
    if dtype in ("<U3", object):
        a = np.array([draw(st.sampled_from(["a", "bc", "1"])) for _ in range(size)], dtype=dtype)
    else:
        vals = draw(st.lists(st.sampled_from([0, 1, 2, -1, 3.5, np.nan, np.inf, 1e6, -100]), min_size=size,
                             max_size=size))
        with np.errstate(all="ignore"):
            a = np.array(vals, dtype=np.float64).astype(dtype) if dtype is not np.bool_ else np.array(vals) > 0.5
    return a.reshape(shape)


@st.composite
def npz_files(draw):
    """A valid file with some of its arrays replaced, dropped or added; or bytes that are no .npz at all."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "valid", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    n = draw(st.integers(1, 12))
    L = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 100)))
    d = {"x": rng.normal(size=(n, 1, L)), "y": rng.integers(0, 3, n), "input_shape": np.array([1, L])}
    if draw(st.booleans()):
        m = draw(st.integers(1, 5))
        d.update(x_test=rng.normal(size=(m, L)), y_test=rng.integers(0, 3, m))
    if kind == "mutated":
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(["x", "y", "input_shape", "x_test", "y_test", "periodic", "extra"]))
            action = draw(st.sampled_from(["replace", "drop", "same-length"]))
            if action == "drop":
                d.pop(key, None)
            else:
                d[key] = draw(arrays(n if action == "same-length" else None))
    b = io.BytesIO()
    np.savez(b, **d)
    raw = b.getvalue()
    cut = draw(st.sampled_from([None, None, None, 0.5, 0.9]))
    return raw[: int(len(raw) * cut)] if cut else raw


@pytest.mark.slow
@SETTINGS
@given(data=npz_files())
def test_random_npz_files_give_one_line_and_exit_2_or_a_valid_run(data):
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "d.npz", Path(tmp) / "r"
        path.write_bytes(data)
        res = runner.invoke(app, ["train", "--task", f"npz:{path}", "--width", "4", "--depth", "1", "--steps", "2",
                                  "--batch-size", "4", "--eval-every", "2", "--log-every", "1", "--checkpoints", "2",
                                  "--track", "none", "--device", "cpu", "-q", "--out", str(out)])
        ends_cleanly(res, (0, 2))
        if res.exit_code == 0:
            assert check_run(out).ok, check_run(out).lines()
        else:
            assert not out.exists()  # refused before anything was written


# -- random checkpoint dicts ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory, slow_setup):
    out = tmp_path_factory.mktemp("small") / "r"
    run_training(RunConfig(task="mnist1d", width=4, depth=1, steps=6, batch_size=50, eval_every=3, log_every=3,
                           checkpoints=3, track="none", device="cpu"), out, progress=False)
    return out


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=5),
              st.builds(lambda s, d: torch.ones(s, dtype=d) * 3,
                        st.lists(st.integers(0, 4), max_size=3).map(tuple),
                        st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)

PATHS = [("step",), ("config",), ("config", "width"), ("config", "steps"), ("geometry",), ("geometry", "spatial"),
         ("state_dict",), ("state_dict", "layers.0.weight"), ("state_dict", "readout.bias"), ("optimizer",),
         ("optimizer", "state"), ("optimizer", "param_groups"), ("scheduler",), ("scheduler", "last_epoch"),
         ("rng",), ("rng", "numpy"), ("rng", "torch"), ("rng", "python"), ("loss_accum",), ("loss_accum", "n"),
         ("loss_accum", "sum"), ("format",), ("task_info",), ("checksums",)]


@st.composite
def checkpoints(draw, base):
    """A real checkpoint with parts replaced or deleted (checksums recomputed or not), or a random dict."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.dictionaries(st.text(max_size=8), values, max_size=5))
    ck = load_checkpoint(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = ck
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(values)
    if draw(st.booleans()):
        try:
            ck["checksums"] = checksums(ck)  # crafted rather than damaged
        except Exception:  # a dict checksums cannot walk is left as it is (the loader must still cope)
            pass
    return ck


@SETTINGS
@given(data=st.data())
def test_random_checkpoint_dicts_give_one_line_never_a_traceback(small_run, data):
    last = list_checkpoints(small_run)[-1][1]
    ck = data.draw(checkpoints(last))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "r"
        shutil.copytree(small_run, run)
        target = list_checkpoints(run)[-1][1]
        try:
            torch.save(ck, target)
        except Exception:  # torch cannot save this object: nothing to load
            return
        ends_cleanly(runner.invoke(app, ["analyze", str(target), "--no-data"]))
        ends_cleanly(runner.invoke(app, ["analyze", str(target), "--input-shape", "1,40", "--no-data"]))
        res = runner.invoke(app, ["check", str(run)])  # a report, exit 1 when it finds a problem
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        assert res.exit_code in (0, 1) and res.output.strip().splitlines()[-1].startswith(f"{run}: "), res.output
        ends_cleanly(runner.invoke(app, ["train", "--resume", str(run), "-q"]))
