"""`probe figures` never replaces files it was not asked to: its default folder is beside the runs, and files
already in --out are replaced only with --overwrite (checked in a git-tracked temporary project)."""

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probe.cli import app

RUN = Path(__file__).parent / "data" / "run_v1"
runner = CliRunner()
FAST = ["--steps", "20", "--measures", "ipr"]  # few panels: drawing is what costs


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A git repository with a committed figures/ folder holding figure names `probe figures` writes, and a run."""
    repo = tmp_path / "project"
    (repo / "figures").mkdir(parents=True)
    for name in ("mnist1d_measures", "mnist1d_accuracy"):
        for ext in ("png", "pdf"):
            (repo / "figures" / f"{name}.{ext}").write_bytes(b"committed " + name.encode())
    shutil.copytree(RUN, repo / "runs" / "demo")
    _git(repo, "init", "-q")
    _git(repo, "add", "figures")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "figures")
    monkeypatch.chdir(repo)
    return repo


@pytest.mark.slow
def test_default_out_is_beside_the_runs_and_tracked_files_stay(project):
    res = runner.invoke(app, ["figures", "runs/demo", "--prefix", "mnist1d_", *FAST])
    assert res.exit_code == 0, res.output
    assert "figures -> runs/demo/figures" in res.output
    assert (project / "runs" / "demo" / "figures" / "mnist1d_measures.png").stat().st_size > 1000
    assert _git(project, "status", "--porcelain", "figures") == ""  # nothing tracked changed
    # drawing again into the same default folder is refused, naming what it would replace
    res = runner.invoke(app, ["figures", "runs/demo", "--prefix", "mnist1d_", *FAST])
    assert res.exit_code == 2
    assert "would replace" in res.output and "mnist1d_measures.pdf" in res.output and "--overwrite" in res.output


@pytest.mark.slow
def test_existing_files_are_replaced_only_with_overwrite(project):
    res = runner.invoke(app, ["figures", "runs/demo", "--out", "figures", "--prefix", "mnist1d_", *FAST])
    assert res.exit_code == 2
    assert "would replace 4 existing file(s)" in res.output
    assert _git(project, "status", "--porcelain") .strip() in ("", "?? runs/")
    res = runner.invoke(app, ["figures", "runs/demo", "--out", "figures", "--prefix", "mnist1d_", "--overwrite", *FAST])
    assert res.exit_code == 0, res.output
    assert "M figures/mnist1d_measures.png" in _git(project, "status", "--porcelain")
