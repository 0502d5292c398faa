"""`probe sweep --list` and `--dry-run` give the runs, their steps and a time from measured ones."""

import json

from typer.testing import CliRunner

from probe.cli import app
from probe.sweep import spec as sw

SPEC = {"name": "t", "base": {"task": "mnist1d", "steps": 300}, "grid": {"seed": [0, 1, 2]},
        "quick": {"base": {"steps": 50}, "measured": "1 min wall, --jobs 2"}, "medium": {"grid": {"seed": [0]}}}


def test_size_and_recorded_time_of_each_scale():
    quick = sw.expand(SPEC, "quick")
    assert sw.size_text(quick) == "3 runs, 50 steps each"
    assert sw.estimate_text(quick) == "measured: 1 min wall, --jobs 2"
    medium = sw.expand(SPEC, "medium")
    assert sw.size_text(medium) == "1 runs, 300 steps each"
    assert sw.estimate_text(medium).startswith("no measured time")


def test_estimate_from_the_sweeps_own_finished_runs(tmp_path):
    quick = sw.expand(SPEC, "quick")
    for r, secs in zip(quick.runs[:2], (40.0, 60.0)):
        (tmp_path / r.name).mkdir()
        (tmp_path / r.name / "result.json").write_text(json.dumps({"status": "done", "seconds": secs}))
    text = sw.estimate_text(quick, tmp_path, jobs=1)
    assert text.startswith("about 50 s left for 1 run with --jobs 1") and "2 finished runs" in text


def test_estimate_counts_each_run_left_at_its_own_kind_of_run(tmp_path):
    """Before: the mean of all finished runs; 26 fast narrow runs made 46 slow wide ones read 16 min, not 2 h."""
    spec = {"name": "t", "base": {"task": "mnist1d", "steps": 50}, "grid": {"width": [10, 1000], "seed": [0, 1]}}
    runs = sw.expand(spec).runs
    for r in runs:
        if r.config["seed"] == 0 or r.config["width"] == 10:  # both narrow runs, one wide one
            secs = 10.0 if r.config["width"] == 10 else 1000.0
            (tmp_path / r.name).mkdir()
            (tmp_path / r.name / "result.json").write_text(json.dumps({"status": "done", "seconds": secs}))
    text = sw.estimate_text(sw.expand(spec), tmp_path, jobs=1)
    assert text.startswith("about 17 min left for 1 run "), text  # the wide run's other seed, not the mean 340 s
    assert sw.estimate_text(sw.expand(spec), tmp_path, jobs=4).startswith("about 17 min")  # not 17 min / 4


def test_list_and_dry_run_show_sizes_and_times(tmp_path):
    res = CliRunner().invoke(app, ["sweep", "--list"])
    assert res.exit_code == 0, res.output
    assert "quick: 40 runs, 6000 steps" in " ".join(res.output.split())  # mnist1d-controls: 8 variants x 5 seeds
    res = CliRunner().invoke(app, ["sweep", "--preset", "sparsity", "--dry-run", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "30 runs, 3000 steps each" in res.output and "time: measured: 2.6 min wall" in res.output
    assert "steps" in res.output.splitlines()[2]


def test_a_damaged_result_json_counts_as_a_run_left(tmp_path):
    """Before: a result.json holding a JSON list ([1]) raised AttributeError in the time estimate of a re-run."""
    quick = sw.expand(SPEC, "quick")
    for r, text in zip(quick.runs, ("[1]", "{", "[" * 100_000 + "]" * 100_000)):
        (tmp_path / r.name).mkdir()
        (tmp_path / r.name / "result.json").write_text(text)
    assert sw.estimate_text(quick, tmp_path) == "measured: 1 min wall, --jobs 2"
