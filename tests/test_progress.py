"""probe.progress: how far a long loop is and how long it has left."""

import io

import pytest

from probe.progress import duration, progress, progress_line


def test_progress_line_estimates_the_time_left_from_the_mean_so_far():
    assert progress_line("checkpoints", 3, 12, 30.0) == "checkpoints: 3/12, 30 s so far, about 1.5 min left"
    assert progress_line("checkpoints", 0, 12, 1.0) == "checkpoints: 0/12, 1 s so far"
    assert progress_line("checkpoints", 12, 12, 7200.0) == "checkpoints: 12/12, 2.0 h so far"
    assert duration(89) == "89 s" and duration(5400) == "1.5 h"


def test_progress_writes_lines_when_not_a_terminal():
    out = io.StringIO()
    assert list(progress(range(4), "steps", every_s=0.0, stream=out)) == [0, 1, 2, 3]
    lines = out.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["steps: 1/4", "steps: 2/4", "steps: 3/4", "steps: 4/4"]
    assert "left" in lines[0] and "left" not in lines[-1]


def test_a_short_loop_writes_nothing():
    out = io.StringIO()
    assert list(progress(iter("abc"), "letters", total=3, every_s=60.0, stream=out)) == ["a", "b", "c"]
    assert out.getvalue() == ""
    with pytest.raises(ValueError):
        list(progress(iter("abc"), "letters"))  # no len(): the total must be given


def test_progress_bar_yields_every_item():
    out = io.StringIO()
    assert list(progress([1, 2, 3], "items", stream=out, bar=True)) == [1, 2, 3]
