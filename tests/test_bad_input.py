"""No bad input crashes and no checkpoint runs code (issue 8, items 4 and 5)."""

import io
import json
import os
import pickle
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
    (["--model", "cnn", "--model-opt", "channels=-2"], "error: model cnn with options {'channels': -2} cannot be built"),
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
    assert "valid options: dim, fresh, gain, n_test, n_train, periodic, size, xi0, xi1" in res.output


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
    assert one_line(res.output) == f"error: --resume continues the run in its own folder {run}; drop --out {tmp_path / 'elsewhere'}"
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
