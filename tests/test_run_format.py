"""A run folder written by an earlier version still loads: analyze, figures, the rebuilt model and resume.

tests/data/run_v1 is a 20-step, width-8 MNIST-1D MLP (checkpoint format version 1) made once with

    OMP_NUM_THREADS=1 python -m probe.cli train --task mnist1d --steps 20 --width 8 --checkpoints 3 \\
        --eval-every 10 --log-every 10 --device cpu --out tests/data/run_v1 -q

and committed. Never regenerate it to make a failing test pass: a failure here means a change broke run folders
that exist on people's disks (then read the old format, or say in the README that it changed). The tests only
read it; those that write work on a copy.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from probe.analysis.load import build_probe_model, load_layers, load_task, read_source, resolve_checkpoint
from probe.analysis.report import analyze_checkpoint
from probe.cli import app
from probe.metrics import first_layer_measures
from probe.run.checkpoint import list_checkpoints, load_checkpoint
from probe.run.loop import evaluate

RUN = Path(__file__).parent / "data" / "run_v1"
TRACKED = ("ipr", "ipr_frac_above", "window_mass_3", "hoyer", "movement")  # the default set when it was made
runner = CliRunner()


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def untouched():
    """Fails a test that writes into the committed fixture."""
    before = snapshot(RUN)
    assert set(before) == {"config.json", "task.json", "metrics.jsonl", "reference.json", "checkpoints/step_0.pt",
                           "checkpoints/step_1.pt", "checkpoints/step_20.pt"}
    yield
    assert snapshot(RUN) == before, "a test wrote into tests/data/run_v1"


def test_the_fixture_is_small_and_what_its_docstring_says(untouched):
    assert sum(p.stat().st_size for p in RUN.rglob("*") if p.is_file()) < 200_000
    cfg = json.loads((RUN / "config.json").read_text())
    assert (cfg["task"], cfg["model"], cfg["width"], cfg["depth"], cfg["steps"]) == ("mnist1d", "mlp", 8, 2, 20)
    assert [s for s, _ in list_checkpoints(RUN)] == [0, 1, 20]
    assert [r["step"] for r in rows(RUN)] == [0, 10, 20]


def test_checkpoints_load_and_the_rebuilt_model_gives_the_recorded_accuracy_and_measures(untouched):
    ck = load_checkpoint(RUN / "checkpoints" / "step_20.pt")
    assert (ck["format"], ck["version"], ck["step"]) == ("probe-checkpoint", 1, 20)
    assert ck["config"] == json.loads((RUN / "config.json").read_text())
    source = read_source(resolve_checkpoint(RUN))
    assert source.step == 20 and source.run_dir == RUN and source.geometry.spatial == (40,)
    model = build_probe_model(source)
    assert [tuple(p.shape) for p in model.parameters()] == [(8, 40), (8,), (8, 8), (8,), (10, 8), (10,)]
    last = rows(RUN)[-1]
    ev = evaluate(model, *(lambda t: (t.x_test, t.y_test, t.loss))(load_task(source.config)))
    assert ev["acc"] == last["test_acc"]  # 205 of the 1000 test inputs, as training counted them
    assert ev["loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    # the first layer, measured now, against what tracking recorded when the run was made
    layers, geo = load_layers(RUN)
    W0 = load_layers(RUN / "checkpoints" / "step_0.pt")[0]["layers.0"]
    now = first_layer_measures(layers["layers.0"], geo, [n for n in TRACKED if n != "movement"], W0)
    assert set(now) == set(TRACKED)
    for k in TRACKED:
        assert now[k] == pytest.approx(last[k], rel=1e-6, abs=1e-12), k


@pytest.mark.slow
def test_probe_analyze_reads_it_and_reports_the_recorded_numbers(untouched, tmp_path):
    res = runner.invoke(app, ["analyze", str(RUN), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["step"] == 20 and r["model"] == "mlp" and list(r["layers"]) == ["layers.0", "layers.1", "readout"]
    last, ref = rows(RUN)[-1], json.loads((RUN / "reference.json").read_text())
    assert r["function"]["test_acc"] == last["test_acc"]
    assert r["function"]["test_loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    for k in TRACKED:
        assert r["layers"]["layers.0"][k] == pytest.approx(last[k], rel=1e-6, abs=1e-12), k
    # the references tracking wrote at the last step: the same nulls, the same seed
    for null in ("init", "gaussian", "permuted"):
        for k, v in ref[null].items():
            assert r["reference"][null]["layers.0"][k] == pytest.approx(v, rel=1e-6, abs=1e-12), (null, k)
    # and the library report is the same
    rep = analyze_checkpoint(RUN, data=False)
    assert rep.layers["layers.0"]["ipr"] == pytest.approx(r["layers"]["layers.0"]["ipr"], rel=1e-12)


@pytest.mark.slow
def test_probe_figures_draws_it(untouched, tmp_path):
    # fewer panels than the defaults draw (drawing is what costs here): every file of the run is still read
    res = runner.invoke(app, ["figures", str(RUN), "--out", str(tmp_path), "--steps", "20", "--measures",
                              "ipr,movement"])
    assert res.exit_code == 0, res.output
    assert "routing: skipped (no sequence runs)" in res.output
    for name in ("measures", "accuracy", "fields", "spectra"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000, (name, ext)


@pytest.mark.slow
def test_probe_train_resumes_it_to_the_recorded_end(untouched, tmp_path):
    """Resume from step 1 (as if step 20 had never been written): the old optimizer, scheduler and RNG state are
    read and training ends where the recorded run ended."""
    run = tmp_path / "run_v1"
    shutil.copytree(RUN, run)
    (run / "checkpoints" / "step_20.pt").unlink()
    (run / "reference.json").unlink()
    res = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert [s for s, _ in list_checkpoints(run)] == [0, 1, 20]
    old = snapshot(RUN)
    assert all(snapshot(run)[f] == old[f] for f in ("checkpoints/step_0.pt", "checkpoints/step_1.pt"))  # resumed
    got, want = rows(run), rows(RUN)
    assert [sorted(r) for r in got] == [sorted(r) for r in want]  # the same rows with the same keys
    for g, w in zip(got, want):
        for k in w:
            if k not in ("seconds", "samples_per_s"):
                assert g[k] == pytest.approx(w[k], rel=1e-5, abs=1e-7), (g["step"], k)
    a = load_checkpoint(run / "checkpoints" / "step_20.pt")["state_dict"]
    b = load_checkpoint(RUN / "checkpoints" / "step_20.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in b:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
