"""Which thread count a run takes is said when it is more than one, and --threads may change on --resume."""

import json

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.config import RunConfig
from probe.models import build_model
from probe.run.loop import SMALL_WORK, thread_reason
from probe.tasks import make_task


def _model(cfg):
    task = make_task(cfg.task, cfg.task_opts, seed=0)
    return build_model(cfg.model, task, cfg.width, cfg.depth, cfg.param, cfg.model_opts)


def test_thread_reason_names_the_count_and_the_rule():
    small = RunConfig(task="mnist1d")
    assert thread_reason(small, _model(small)).startswith("1 torch thread: a small model")
    asked = RunConfig(task="mnist1d", threads=3)
    assert thread_reason(asked, _model(asked)) == "3 torch threads, as --threads asked"
    big = RunConfig(task="mnist1d", width=2048, batch_size=1000)
    model = _model(big)
    assert sum(p.numel() for p in model.parameters()) * 1000 >= SMALL_WORK
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        text = thread_reason(big, model)
    finally:
        torch.set_num_threads(before)
    assert text.startswith("2 torch threads (torch's setting here) for a large model") and "--threads 1" in text


@pytest.mark.slow
def test_resume_takes_threads_with_a_note(tmp_path):
    run = tmp_path / "r"
    args = ["train", "--task", "mnist1d", "--width", "8", "--depth", "1", "--steps", "30", "--eval-every", "10",
            "--log-every", "10", "--checkpoints", "3", "--out", str(run), "-q"]
    assert CliRunner().invoke(app, args).exit_code == 0
    last = max(run.glob("checkpoints/step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    last.unlink()  # as if killed before its last checkpoint
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    res = CliRunner().invoke(app, ["train", "--resume", str(run), "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert "note: --threads 2" in res.output and "last bits" in res.output
    assert "2 torch threads, as --threads asked" in res.output
    assert last.exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(rows)
    assert json.loads((run / "config.json").read_text())["threads"] == 0
    check = CliRunner().invoke(app, ["check", str(run)])
    assert check.exit_code == 0, check.output
