"""`probe analyze --all-steps` measures every checkpoint it can: one whose training state is damaged is measured
from its intact weights, one whose weights are damaged is left out, each named in a note."""

import pytest
import torch
from typer.testing import CliRunner

from probe.analysis.report import analyze_steps
from probe.cli import app
from probe.config import RunConfig
from probe.run.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from probe.run.loop import run_training


def _damage(path, part):
    ck = torch.load(path, weights_only=True)
    if part == "optimizer":
        state = next(iter(ck["optimizer"]["state"].values()))
        state["exp_avg"] = state["exp_avg"] + 1.0
    else:
        ck["state_dict"]["layers.0.weight"] = ck["state_dict"]["layers.0.weight"] * 2
    torch.save(ck, path)  # the stored checksums are kept: now they fail


@pytest.mark.slow
def test_all_steps_measures_past_damaged_checkpoints(tmp_path):
    run = tmp_path / "r"
    run_training(RunConfig(task="mnist1d", width=8, depth=1, steps=30, eval_every=10, log_every=10, checkpoints=5,
                           device="cpu", track="none"), run, progress=False)
    ckpts = list_checkpoints(run)
    assert len(ckpts) >= 4
    (s_opt, p_opt), (s_w, p_w) = ckpts[1], ckpts[2]
    _damage(p_opt, "optimizer")
    _damage(p_w, "weights")
    with pytest.raises(CheckpointError, match="optimizer"):
        load_checkpoint(p_opt)  # never resumed from
    assert "state_dict" in load_checkpoint(p_opt, weights_only_intact=True)
    with pytest.raises(CheckpointError, match="state_dict/layers.0.weight"):
        load_checkpoint(p_w, weights_only_intact=True)
    reports = analyze_steps(run, data=False)
    assert [r.step for r in reports] == [s for s, _ in ckpts if s != s_w]
    notes = " ".join(reports[0].notes)
    assert f"step {s_w} left out" in notes and "state_dict/layers.0.weight" in notes
    assert f"step {s_opt} measured from its weights" in notes and "optimizer" in notes
    res = CliRunner().invoke(app, ["analyze", str(run), "--all-steps", "--no-data"])
    assert res.exit_code == 0, res.output
    assert f"step {s_w} left out" in res.output
