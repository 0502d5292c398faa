"""Models and tasks of another package, found through the entry point groups probe.models and probe.tasks: a tiny
distribution (a module and its .dist-info with entry_points.txt) written to a temporary folder, nothing installed
or downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.config import ConfigError

PLUGIN = '''
from probe.models import build_model, register as register_model
from probe.tasks import make_task, register as register_task


@register_model("plugmlp", "an MLP from a plugin")
def plugmlp(task, width, depth, param="standard"):
    return build_model("mlp", task, width, depth, param)


@register_task("plugdigits", "digits from a plugin")
def plugdigits(seed=0):
    return make_task("digits", {}, seed=seed)
'''


def write_plugin(root: Path, body: str = PLUGIN) -> Path:
    (root / "probeplug.py").write_text(body)
    info = root / "probeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: probeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[probe.models]\nplug = probeplug\n\n[probe.tasks]\nplug = probeplug\n")
    return root


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    from probe import plugins
    from probe.models import MODELS
    from probe.tasks import TASKS

    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for registry, name in ((MODELS, "plugmlp"), (TASKS, "plugdigits")):
        registry.pop(name, None)
    for group in list(plugins._loaded):
        plugins._loaded[group] = {k for k in plugins._loaded[group] if k[1] != "probeplug"}
    sys.modules.pop("probeplug", None)


def test_entry_points_register_models_and_tasks_at_lookup(on_path):
    from probe.models import build_model, model_specs
    from probe.tasks import make_task, task_specs

    write_plugin(on_path)
    assert "plugmlp" in model_specs() and "plugdigits" in task_specs()
    task = make_task("plugdigits", {}, seed=0)
    model = build_model("plugmlp", task, 8, 1)
    assert model.first_layer_dense().shape == (8, task.geometry.n_inputs)


def test_a_plugin_that_fails_to_import_is_named_in_one_line(on_path):
    from probe.plugins import load_plugins

    write_plugin(on_path, "raise RuntimeError('broken on purpose')\n")
    with pytest.raises(ConfigError, match=r"plugin plug = probeplug .*probeplug\) failed to import: RuntimeError: "
                                          "broken on purpose"):
        load_plugins("probe.models")


@pytest.mark.slow
def test_the_cli_and_its_worker_processes_see_a_plugin(tmp_path):
    """`probe models` lists it; a sweep with --jobs 2 trains it in worker processes, and one through submitit's
    local executor in submitit jobs (each a fresh Python)."""
    write_plugin(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "probe", "models"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "plugmlp" in out.stdout, out.stderr
    (tmp_path / "s.toml").write_text('name = "plug"\n[base]\ntask = "plugdigits"\nmodel = "plugmlp"\nwidth = 4\n'
                                     'depth = 1\nsteps = 5\neval-every = 5\nlog_every = 5\ncheckpoints = 2\n'
                                     '[grid]\nseed = [0, 1]\n')
    sw = subprocess.run([sys.executable, "-m", "probe", "sweep", str(tmp_path / "s.toml"), "--out",
                         str(tmp_path / "sw"), "--jobs", "2"], env=env, capture_output=True, text=True)
    assert sw.returncode == 0, sw.stdout + sw.stderr
    assert sw.stdout.count(": done") == 2, sw.stdout
    # submitit's local executor: each job is a fresh process that unpickles the job and looks the names up
    pytest.importorskip("submitit")
    sub = subprocess.run([sys.executable, "-m", "probe", "sweep", str(tmp_path / "s.toml"), "--out",
                          str(tmp_path / "sub"), "--executor", "submitit-local"], env=env,
                         capture_output=True, text=True)
    assert sub.returncode == 0 and sub.stdout.count(": done") == 2, sub.stdout + sub.stderr
