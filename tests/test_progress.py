"""probe.progress: a bar on a terminal, a plain line every few seconds (and at the end) in a log, nothing when off."""

import io

import probe.progress
from probe.progress import Progress


def test_a_log_gets_lines_with_the_count_status_and_time_left(monkeypatch):
    monkeypatch.setattr(probe.progress, "EVERY", 0.0)  # a line at every update
    out = io.StringIO()
    with Progress(4, "mlp on mnist1d", "step", stream=out) as bar:
        for i in range(1, 5):
            bar.update(i, f"loss {1 / i:.2f}")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("mlp on mnist1d: step 1/4 (25%), loss 1.00, ") and "left" in lines[0]
    assert lines[-1].startswith("mlp on mnist1d: step 4/4 (100%), loss 0.25") and "left" not in lines[-1]


def test_lines_are_spaced_in_time_and_the_end_is_always_said():
    out = io.StringIO()
    with Progress(1000, "analyze", "checkpoint", stream=out) as bar:  # EVERY = 10 s: no line in between
        for i in range(1, 1001):
            bar.update(i)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]
    assert out.getvalue().startswith("analyze: checkpoint 1000/1000 (100%)")


def test_disabled_or_resumed_with_nothing_new_prints_nothing():
    out = io.StringIO()
    with Progress(10, "x", stream=out, enabled=False) as bar:
        bar.update(10)
    with Progress(10, "x", start=10, stream=out) as bar:  # a finished run resumed: nothing done here
        pass
    assert out.getvalue() == ""
