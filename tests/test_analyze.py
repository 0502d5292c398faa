"""`probe analyze` and probe.analysis.report: layout, references, plain state_dicts, --all-steps, CNN vs MLP, pictures,
one-line errors."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from probe.analysis.load import load_layers
from probe.analysis.report import analyze_checkpoint, analyze_run
from probe.metrics.nulls import lcn_measures
from probe.cli import app
from probe.metrics import references

runner = CliRunner()
FAST = ["--eval-every", "10", "--log-every", "10", "-q", "--device", "cpu"]


def _train(out, *args):
    res = runner.invoke(app, ["train", *args, *FAST, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, slow_setup):
    return _train(tmp_path_factory.mktemp("mlp") / "run", "--task", "mnist1d", "--width", "16", "--depth", "2",
                  "--steps", "40", "--checkpoints", "4")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, slow_setup):
    # stride 1: the first layer written densely is a (zero-padded) convolution
    return _train(tmp_path_factory.mktemp("cnn") / "run", "--task", "mnist1d", "--model", "cnn", "--model-opt",
                  "stride=1", "--model-opt", "layers=1", "--model-opt", "channels=4", "--model-opt", "kernel=3",
                  "--steps", "10", "--checkpoints", "2")


def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


def test_piped_tables_print_full_measure_names_and_values(mlp_run):
    """Output to a file or a pipe (CliRunner is not a terminal) is not squeezed to 80 columns: no name or value is
    cut with an ellipsis, whatever the number of reference columns."""
    res = runner.invoke(app, ["analyze", str(mlp_run), "--no-data", "--delta"])
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    rows = [ln.split()[0] for ln in res.output.splitlines() if ln.startswith(" ")]
    assert {"window_mass_3", "window_mass_5", "delta_window_mass_3", "delta_displacement_median"} <= set(rows)


def test_json_has_layers_in_network_order_with_every_reference(mlp_run, tmp_path):
    res = runner.invoke(app, ["analyze", str(mlp_run), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert list(r["layers"]) == ["layers.0", "layers.1", "readout"]  # network order, not alphabetical
    assert r["step"] == 40 and r["geometry"]["spatial"] == [40] and r["model"] == "mlp"
    first = r["layers"]["layers.0"]
    assert {"ipr", "spread", "window_mass_3", "shift_match", "conv_distance_5", "movement", "input_pc_share",
            "effective_rank", "stable_rank", "alpha"} <= set(first)
    assert set(r["layers"]["readout"]) == {"movement", "effective_rank", "stable_rank", "alpha"}
    assert first["movement"] > 0
    ref = r["reference"]
    assert set(ref) == {"init", "init_seeds", "gaussian", "permuted", "phase", "lcn"}
    assert list(ref["gaussian"]) == ["layers.0", "layers.1", "readout"]
    for null in ("permuted", "phase", "lcn", "init_seeds"):  # the first layer's geometric nulls
        assert list(ref[null]) == ["layers.0"]
    assert {"shift_match", "window_mass_3", "spread"} <= set(ref["phase"]["layers.0"])
    assert "effective_rank" not in ref["phase"]["layers.0"]  # no eigendecomposition for the new nulls
    assert set(ref["lcn"]["layers.0"]) == {"conv_distance_3", "conv_distance_5", "shift_match", "shift_match_units"}
    # the MLP's own uniform initializer on other seeds, below the Gaussian null
    assert ref["init_seeds"]["layers.0"]["ipr"] < ref["gaussian"]["layers.0"]["ipr"]
    assert list(ref["init"]) == ["layers.0", "layers.1", "readout", "function"]
    # ipr measures concentration: the permuted null keeps it exactly
    assert ref["permuted"]["layers.0"]["ipr"] == pytest.approx(first["ipr"], rel=1e-12)
    # the function section re-evaluates the rebuilt model on the whole test split: the numbers training recorded
    last_row = json.loads((mlp_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_row["step"] == 40
    assert r["function"]["test_acc"] == last_row["test_acc"]
    assert r["function"]["test_loss"] == pytest.approx(last_row["test_loss"], rel=1e-6)
    assert "shift_consistency_1" in r["function"]
    assert "lie_derivative" in ref["init"]["function"]


def test_references_agree_with_probe_metrics_references(mlp_run):
    rep = analyze_checkpoint(mlp_run, data=False, seed=3)
    layers, geo = load_layers(mlp_run)
    want = references(layers["layers.0"], geo, seed=3)
    for null in ("gaussian", "permuted", "phase", "lcn"):
        for k in ("ipr", "window_mass_5", "shift_match", "conv_distance_3"):
            if k in want[null]:
                got = rep.reference[null]["layers.0"][k]
                assert got == pytest.approx(want[null][k], rel=1e-9, abs=1e-12), (null, k)
    for null in ("permuted", "phase", "lcn"):  # computed in parts on two threads, merged: every key
        got = rep.reference[null]["layers.0"]
        assert got == pytest.approx(want[null], rel=1e-12, abs=1e-15), null
        if null != "lcn":  # (lcn's keys come per window size, in another order than references() gives them)
            assert list(got) == list(want[null]), null
    # lcn in the order the one call of nulls.lcn_measures gives (window 3 first), as reports had it before the split
    assert list(rep.reference["lcn"]["layers.0"]) == list(lcn_measures(layers["layers.0"], geo, 3))


def test_report_is_the_same_on_one_thread_and_on_several(mlp_run, monkeypatch):
    """The jobs of an analysis (spectra, the first layer's measures, each reference, the functional measures) give
    the same report whether they run in turn or side by side on threads: each draws from its own seeded
    generators."""
    from probe.analysis import jobs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(jobs, "default_workers", lambda: 1)
    alone = analyze_checkpoint(mlp_run, seed=2)
    monkeypatch.setattr(jobs, "default_workers", lambda: 3)
    together = analyze_checkpoint(mlp_run, seed=2)
    assert json.dumps(together.to_dict()) == json.dumps(alone.to_dict())


def test_plain_sequential_state_dict_with_input_shape(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2 * 6 * 6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3))
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    res = runner.invoke(app, ["analyze", str(tmp_path / "sd.pt"), "--input-shape", "2,6,6", "--periodic",
                              "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert list(r["layers"]) == ["0", "2", "4"] and r["geometry"]["periodic"] is True
    assert r["reference"]["init"] == {} and "ipr" in r["layers"]["0"] and "movement" not in r["layers"]["0"]
    assert r["layers"]["0"]["ipr"] == pytest.approx(analyze_checkpoint(tmp_path / "sd.pt", input_shape=(2, 6, 6),
                                                                       periodic=True).layers["0"]["ipr"])
    line = _one_error_line(runner.invoke(app, ["analyze", str(tmp_path / "sd.pt"), "--input-shape", "1,28,28"]))
    assert "first layer 0 takes 72 inputs" in line and "784" in line
    line = _one_error_line(runner.invoke(app, ["analyze", str(tmp_path / "sd.pt")]))
    assert line == (f"error: checkpoint {tmp_path / 'sd.pt'}: its first layer 0 takes 72 inputs; give their grid "
                    "with --input-shape C,L or C,H,W (input_shape= in Python)")
    line = _one_error_line(runner.invoke(app, ["analyze", str(tmp_path / "sd.pt"), "--input-shape", "2,x"]))
    assert "C,L or C,H,W" in line


def test_all_steps_gives_one_row_per_step_layer_and_measure(mlp_run, tmp_path):
    res = runner.invoke(app, ["analyze", str(mlp_run), "--all-steps", "--no-data", "--csv", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "t.csv")
    steps = sorted(int(p.stem.split("_")[1]) for p in (mlp_run / "checkpoints").glob("step_*.pt"))
    assert sorted(df.step.unique()) == steps and len(steps) >= 3
    assert not df.duplicated(["step", "layer", "measure"]).any()
    per_step = df.groupby("step").size()
    assert (per_step == per_step.iloc[0]).all()  # the same layers and measures at every step
    assert set(df.layer) == {"layers.0", "layers.1", "readout"}
    assert list(df.columns) == ["checkpoint", "step", "layer", "measure", "value", "init", "init_seeds", "gaussian",
                                "permuted", "phase", "lcn"]
    # step 0 is every step's init: its value equals the init column, and it has not moved
    zero = df[df.step == 0].set_index(["layer", "measure"])
    same = zero.drop(index="movement", level="measure")
    assert np.allclose(same["value"], same["init"])
    assert zero.loc[("readout", "movement"), "value"] == 0
    last = df[df.step == steps[-1]].set_index(["layer", "measure"])
    assert last.loc[("layers.0", "ipr"), "init"] == zero.loc[("layers.0", "ipr"), "value"]
    # the library function gives the same table
    lib = analyze_run(mlp_run, data=False)
    assert len(lib) == len(df) and np.allclose(lib["value"].astype(float), df["value"], equal_nan=True)


def test_cnn_first_layer_is_a_convolution_and_mlp_is_not(cnn_run, mlp_run):
    cnn = analyze_checkpoint(cnn_run, data=False)
    mlp = analyze_checkpoint(mlp_run, data=False)
    assert list(cnn.layers)[0] == "layers.0.dense" and cnn.shapes["layers.0.dense"] == (4 * 40, 40)
    c, m = cnn.layers["layers.0.dense"], mlp.layers["layers.0"]
    # a zero-padded conv loses only its border units under a circular shift: 38 of 40 positions match
    assert c["shift_match"] > 0.95 and c["window_mass_3"] == pytest.approx(1.0)
    # (measured: 0.98 vs 0.55; the MLP's smooth early fields match their own shifts, hence not near 0)
    assert m["shift_match"] < 0.75 and c["shift_match"] - m["shift_match"] > 0.3 and m["window_mass_3"] < 0.5
    assert cnn.reference["gaussian"]["layers.0.dense"]["shift_match"] < 0.6
    assert cnn.reference["permuted"]["layers.0.dense"]["window_mass_3"] < 0.8  # contiguity destroyed


def test_fields_writes_png_and_pdf_with_truetype_fonts(cnn_run, tmp_path):
    res = runner.invoke(app, ["analyze", str(cnn_run), "--no-data", "--fields", str(tmp_path / "f.pdf")])
    assert res.exit_code == 0, res.output
    png, pdf = (tmp_path / "f.png").read_bytes(), (tmp_path / "f.pdf").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf  # fonttype 42: TrueType embedded


@pytest.mark.parametrize("args,message", [
    (["--layer", "layers.9"], "valid layers: layers.0, layers.1, readout"),
    (["--fields", "f.jpg"], ".png, .pdf or .svg"),
    (["--input-shape", "1,20"], "stores its own geometry"),
])
def test_bad_options_get_one_line_and_exit_code_2(mlp_run, args, message):
    line = _one_error_line(runner.invoke(app, ["analyze", str(mlp_run), "--no-data", *args]))
    assert message in line


def test_files_that_are_not_checkpoints_get_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a PyTorch checkpoint" in _one_error_line(runner.invoke(app, ["analyze", str(tmp_path / "notes.txt")]))
    torch.save({"a": 1}, tmp_path / "d.pt")
    line = _one_error_line(runner.invoke(app, ["analyze", str(tmp_path / "d.pt"), "--input-shape", "1,4"]))
    assert "neither a probe checkpoint nor a state_dict" in line
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    assert "no checkpoints" in _one_error_line(runner.invoke(app, ["analyze", str(tmp_path / "empty_run")]))


@pytest.mark.slow
def test_sequence_checkpoint_reports_routing_measures(tmp_path):
    pytest.importorskip("probe.metrics.routing")
    run = _train(tmp_path / "seq", "--task", "mqar", "--task-opt", "n_train=256", "--task-opt", "n_test=128",
                 "--width", "8", "--depth", "1", "--steps", "2", "--checkpoints", "2")
    rep = analyze_checkpoint(run, n_data=64)
    assert rep.geometry.kind == "sequence" and list(rep.layers)[0] == "mlp.layers.0"
    assert {"test_acc", "position_ipr", "routing_accuracy"} <= set(rep.function)
    # its null, position_ipr@gaussian, reported as the gaussian reference of position_ipr
    assert not [k for k in rep.function if k.startswith("position_ipr") and k != "position_ipr"]
    assert rep.reference["gaussian"]["function"]["position_ipr"] > 0
    # the image measures of the first layer do not apply to a token layer: left out, and the report says so
    assert not {"ipr", "window_mass_3", "shift_match"} & set(rep.layers["mlp.layers.0"])
    assert any("sequence task" in n for n in rep.notes)
    # without data the model is rebuilt from a task shell and gives the same weights
    assert analyze_checkpoint(run, data=False).layers["mlp.layers.0"]["stable_rank"] == \
        rep.layers["mlp.layers.0"]["stable_rank"]


@pytest.mark.slow
def test_a_cnn_report_names_the_conv_layers_it_leaves_out(tmp_path):
    run = _train(tmp_path / "cnn3", "--task", "mnist1d", "--model", "cnn", "--model-opt", "channels=4",
                 "--steps", "2", "--checkpoints", "1")
    rep = analyze_checkpoint(run, data=False)
    assert list(rep.layers)[0] == "layers.0.dense"
    note = next(n for n in rep.notes if n.startswith("left out"))
    assert "layers.1 (4x4x5)" in note and "layers.2 (4x4x5)" in note and "layers.0 " not in note


def test_all_steps_table_fits_the_terminal_with_full_names(mlp_run):
    from probe.analysis.report import analyze_steps
    from probe.analysis.terminal import shown_steps, steps_tables
    from rich.console import Console

    assert shown_steps(10, 200, 20, 2) == list(range(10))
    assert shown_steps(10, 80, 20, 2) == [0, 4, 9]  # first, last, evenly spaced between
    reps = analyze_steps(mlp_run, data=False)
    tables, note = steps_tables(reps, 80)
    assert note and "--csv" in note
    console = Console(width=80, record=True, file=io.StringIO())
    for t in tables:
        console.print(t)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text and "displacement_median" in text and "shift_match_units" in text


def test_all_steps_measures_step_zero_once_with_the_values_of_a_fresh_measure(mlp_run, tmp_path, monkeypatch):
    import shutil

    from probe.analysis import report

    calls = []
    real = report.first_layer_measures
    monkeypatch.setattr(report, "first_layer_measures", lambda W, *a, **k: calls.append(k.get("W0") is not None)
                        or real(W, *a, **k))
    reps = report.analyze_steps(mlp_run, data=True)
    # the checkpoints' own first layers (measured with W0) once each; step 0 is the init reference, not measured again
    assert reps[0].step == 0 and calls.count(True) == len(reps) - 1
    monkeypatch.setattr(report, "first_layer_measures", real)
    copy = tmp_path / "step_0.pt"  # the same weights in another file: measured afresh against the run's step 0
    shutil.copy(mlp_run / "checkpoints" / "step_0.pt", copy)
    fresh = report.analyze_checkpoint(copy, init=mlp_run / "checkpoints" / "step_0.pt")
    assert list(reps[0].layers) == list(fresh.layers)
    for name, values in fresh.layers.items():
        assert list(reps[0].layers[name]) == list(values)  # movement where a fresh measure puts it
        assert reps[0].layers[name] == {k: pytest.approx(v, rel=1e-12, abs=1e-15) for k, v in values.items()}
    assert reps[0].function == {k: pytest.approx(v, rel=1e-12) for k, v in fresh.function.items()}


@pytest.mark.slow
def test_only_the_analyze_command_keeps_freed_memory(mlp_run, monkeypatch):
    """Reusing freed memory is a setting of the process (glibc's mallopt), kept until it exits: `probe analyze`
    makes it for itself; the library's analyze (a notebook, a training process) leaves the process as it was."""
    from probe.analysis import jobs

    calls = []
    monkeypatch.setattr(jobs, "keep_freed_memory", lambda: calls.append(1) or True)
    analyze_checkpoint(mlp_run, data=False, layer="readout")
    assert calls == []
    res = CliRunner().invoke(app, ["analyze", str(mlp_run), "--no-data", "--layer", "readout"])
    assert res.exit_code == 0, res.output
    assert calls == [1]
