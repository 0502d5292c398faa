"""Checkpoints that detect their own corruption, and `probe check RUN`."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from probe.cli import app
from probe.config import RunConfig
from probe.run.check import check_run
from probe.run.checkpoint import (CheckpointError, checksums, list_checkpoints, load_checkpoint, step_path,
                                  verify_checksums)
from probe.run.loop import run_training
from probe.run.metrics_file import parse_metrics, read_metrics

runner = CliRunner()
TINY = dict(task="mnist1d", width=8, depth=1, steps=40, batch_size=50, eval_every=20, log_every=10, checkpoints=4)
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def run(tmp_path_factory, slow_setup):
    out = tmp_path_factory.mktemp("run") / "r"
    run_training(RunConfig(**TINY), out, progress=False)
    return out


@pytest.fixture
def copy(run, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(run, out)
    return out


def flip_bit(path: Path, tensor: torch.Tensor, at: int = 13, bit: int = 0x40) -> None:
    """Flip one bit inside ``tensor``'s bytes where they sit in the file (torch stores them uncompressed)."""
    raw = bytearray(path.read_bytes())
    i = raw.find(tensor.contiguous().numpy().tobytes()[:32])
    assert i > 0
    raw[i + at] ^= bit
    path.write_bytes(bytes(raw))


# -- checksums ----------------------------------------------------------------------------------------------
def test_every_checkpoint_carries_a_checksum_of_each_tensor(run):
    ck = load_checkpoint(step_path(run, 40))
    names = set(ck["checksums"]["tensors"])
    assert {"state_dict/layers.0.weight", "state_dict/readout.bias", "rng/torch", "loss_accum/sum",
            "optimizer/state/0/exp_avg"} <= names
    assert ck["checksums"]["algorithm"] == "crc32" and verify_checksums(ck) is None


@pytest.mark.parametrize("where,name", [(("state_dict", "layers.0.weight"), "state_dict/layers.0.weight"),
                                        (("optimizer", "state", 0, "exp_avg_sq"), "optimizer/state/0/exp_avg_sq")])
def test_a_flipped_bit_is_reported_by_name_everywhere(copy, where, name):
    path = step_path(copy, 40)
    t = load_checkpoint(path)
    for k in where:
        t = t[k]
    flip_bit(path, t)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"checkpoint {path}: tensor {name} fails its checksum (stored ")
    assert str(info.value).endswith("the file is corrupted")
    for args in (["analyze", str(copy), "--no-data"], ["train", "--resume", str(copy), "-q"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and f"tensor {name} fails its checksum" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["check", str(copy)])
    assert res.exit_code == 1
    assert f"problem  checkpoints/step_40.pt  tensor {name} fails its checksum" in res.output


def test_a_changed_field_fails_the_fields_checksum(tmp_path, run):
    ck = load_checkpoint(step_path(run, 40))
    ck["config"]["lr"] = 0.5  # as a flipped bit in the pickled config would change it
    torch.save(ck, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="its config, step or other non-tensor fields fail their checksum"):
        load_checkpoint(tmp_path / "c.pt")
    ck = load_checkpoint(step_path(run, 40))
    ck["state_dict"]["extra"] = torch.zeros(2)
    torch.save(ck, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="tensor state_dict/extra has no checksum"):
        load_checkpoint(tmp_path / "d.pt")


def _without_checksums(run_dir: Path) -> None:
    """The run as probe wrote it before checkpoints carried checksums (version 1, no ``checksums`` key)."""
    for _, p in list_checkpoints(run_dir):
        ck = torch.load(p, weights_only=True)
        ck.pop("checksums", None)
        torch.save(ck, p)


def test_checkpoints_without_checksums_still_load_resume_and_check(tmp_path, run):
    old = tmp_path / "old"
    shutil.copytree(run, old)
    _without_checksums(old)
    assert "checksums" not in load_checkpoint(step_path(old, 40))
    # interrupted old run: drop its last checkpoints and resume it with this probe
    for s, p in list_checkpoints(old):
        if s > 6:
            p.unlink()
    run_training(RunConfig(**TINY), old, progress=False, resume=True)
    assert (old / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    for s, _ in list_checkpoints(run):
        a, b = load_checkpoint(step_path(old, s)), load_checkpoint(step_path(run, s))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
    _without_checksums(old)
    res = runner.invoke(app, ["check", str(old)])
    assert res.exit_code == 0, res.output
    assert "without checksums (written before probe had them): loaded, not verified" in res.output
    res = runner.invoke(app, ["analyze", str(old), "--no-data"])
    assert res.exit_code == 0, res.output


@pytest.mark.skipif(not (DATA / "run_v1").is_dir(), reason="no tests/data/run_v1 fixture in this checkout")
def test_the_stored_version_1_run_folder_still_loads():
    from probe.analysis.load import load_run

    loaded = load_run(DATA / "run_v1", data=False)
    assert loaded.first_layer.ndim == 2
    assert check_run(DATA / "run_v1").ok


def test_checksums_do_not_depend_on_the_device_or_memory_layout():
    w = torch.randn(6, 4)
    a = checksums({"state_dict": {"w": w}})
    b = checksums({"state_dict": {"w": w.t().contiguous().t()}})  # same values, column-major
    assert a == b
    assert checksums({"state_dict": {"w": w.double()}}) != a  # the dtype is part of it


# -- probe check --------------------------------------------------------------------------------------------
def test_check_passes_a_sound_run(run):
    rep = check_run(run)
    assert rep.ok and rep.state == "done", rep.lines()
    res = runner.invoke(app, ["check", str(run)])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert [ln.split()[1] for ln in lines[:-1]] == ["config.json", "task.json", "metrics.jsonl", "checkpoints",
                                                    "reference.json"]
    assert all(ln.split()[0] == "ok" for ln in lines[:-1])
    assert lines[-1] == f"{run}: sound (done)"


def _damage(run_dir: Path, how: str) -> str:
    if how == "duplicated rows":
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        (run_dir / "metrics.jsonl").write_text("\n".join([lines[0]] + lines) + "\n")
        return "step(s) 0 logged more than once"
    if how == "missing rows":
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        (run_dir / "metrics.jsonl").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
        return "row(s) of step 20 missing (up to the last checkpoint, step 40)"
    if how == "a cut row":
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write('{"step": 50, "train_lo')
        return "is not JSON (cut short by a crash?)"
    if how == "missing checkpoint":
        step_path(run_dir, 6).unlink()  # the schedule is 0, 1, 6, 40
        return "step(s) 6 of the schedule missing"
    if how == "another config":
        cfg = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**cfg, "lr": 0.5}))
        return "written with another config than config.json (differs in lr)"
    if how == "bad config":
        (run_dir / "config.json").write_text('{"task": "mnist1d", "width": 0}')
        return "problem  config.json"
    if how == "no reference.json":
        (run_dir / "reference.json").unlink()
        return "missing for a finished tracked run; `probe train --resume"
    if how == "wrong step inside":
        ck = load_checkpoint(step_path(run_dir, 6))
        ck["step"] = 7
        ck["checksums"] = checksums(ck)
        torch.save(ck, step_path(run_dir, 6))
        return "holds step 7, not the 6 of its name"
    if how == "truncated checkpoint":
        p = step_path(run_dir, 40)
        p.write_bytes(p.read_bytes()[:5000])
        return "checkpoints/step_40.pt  truncated or damaged"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["duplicated rows", "missing rows", "a cut row", "missing checkpoint", "another config",
                                 "bad config", "no reference.json", "wrong step inside", "truncated checkpoint"])
def test_check_says_what_is_wrong(copy, how):
    expected = _damage(copy, how)
    res = runner.invoke(app, ["check", str(copy)])
    assert res.exit_code == 1, res.output
    assert expected in res.output, res.output
    assert "Traceback" not in res.output and res.output.strip().splitlines()[-1].startswith(f"{copy}: ")


def test_config_keys_an_older_probe_did_not_write_take_their_defaults(copy):
    """A run written before a RunConfig field existed: neither config.json nor its checkpoints have the key."""
    for _, p in list_checkpoints(copy):
        ck = torch.load(p, weights_only=True)
        del ck["config"]["compile"]
        ck["checksums"] = checksums(ck)
        torch.save(ck, p)
    cfg = json.loads((copy / "config.json").read_text())
    del cfg["compile"]
    (copy / "config.json").write_text(json.dumps(cfg))
    assert check_run(copy).ok, check_run(copy).lines()


def test_check_notes_what_is_not_wrong_but_worth_knowing(copy):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (copy / ".lock").write_text(json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname(),
                                            "start": None, "since": "then"}))
    (copy / "checkpoints" / ".step_40.pt.tmp-123").write_bytes(b"x")
    res = runner.invoke(app, ["check", str(copy)])
    assert res.exit_code == 0, res.output
    assert "note     .lock" in res.output and "stale" in res.output
    assert "1 left by an interrupted write (checkpoints/.step_40.pt.tmp-123)" in res.output


def test_check_of_an_interrupted_run_says_how_to_continue(copy):
    for s, p in list_checkpoints(copy):
        if s > 6:
            p.unlink()
    (copy / "reference.json").unlink()  # written after the last checkpoint: an interrupted run has none
    rep = check_run(copy)
    assert rep.ok and rep.state.startswith("partial"), rep.lines()
    assert any("4 row(s) after the last checkpoint (step 6)" in f.message for f in rep.findings)


def test_check_of_something_that_is_not_a_run_folder_is_exit_2(tmp_path):
    for target in (tmp_path, tmp_path / "missing"):
        res = runner.invoke(app, ["check", str(target)])
        assert res.exit_code == 2 and res.output.startswith(f"error: {target}: not a run folder")


def test_one_parser_reads_metrics_jsonl_for_training_resume_and_check(copy):
    """parse_metrics is the one reader of metrics.jsonl: a damaged line is skipped and the rows after it kept,
    and read_metrics (training, figures) and probe check see the same rows and the same bad lines."""
    text = ('{"step": 0, "a": 1}\n'
            "\n"  # a blank line is neither
            '{"step": 1, "tra\x00\n'  # a damaged byte: not JSON
            '{"step": true}\n'  # JSON, not a row: a boolean step
            '[1, 2]\n'
            + "[" * 100_000 + "\n"  # deep enough for json's RecursionError: still just a bad line
            + '{"step": 2}\n{"step": 3, "train_lo')  # the last row cut short by a crash: no newline after it
    rows, bad = parse_metrics(text)
    assert rows == [{"step": 0, "a": 1}, {"step": 2}]
    assert [(b.number, b.is_json, b.whole) for b in bad] == [(3, False, True), (4, True, True), (5, True, True),
                                                             (6, False, True), (8, False, False)]
    assert [b.reason for b in bad[:2]] == ["is not JSON", "is not a row with an integer step"]
    assert parse_metrics("") == ([], [])

    good = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    lines = [json.dumps(r) for r in good]
    damaged = lines[:2] + ['{"step": 10, "tra\x00', "[" * 100_000] + lines[2:]
    (copy / "metrics.jsonl").write_text("\n".join(damaged) + "\n" + '{"step": 99, "tr')
    assert read_metrics(copy) == good
    found = [f.message for f in check_run(copy).findings if f.what == "metrics.jsonl" and f.level == "problem"]
    assert found == ["line 3 is not JSON", "line 4 is not JSON", f"line {len(damaged) + 1} is not JSON (cut short by a "
                                                                 "crash?)"]
