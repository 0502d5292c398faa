"""Readings of a measure against the null that decides it (probe/analysis/verdicts.py, `probe analyze`)."""

import json

import numpy as np

from probe.analysis import terminal, verdicts
from probe.analysis.report import Report
from probe.geometry import Geometry


def test_deciding_nulls_follow_the_docs_rule():
    assert verdicts.deciding_null("window_mass_3") == "phase"
    assert verdicts.deciding_null("shift_match") == "phase"
    assert verdicts.deciding_null("conv_distance_5") == "lcn"
    assert verdicts.deciding_null("delta_window_mass_3") == "phase"
    assert verdicts.deciding_null("grad_conv_distance_3") == "lcn"
    assert verdicts.deciding_null("stable_rank") is None


def test_the_issue_cases_read_as_the_readme_rule_says():
    # an MNIST MLP: above the drawn Gaussian and permuted lines, below the phase null: not local
    word, d = verdicts.verdict("window_mass_3", 0.036, 0.063)
    assert word == "below" and np.isclose(d, -0.027)
    # a CNN's shift_match 0.762 against a null of 0.756: within 5%, at the null
    assert verdicts.verdict("shift_match", 0.762, 0.756)[0] == "at"
    # low is structure for conv_distance: 0.27 against an lcn null of 0.95 is above (more sharing)
    word, d = verdicts.verdict("conv_distance_5", 0.27, 0.95)
    assert word == "above" and np.isclose(d, 0.68)
    line = verdicts.reading("conv_distance_5", 0.27, 0.95, "lcn")
    assert "below its lcn null" in line and "weight sharing beyond the null" in line
    line = verdicts.reading("window_mass_3", 0.036, 0.063, "phase")
    assert line.startswith("window_mass_3 0.036: below its phase null 0.063 by 0.027 (-43%)")


def test_tolerance_edges():
    assert verdicts.verdict("ipr", 1.049, 1.0)[0] == "at"
    assert verdicts.verdict("ipr", 1.051, 1.0)[0] == "above"
    assert verdicts.verdict("ipr", 0.949, 1.0)[0] == "below"
    assert verdicts.verdict("spread", 0.949, 1.0)[0] == "above"  # compacter than the null


def _report(checkpoint="x"):
    rep = Report(checkpoint=checkpoint, step=5, geometry=Geometry(channels=1, spatial=(40,), periodic=False),
                 layers={"layers.0": {"window_mass_3": 0.036, "stable_rank": 3.0, "hoyer": 0.2}})
    rep.shapes = {"layers.0": (100, 40)}
    rep.reference["phase"]["layers.0"] = {"window_mass_3": 0.063}
    rep.reference["gaussian"]["layers.0"] = {"window_mass_3": 0.034, "stable_rank": 6.0}
    return rep


def test_terminal_lines_read_only_measures_with_their_deciding_null(tmp_path):
    lines = terminal.verdict_lines(_report())
    assert any(l.strip().startswith("window_mass_3 0.036: below its phase null") for l in lines)
    assert not any("stable_rank" in l or "hoyer" in l for l in lines)  # no null deciding / none present


def test_stride_note_for_strided_cnn_runs_only(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "cnn", "model_opts": {"stride": 2}}))
    lines = terminal.verdict_lines(_report(str(run / "checkpoints" / "step_5.pt")))
    assert any(l.startswith("note: stride 2") and "shift_match" in l for l in lines)
    (run / "config.json").write_text(json.dumps({"model": "cnn", "model_opts": {"stride": 1}}))
    assert not any("stride" in l for l in terminal.verdict_lines(_report(str(run / "checkpoints" / "step_5.pt"))))


def test_an_exact_stride_2_convolution_reads_as_the_stride_note_says():
    import torch

    from probe.metrics.equivariance import conv_distance, shift_match
    from probe.metrics.nulls import references
    from probe.models import build_model
    from probe.tasks import make_task

    task = make_task("mnist1d", {}, seed=0)
    got = {}
    for stride in (1, 2):
        torch.manual_seed(0)
        W = build_model("cnn", task, 100, 2, "standard", {"stride": stride}).first_layer_dense()
        W = W.detach().numpy() if torch.is_tensor(W) else np.asarray(W)
        lcn = references(W, task.geometry, seed=0, names=["shift_match"])["lcn"]["shift_match"]
        got[stride] = (conv_distance(W, task.geometry, 5), shift_match(W, task.geometry)["shift_match"], lcn)
    assert got[1][1] > 0.9 and got[2][1] < got[2][2]  # stride 2: below its lcn null, by construction
    assert 0.2 < got[1][0] < 0.3 and 0.2 < got[2][0] < 0.3  # the zero-padded border, at either stride


def test_notes_read_from_a_damaged_config_json_are_left_out_not_a_traceback(tmp_path):
    """Before: `probe analyze` of a run whose config.json was a JSON list raised AttributeError in the stride note,
    and one nested 100,000 deep a RecursionError (the checkpoint carries its own config, so the report itself is
    fine): both notes are now left out."""
    (tmp_path / "checkpoints").mkdir()
    for text in ("[1, 2]", '{"model": "cnn", "model_opts": [2]}', "[" * 100_000 + "]" * 100_000):
        (tmp_path / "config.json").write_text(text)
        assert verdicts.stride_note(tmp_path / "checkpoints" / "step_4.pt") is None
        assert terminal.unfinished_note(tmp_path) is None
