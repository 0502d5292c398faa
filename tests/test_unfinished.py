"""A half-written run is said to be one: `probe analyze` notes how far it got, `probe figures` warns that it
draws it as far as it got and without references."""

import pytest
from typer.testing import CliRunner

from probe.analysis.terminal import unfinished_note
from probe.cli import app
from probe.config import RunConfig
from probe.figures.make import make_figures
from probe.run.checkpoint import list_checkpoints
from probe.run.loop import run_training


@pytest.mark.slow
def test_unfinished_runs_are_named_by_analyze_and_figures(tmp_path):
    run = tmp_path / "r"
    run_training(RunConfig(task="mnist1d", width=8, depth=1, steps=30, eval_every=10, log_every=10, checkpoints=4,
                           device="cpu"), run, progress=False)
    assert unfinished_note(run) is None
    ckpts = list_checkpoints(run)
    ckpts[-1][1].unlink()  # killed before its last checkpoint and reference.json
    (run / "reference.json").unlink()
    last = ckpts[-2][0]
    note = unfinished_note(run)
    assert note.startswith(f"unfinished run: its last checkpoint is step {last} of 30") and "--resume" in note
    assert unfinished_note(ckpts[0][1]) == note  # a checkpoint inside it too
    res = CliRunner().invoke(app, ["analyze", str(run), "--no-data"])
    assert res.exit_code == 0, res.output
    assert f"note: unfinished run: its last checkpoint is step {last} of 30" in res.output
    said = []
    make_figures([run], tmp_path / "figs", which=("measures",), say=said.append)
    assert any(f"unfinished, its last checkpoint is step {last} of 30" in m and "no references yet" in m
               for m in said), said
