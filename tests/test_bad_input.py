"""No bad input crashes and no checkpoint runs code."""

import io
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probe.run.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from probe.cli import app
from probe.config import RunConfig
from probe.run.loop import run_training

runner = CliRunner()
TINY = dict(task="mnist1d", width=8, depth=1, steps=20, batch_size=50, eval_every=10, log_every=10, checkpoints=3)


class MakesMarker:
    """Unpickling this calls os.makedirs(marker): code that runs on load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory, slow_setup):
    out = tmp_path_factory.mktemp("run") / "r"
    run_training(RunConfig(**TINY), out, progress=False)
    return out


# -- 4. untrusted checkpoints ------------------------------------------------------------------------------
def test_every_torch_load_in_probe_is_weights_only():
    """Read the source: every torch.load passes weights_only=True; nothing calls pickle.load(s) or torch.load
    through another name, and np.load never allows pickles."""
    import ast

    import probe

    loads = 0
    for path in Path(probe.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "dill", "joblib"):
                assert not {a.name for a in node.names} & {"load", "loads"}, f"{path.name}:{node.lineno}"
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            kw = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            where = f"{path.name}:{node.lineno}"
            if name == "torch.load":
                loads += 1
                assert kw.get("weights_only") is True, where
            assert name not in ("pickle.load", "pickle.loads", "torch._load"), where
            if name in ("np.load", "numpy.load"):
                assert kw.get("allow_pickle") is False, where
    assert loads >= 1


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, how):
    marker = tmp_path / "marker"
    payload = {"state_dict": {"w": torch.zeros(2)}, "x": MakesMarker(marker)}
    path = tmp_path / "evil.pt"
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=how == "torch.save")
    # the payload is live: an ordinary unpickler runs it
    control = tmp_path / "control.pt"
    live = MakesMarker(tmp_path / "control-marker")
    if how == "pickle":
        control.write_bytes(pickle.dumps(live))
        pickle.loads(control.read_bytes())
    else:
        torch.save(live, control, _use_new_zipfile_serialization=how == "torch.save")
        torch.load(control, weights_only=False)
    assert (tmp_path / "control-marker").exists()

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"checkpoint {path}: ") and "\n" not in msg
    assert ("refused, loading it would call os.makedirs" in msg) if how != "pickle" else ("plain Python pickle" in msg)
    assert not marker.exists()


def test_resume_refuses_a_malicious_last_checkpoint_with_one_line(tmp_path, run):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run, out)
    marker = tmp_path / "marker"
    last = list_checkpoints(out)[-1][1]
    torch.save({"format": "probe-checkpoint", "x": MakesMarker(marker)}, last)
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 2
    assert one_line(res.output).startswith(f"error: checkpoint {last}: refused, loading it would call os.makedirs")
    assert not marker.exists()


def _truncated(run, n):
    return (list_checkpoints(run)[-1][1]).read_bytes()[:n]


BAD_FILES = {
    "empty": (lambda run: b"", "empty file"),
    "truncated": (lambda run: _truncated(run, 3000), "truncated or damaged"),
    "cut-to-header": (lambda run: _truncated(run, 10), "truncated or damaged"),
    "text": (lambda run: b"step,loss\n0,2.3\n", "a text file (it starts 'step,loss"),
    "npy": (lambda run: _npy(np.zeros((3, 4))), "a NumPy .npy array, not a PyTorch checkpoint"),
    "npz": (lambda run: _npz(w=np.zeros((3, 4))), "a NumPy .npz archive, not a PyTorch checkpoint"),
    "random": (lambda run: np.random.default_rng(0).bytes(4096), "not a PyTorch checkpoint"),
    "legacy-truncated": (lambda run: _legacy()[:40], "not a readable PyTorch checkpoint"),
}


def _npy(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def _npz(**arrays):
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def _legacy():
    b = io.BytesIO()
    torch.save({"w": torch.zeros(100)}, b, _use_new_zipfile_serialization=False)
    return b.getvalue()


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_unreadable_files_get_one_line_naming_the_file_and_the_problem(tmp_path, run, kind):
    make, expected = BAD_FILES[kind]
    path = tmp_path / "model.pt"
    path.write_bytes(make(run))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"checkpoint {path}: ") and "\n" not in msg and expected in msg, msg


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'nope.pt'}: not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path}: is a folder, not a file"):
        load_checkpoint(tmp_path)


def test_good_checkpoints_and_plain_state_dicts_still_load(tmp_path, run):
    ck = load_checkpoint(list_checkpoints(run)[-1][1])
    assert ck["step"] == 20 and ck["state_dict"]["layers.0.weight"].shape == (8, 40)
    torch.save(torch.nn.Linear(40, 8).state_dict(), tmp_path / "sd.pt")
    assert load_checkpoint(tmp_path / "sd.pt")["weight"].shape == (8, 40)
    (tmp_path / "legacy.pt").write_bytes(_legacy())
    assert load_checkpoint(tmp_path / "legacy.pt")["w"].shape == (100,)


@pytest.mark.parametrize("kind", ["truncated", "text", "plain-state-dict"])
def test_resume_from_a_bad_last_checkpoint_is_one_line_exit_2(tmp_path, run, kind):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run, out)
    last = list_checkpoints(out)[-1][1]
    if kind == "plain-state-dict":
        torch.save(torch.nn.Linear(40, 8).state_dict(), last)
        expected = "not a probe checkpoint with training state (missing config, "
    elif kind == "text":
        last.write_text("hello")
        expected = "a text file"
    else:
        last.write_bytes(last.read_bytes()[:2000])
        expected = "truncated or damaged"
    res = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert res.exit_code == 2
    line = one_line(res.output)
    assert line.startswith(f"error: checkpoint {last}: ") and expected in line, line


def test_analyze_refuses_a_malicious_checkpoint_if_it_exists(tmp_path):
    from probe.cli import app as probe_app

    names = [c.name or c.callback.__name__ for c in probe_app.registered_commands]
    if "analyze" not in names:
        pytest.skip("probe analyze is not built yet")
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"x": MakesMarker(marker)}, path)
    res = runner.invoke(app, ["analyze", str(path)])
    assert res.exit_code == 2 and f"checkpoint {path}: refused" in one_line(res.output)
    assert not marker.exists()


# -- 5. bad options -----------------------------------------------------------------------------------------
BASE = ["train", "--task", "mnist1d", "-q", "--steps", "5"]
BAD_OPTIONS = [
    (["--task", "mnist2d"], "error: unknown task 'mnist2d'; valid tasks: "),
    (["--model", "resnet"], "error: unknown model 'resnet'; valid models: "),
    (["--task-opt", "colour=3"], "error: task mnist1d: unknown task option(s) colour; valid options: "),
    (["--task-opt", "num_samples=many"], "error: task mnist1d: option num_samples must be int"),
    (["--task-opt", "nonsense"], "error: --task-opt expects KEY=VALUE"),
    (["--model-opt", "colour=3"], "error: model mlp: unknown model option(s) colour; valid options: "),
    (["--model", "cnn", "--model-opt", "kernel=wide"], "error: model cnn: option kernel must be int"),
    (["--model", "cnn", "--model-opt", "channels=-2"], "error: model cnn: stride and channels must be >= 1"),
    (["--width", "0"], "error: --width must be a positive integer; got 0"),
    (["--width", "-4"], "error: --width must be a positive integer; got -4"),
    (["--steps", "0"], "error: --steps must be a positive integer; got 0"),
    (["--batch-size", "-1"], "error: --batch-size must be a positive integer; got -1"),
    (["--depth", "-1"], "error: --depth must be >= 0; got -1"),
    (["--checkpoints", "0"], "error: --checkpoints must be a positive integer; got 0"),
    (["--log-every", "0"], "error: --log-every must be a positive integer; got 0"),
    (["--lr", "abc"], "error: Invalid value for '--lr'"),
    (["--lr", "1e-2x"], "error: Invalid value for '--lr'"),
    (["--lr", "nan"], "error: --lr must be a finite number >= 0; got nan"),
    (["--lr", "inf"], "error: --lr must be a finite number >= 0; got inf"),
    (["--lr", "-0.1"], "error: --lr must be a finite number >= 0; got -0.1"),
    (["--lr", "0"], "error: --lr must be > 0"),
    (["--steps", "1.5"], "error: Invalid value for '--steps'"),
    (["--optimizer", "lbfgs"], "error: --optimizer must be one of sgd, adam, adamw; got 'lbfgs'"),
    (["--on-nan", "ignore"], "error: --on-nan must be one of stop, continue; got 'ignore'"),
    (["--param", "ntk"], "error: --param must be one of standard, mean-field; got 'ntk'"),
    (["--schedule", "step"], "error: --schedule must be one of constant, cosine; got 'step'"),
    (["--device", "tpu"], "error: --device must be one of auto, cpu, cuda; got 'tpu'"),
    (["--beta-lasso", "10"], "error: --beta-lasso needs an L1 strength"),
    (["--wdith", "3"], "error: No such option: --wdith"),
    (["--width"], "error: Option '--width' requires an argument."),
]


@pytest.mark.parametrize("args,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_get_one_line_and_exit_code_2(tmp_path, args, message):
    out = tmp_path / "r"
    res = runner.invoke(app, [*BASE, "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert one_line(res.output).startswith(message), res.output
    assert not out.exists()  # nothing is written for a command that cannot run


def test_unknown_choices_list_the_valid_ones():
    res = runner.invoke(app, ["train", "--task", "mnist2d"])
    assert all(t in res.output for t in ("mnist1d", "nlgp", "digits", "npz:PATH"))
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--model", "resnet"])
    assert all(m in res.output for m in ("mlp", "cnn", "lcn", "linear"))
    res = runner.invoke(app, ["train", "--task", "nlgp", "--task-opt", "colour=3"])
    assert "valid options: clone, dim, fresh, gain, kurtosis, n_test, n_train, periodic, size, xi0, xi1" in res.output


BAD_CONFIG_FILES = [
    ("c.toml", 'task = "mnist1d"\ncolour = 3\n', "unknown config key(s) colour; valid keys: batch_size, "),
    ("c.toml", 'task = "mnist1d"\nlr = "abc"\n', "lr must be float, got 'abc'"),
    ("c.toml", 'task = "mnist1d"\nwidth = 0\n', "--width must be a positive integer; got 0"),
    ("c.toml", 'task = "mnist1d"\nsteps = 2.5\n', "steps must be int, got 2.5"),
    ("c.toml", 'task = "mnist1d"\nwidth = \n', "cannot parse"),
    ("c.json", '{"task": "mnist1d", "task_opts": 3}', "task_opts must be dict, got 3"),
    ("c.json", '["mnist1d"]', "expected a table of config keys"),
    ("c.toml", 'width = 8\n', "no task given"),
]


@pytest.mark.parametrize("name,text,message", BAD_CONFIG_FILES)
def test_bad_config_files_get_one_line_naming_the_file(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    res = runner.invoke(app, ["train", "--config", str(tmp_path / name), "-q", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    line = one_line(res.output)
    assert str(tmp_path / name) in line or "--width" in line
    assert message in line, line


def test_missing_config_file(tmp_path):
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "none.toml")])
    assert res.exit_code == 2 and one_line(res.output) == f"error: config file {tmp_path / 'none.toml'}: not found"


def test_resume_folders_that_are_not_runs(tmp_path, run):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    for folder in (tmp_path / "empty", tmp_path / "missing", tmp_path / "afile"):
        res = runner.invoke(app, ["train", "--resume", str(folder)])
        assert res.exit_code == 2
        assert one_line(res.output) == f"error: --resume {folder}: not a run folder (no config.json)"
    (tmp_path / "nockpt").mkdir()
    (tmp_path / "nockpt" / "config.json").write_text((run / "config.json").read_text())
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "nockpt"), "-q"])
    assert res.exit_code == 2
    assert one_line(res.output) == f"error: --resume {tmp_path / 'nockpt'}: no checkpoints to resume from"
    res = runner.invoke(app, ["train", "--resume", str(run), "--lr", "0.1"])
    assert res.exit_code == 2 and "--resume takes the run's stored config; drop --lr" in one_line(res.output)
    res = runner.invoke(app, ["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")])
    assert res.exit_code == 2
    assert one_line(res.output) == (f"error: --resume continues the run in its own folder {run}; "
                                    f"drop --out {tmp_path / 'elsewhere'}")
    assert not (tmp_path / "elsewhere").exists()
    res = runner.invoke(app, ["train", "--resume", str(run), "--config", str(run / "config.json")])
    assert res.exit_code == 2 and one_line(res.output) == "error: --resume takes the run's stored config; drop --config"


def test_help_still_works():
    res = runner.invoke(app, ["train", "--help"])
    assert res.exit_code == 0 and "Usage" in res.output and "--on-nan" in res.output
    res = runner.invoke(app, [])
    assert "Usage" in res.output and "train" in res.output
    res = runner.invoke(app, ["nonsense"])
    assert res.exit_code == 2 and one_line(res.output).startswith("error: No such command 'nonsense'")


def test_config_json_with_a_stray_key_is_refused(tmp_path, run):
    cfg = json.loads((run / "config.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**cfg, "widht": 3}))
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.json"), "-q"])
    assert res.exit_code == 2 and "unknown config key(s) widht" in one_line(res.output)


# -- the last ways in ------------------------------------------------------------------------------
def _train_npz(tmp_path, path, *extra):
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", "--task", f"npz:{path}", "--width", "8", "--depth", "1", "--steps", "2",
                              "--eval-every", "2", "--log-every", "2", "--checkpoints", "2", "--track", "none", "-q",
                              "--out", str(out), *extra])
    return res, out


def _savez(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good(n=20, **over):
    rng = np.random.default_rng(0)
    d = {"x": rng.normal(size=(n, 1, 8)), "y": rng.integers(0, 3, n), "input_shape": np.array([1, 8])}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def _crc_damaged(path):
    _savez(path, **_good())
    raw = bytearray(path.read_bytes())
    i = raw.find(np.asarray(_good()["x"]).tobytes()[:16])  # inside x's data: its CRC no longer matches
    raw[i + 5] ^= 0x01
    path.write_bytes(bytes(raw))


def _huge_header(path):
    """An .npz whose x claims 10^6 x 10^6 float64s in a few bytes: a reader trusting it allocates 8 TB."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", header.getvalue() + b"\0" * 64)
        for k, v in _good().items():
            if k != "x":
                b = io.BytesIO()
                np.save(b, v)
                z.writestr(f"{k}.npy", b.getvalue())


BAD_NPZ = {
    "label -1": (lambda p: _savez(p, **_good(y=np.array([-1] + [0] * 19))), "holds the label -1; class labels must be"),
    "label -100": (lambda p: _savez(p, **_good(y=np.array([-100] + [1] * 19))), "holds the label -100"),
    "label 1,000,000": (lambda p: _savez(p, **_good(y=np.array([10**6] + [1] * 19))),
                        "labels go up to 1000000 but there are only 20 samples"),
    "NaN in x": (lambda p: _savez(p, **_good(x=np.where(np.eye(20, 8)[:, None, :] > 0, np.nan, 1.0))),
                 "x holds NaN or inf"),
    "inf in y": (lambda p: _savez(p, **_good(y=np.r_[np.inf, np.zeros(19)])), "y holds NaN or inf"),
    "NaN in y_test": (lambda p: _savez(p, **_good(y=np.zeros(20), x_test=np.ones((4, 8)),
                                                  y_test=np.r_[np.nan, 0, 0, 0])),
                      "y_test holds NaN or inf"),
    "string x": (lambda p: _savez(p, **_good(x=np.array([["a"] * 8] * 20))),
                 "x has dtype <U1; probe needs real numbers"),
    "string y": (lambda p: _savez(p, **_good(y=np.array(["cat"] * 20))), "y has dtype <U3; targets must be"),
    "empty x": (lambda p: _savez(p, **_good(x=np.zeros((0, 8)), y=np.zeros(0, int))), "x is empty"),
    "one sample": (lambda p: _savez(p, **_good(n=1)), "test_frac 0.2 of 1 samples leaves an empty test split"),
    "scalar x": (lambda p: _savez(p, **_good(x=np.array(3.0))), "x has shape (); it must be (samples, features...)"),
    "empty x_test": (lambda p: _savez(p, **_good(x_test=np.zeros((0, 8)), y_test=np.zeros(0, int))), "x_test is empty"),
    "y_test shorter": (lambda p: _savez(p, **_good(x_test=np.ones((5, 8)), y_test=np.zeros(3, int))),
                       "x_test has 5 samples but y_test has 3"),
    "x_test without y_test": (lambda p: _savez(p, **_good(x_test=np.ones((5, 8)))), "has x_test but no y_test"),
    "input_shape 1.5": (lambda p: _savez(p, **_good(input_shape=np.array([1.5, 20]))),
                        "input_shape must be 2 or 3 positive integers"),
    "input_shape 0": (lambda p: _savez(p, **_good(input_shape=np.array([0, 8]))), "input_shape must be"),
    "complex x": (lambda p: _savez(p, **_good(x=np.ones((20, 8)) * (1 + 1j))), "x is complex (complex128)"),
    "2-D integer y": (lambda p: _savez(p, **_good(y=np.zeros((20, 2), int))), "they must be (N,)"),
    "periodic array": (lambda p: _savez(p, **_good(periodic=np.array([1, 0, 1]))), "periodic must be one boolean"),
    "plain .npy": (lambda p: p.write_bytes(_npy(np.zeros((20, 8)))), "a single .npy array, not an .npz archive"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(2000)), "not an .npz archive"),
    "empty file": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated": (lambda p: p.write_bytes(_npz(**_good())[:300]), "the file is damaged or truncated"),
    "bad CRC": (_crc_damaged, "the file is damaged or truncated (Bad CRC-32"),
    "pickled objects": (lambda p: _savez(p, **_good(x=np.array([{"a": 1}] * 20, dtype=object))),
                        "array x holds Python objects"),
    "huge claimed shape": (_huge_header, "array x claims shape (1000000, 1000000)"),
}


@pytest.mark.parametrize("kind", list(BAD_NPZ))
def test_bad_npz_files_get_one_line_and_exit_2_before_any_folder_is_written(tmp_path, kind):
    make, expected = BAD_NPZ[kind]
    path = tmp_path / "data.npz"
    make(path)
    res, out = _train_npz(tmp_path, path)
    assert res.exit_code == 2, res.output
    line = one_line(res.output)
    assert line.startswith(f"error: npz file {path}: ") and expected in line, line
    assert not out.exists()


def test_test_frac_leaving_an_empty_split_is_refused(tmp_path):
    path = _savez(tmp_path / "d.npz", **_good(n=4))
    res, out = _train_npz(tmp_path, path, "--task-opt", "test_frac=0.05")
    assert res.exit_code == 2 and "test_frac 0.05 of 4 samples leaves an empty test split" in one_line(res.output)
    res, out = _train_npz(tmp_path, path, "--task-opt", "test_frac=0.95")
    assert res.exit_code == 2 and "leaves an empty training split" in one_line(res.output)
    assert not out.exists()


def test_a_named_pipe_as_npz_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    res, out = _train_npz(tmp_path, tmp_path / "pipe.npz")
    assert res.exit_code == 2 and "not a regular file" in one_line(res.output) and not out.exists()


def test_boolean_labels_are_two_classes_and_good_npz_files_train(tmp_path):
    from probe.tasks import make_task

    rng = np.random.default_rng(0)
    path = _savez(tmp_path / "b.npz", **_good(y=rng.integers(0, 2, 20).astype(bool)))
    task = make_task(f"npz:{path}")
    assert task.loss == "ce" and task.n_outputs == 2
    path = _savez(tmp_path / "i.npz", **_good(x=rng.integers(0, 255, (20, 8)).astype(np.uint8),
                                               input_shape=np.array([1.0, 8.0])))
    res, out = _train_npz(tmp_path, path)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "task.json").read_text())["n_outputs"] == 3


BAD_NUMBERS = [
    (["train", "--task", "mnist1d", "--seed", "-1"], "error: --seed must be an integer in [0, 4294967295]; got -1"),
    (["train", "--task", "mnist1d", "--seed", str(10**20)], "error: --seed must be an integer in [0, 4294967295]"),
    (["train", "--task", "mnist1d", "--depth", "100000"], "error: --depth must be <= 1000; got 100000"),
    (["train", "--task", "mnist1d", "--checkpoints", "100000000"], "error: --checkpoints must be <= 10000"),
    (["train", "--task", "mnist1d", "--task-opt", "num_samples=0"],
     "error: task mnist1d: num_samples must be >= 10 (one example per digit), got 0"),
    (["train", "--task", "mnist1d", "--task-opt", "data_seed=-1"],
     "error: task mnist1d: option data_seed must be an integer in [0, 4294967295], got -1"),
    (["train", "--task", "mnist1d-shuffled", "--task-opt", "perm_seed=-3"],
     "error: task mnist1d-shuffled: option perm_seed must be an integer in [0, 4294967295], got -3"),
    (["analyze", "RUN", "--seed", "-1"], "error: Invalid value for '--seed'"),
    (["analyze", "RUN", "--seed", str(10**20)], "error: Invalid value for '--seed'"),
    (["demo", "--seed", "-1"], "error: Invalid value for '--seed'"),
]


@pytest.mark.parametrize("args,message", BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_numbers_out_of_their_range_get_one_line_and_exit_2(tmp_path, run, args, message):
    out = tmp_path / "out"
    args = [str(run) if a == "RUN" else a for a in args]
    extra = (["--out", str(out)] if args[0] in ("train", "demo") else []) + (["-q"] if args[0] == "train" else [])
    res = runner.invoke(app, [*args, *extra])
    assert res.exit_code == 2, res.output
    assert one_line(res.output).startswith(message), res.output
    assert not out.exists()


# -- analyze refuses what no measure reads -------------------------------------------------------------------
def _state_dict(kind):
    w = torch.randn(8, 40)
    if kind == "nan":
        w[3, 5] = float("nan")
    elif kind == "inf":
        w[0, 0] = float("inf")
    elif kind == "all-zero":
        w = torch.zeros(8, 40)
    elif kind == "zero-row":
        w = torch.zeros(0, 40)
    return {"0.weight": w, "1.weight": torch.randn(3, 8)}


@pytest.mark.parametrize("kind,expected", [("nan", "0.weight holds NaN or inf (1 of 320 entries"),
                                           ("inf", "0.weight holds NaN or inf"),
                                           ("all-zero", "layer 0: weights are all zero"),
                                           ("zero-row", "layer 0: weights of shape (0, 40) are empty")])
def test_analyze_refuses_weights_no_measure_reads_with_one_line(tmp_path, kind, expected):
    path = tmp_path / "sd.pt"
    torch.save(_state_dict(kind), path)
    res = runner.invoke(app, ["analyze", str(path), "--input-shape", "1,40"])
    assert res.exit_code == 2, res.output
    line = one_line(res.output)
    assert line.startswith(f"error: checkpoint {path}: ") and expected in line and "refused" in line, line


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """A run trained on past a NaN (--on-nan continue): its later checkpoints hold NaN."""
    out = tmp_path_factory.mktemp("div") / "r"
    cfg = RunConfig(task="mnist1d", width=8, depth=1, steps=30, batch_size=50, optimizer="sgd", lr=1e3, log_every=10,
                    eval_every=10, checkpoints=6, on_nan="continue", track="none")
    run_training(cfg, out, progress=False)
    return out


def test_analyze_of_a_diverged_run_is_refused_and_all_steps_leaves_those_steps_out(diverged, tmp_path):
    res = runner.invoke(app, ["analyze", str(diverged), "--no-data"])
    assert res.exit_code == 2
    assert "holds NaN or inf" in one_line(res.output) and "refused" in res.output
    res = runner.invoke(app, ["analyze", str(diverged), "--all-steps", "--no-data", "--csv", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    assert "left out: " in res.output and "holds NaN or inf" in res.output
    steps = set(__import__("pandas").read_csv(tmp_path / "t.csv").step)
    assert 0 in steps and 30 not in steps


def test_a_stride_0_view_claiming_terabytes_is_refused(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"0.weight": torch.zeros(1).expand(10**6, 10**6)}, path)
    assert path.stat().st_size < 4000
    res = runner.invoke(app, ["analyze", str(path), "--input-shape", "1,40"])
    assert res.exit_code == 2
    assert "tensor 0.weight claims shape (1000000, 1000000) (4,000,000,000,000 bytes)" in one_line(res.output)


def test_a_named_pipe_as_checkpoint_is_refused_without_blocking(tmp_path):
    import signal

    os.mkfifo(tmp_path / "pipe.pt")

    def hung(signum, frame):
        raise AssertionError("analyze blocked on a named pipe")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        res = runner.invoke(app, ["analyze", str(tmp_path / "pipe.pt"), "--input-shape", "1,40"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert res.exit_code == 2
    assert one_line(res.output) == (f"error: checkpoint {tmp_path / 'pipe.pt'}: "
                                    "a named pipe, not a regular file; refused")


def test_a_state_dict_that_does_not_fit_names_the_key(tmp_path, run):
    from probe.run.checkpoint import checksums

    ck = load_checkpoint(list_checkpoints(run)[-1][1])
    ck["state_dict"]["layers.9.weight"] = ck["state_dict"].pop("readout.weight")
    ck["checksums"] = checksums(ck)
    torch.save(ck, tmp_path / "c.pt")
    res = runner.invoke(app, ["analyze", str(tmp_path / "c.pt"), "--no-data"])
    assert res.exit_code == 2
    line = one_line(res.output)
    assert "missing readout.weight" in line and "unexpected layers.9.weight" in line, line


def test_analyze_names_the_file_it_cannot_write(tmp_path, run):
    for flag in ("--csv", "--json"):
        target = tmp_path / "nonexistent" / "dir" / "x.out"
        res = runner.invoke(app, ["analyze", str(run), "--no-data", flag, str(target)])
        assert res.exit_code == 2
        assert res.output.strip().splitlines()[-1] == f"error: cannot write {target}: No such file or directory"


# -- figures ------------------------------------------------------------------------------------------------
def _figures(runs, out, *extra):
    return runner.invoke(app, ["figures", *map(str, runs), "--out", str(out), *extra])


@pytest.mark.parametrize("where,expected", [("/proc/figs", "--out /proc/figs: cannot write there"),
                                            ("FILE", "is a file, not a folder")])
def test_figures_out_that_cannot_be_written_is_one_line(tmp_path, run, where, expected):
    out = Path(where) if where != "FILE" else tmp_path / "afile"
    if where == "FILE":
        out.write_text("x")
    res = _figures([run], out)
    assert res.exit_code == 2, res.output
    assert expected in one_line(res.output)


@pytest.mark.parametrize("damage,expected", [
    ("metrics-broken", None), ("metrics-empty", None), ("metrics-not-rows", None),
    ("config-malformed", "config.json: not readable as JSON"), ("config-list", "config.json: expected a JSON object"),
])
def test_figures_of_damaged_run_folders_never_trace_back(tmp_path, run, damage, expected):
    import shutil

    r = tmp_path / "r"
    shutil.copytree(run, r)
    what, how = damage.split("-", 1)
    f = r / ("metrics.jsonl" if what == "metrics" else "config.json")
    f.write_text({"broken": '{"step": 0, "train_lo\n', "empty": "", "not-rows": '[1, 2]\n"x"\n',
                  "malformed": "{task: mnist1d", "list": "[1, 2]"}[how])
    res = _figures([r], tmp_path / "figs")
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if expected:
        assert res.exit_code == 2 and expected in one_line(res.output)
    else:
        assert res.exit_code == 0, res.output


def test_figures_of_nan_weights_say_why_fields_and_spectra_are_skipped(diverged, tmp_path):
    res = _figures([diverged], tmp_path / "figs")
    assert res.exit_code == 0, res.output
    assert re.search(r"fields: skipped \(run r: its first layer at step \d+ holds NaN or inf \(a diverged run\)\)",
                     res.output), res.output
    assert "spectra: skipped (run r: its first layer at step 30 holds NaN or inf" in res.output
    assert "Internal Error" not in res.output


def test_figures_with_an_unknown_measure_say_so(tmp_path, run):
    res = _figures([run], tmp_path / "figs", "--measures", "nosuch")
    assert res.exit_code == 2
    line = one_line(res.output)
    assert line.startswith("error: --measures nosuch: no such measure") and "ipr" in line, line
    assert not (tmp_path / "figs").exists()


def test_a_figure_that_cannot_be_written_names_the_file_and_keeps_the_others(tmp_path, run, monkeypatch):
    import errno

    import probe.run.checkpoint as ck

    real = ck.atomic_write

    def full(path, write):
        if Path(path).name == "accuracy.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, write)

    monkeypatch.setattr(ck, "atomic_write", full)
    out = tmp_path / "figs"
    res = _figures([run], out)
    assert res.exit_code == 1
    line = one_line(res.output.strip().splitlines()[-1])
    assert line == (f"error: cannot write {out / 'accuracy.png'} (No space left on device); the 2 files written "
                    "before it are kept")
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.pdf", "measures.pdf", "measures.png"]


# -- loose ends ---------------------------------------------------------------------------------------------
def test_a_failed_disk_check_leaves_nothing_behind(tmp_path, monkeypatch):
    import shutil

    import probe.run.folder

    monkeypatch.setattr(probe.run.folder.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    out = tmp_path / "new" / "r"
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--width", "8", "--steps", "5", "-q", "--out", str(out)])
    assert res.exit_code == 2 and "only 0.0 MB is free" in one_line(res.output)
    assert not (tmp_path / "new").exists()  # no empty folders, no .write-test file, no lock
    (tmp_path / "mine").mkdir()
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--width", "8", "--steps", "5", "-q", "--out",
                              str(tmp_path / "mine")])
    assert res.exit_code == 2 and list((tmp_path / "mine").iterdir()) == []  # a folder that was there stays


def test_a_batch_larger_than_the_data_is_recorded_as_the_batch_that_ran(tmp_path):
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--width", "8", "--depth", "1", "--steps", "2",
                              "--batch-size", "100000", "--checkpoints", "2", "--track", "none", "-q", "--out",
                              str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["batch_size"] == 4000
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "step_2.pt")["config"]["batch_size"] == 4000
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0, res.output
    from probe.run.loop import setup  # the shift augmentation draws its batches from the training set too

    cfg = RunConfig(task="mnist1d", task_opts={"augment_shift": 2}, width=8, depth=1, batch_size=10**5)
    assert setup(cfg, tmp_path / "unused").cfg.batch_size == 4000


def test_out_into_a_folder_holding_other_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    res = runner.invoke(app, ["train", "--task", "mnist1d", "--width", "8", "--steps", "5", "-q", "--out", str(out)])
    assert res.exit_code == 2
    assert one_line(res.output) == (f"error: --out {out}: holds files that are not a run's (notes.txt); "
                                    "give a new or empty folder")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_sweep_summary_of_a_folder_that_is_not_a_sweep_writes_nothing_into_it(tmp_path, run):
    import shutil

    shutil.copytree(run, tmp_path / "runs" / "a")
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    res = runner.invoke(app, ["sweep", str(tmp_path / "runs"), "--summary"])
    assert res.exit_code == 0, res.output
    assert "not a sweep folder: nothing written there" in res.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before
    res = runner.invoke(app, ["sweep", str(tmp_path / "runs" / "a"), "--summary"])
    assert res.exit_code == 2 and "a run folder, not a sweep folder" in one_line(res.output)
