"""Figures (probe/plots.py), their tidy tables (probe/figdata.py) and `probe figures` (probe/figures.py)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from typer.testing import CliRunner

from probe import figdata, plots
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.figures import make_figures
from probe.train import run_training

TINY = dict(task="mnist1d", width=8, depth=1, steps=40, batch_size=50, eval_every=20, log_every=10, checkpoints=3,
            device="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny MLP runs (seeds 0, 1) and a CNN run, with the default tracked measures."""
    root = tmp_path_factory.mktemp("runs")
    for name, kw in [("mlp-s0", {}), ("mlp-s1", {"seed": 1}), ("cnn-s0", {"model": "cnn", "model_opts": {"channels": 4}})]:
        run_training(RunConfig(**{**TINY, **kw}), root / name, progress=False)
    return root


@pytest.fixture(scope="module")
def seq_runs(tmp_path_factory):
    """An MLP and a transformer briefly trained on the same associative-recall task."""
    root = tmp_path_factory.mktemp("seq")
    base = dict(task="mqar", task_opts={"n_train": 256, "n_test": 64}, steps=10, batch_size=32, eval_every=10,
                log_every=10, checkpoints=2, device="cpu", track="none")
    run_training(RunConfig(**base, model="mlp", width=32, depth=1), root / "mlp", progress=False)
    run_training(RunConfig(**base, model="transformer", width=16, depth=1), root / "transformer", progress=False)
    return root


def synthetic_runs(n_runs=2, seeds=1):
    """A load_runs-shaped table: n_runs models x seeds, ipr and test_acc at 4 steps."""
    rows = []
    for r in range(n_runs):
        for s in range(seeds):
            for step in (0, 10, 100, 1000):
                for metric, v in (("ipr", 0.05 + 0.01 * r + 0.001 * s + step * 1e-5), ("test_acc", 0.1 + step / 2000)):
                    rows.append(dict(run=f"m{r}-s{s}", step=step, metric=metric, value=v, model=f"m{r}", seed=s))
    return pd.DataFrame(rows)


def model_lines(ax):
    return [line for line in ax.get_lines() if line.get_gid() != "reference" and len(line.get_xdata()) > 1]


def test_load_runs_is_tidy_with_flattened_config_columns(runs):
    df = figdata.load_runs([runs])
    assert {"run", "step", "metric", "value", "model", "seed", "model_opts.channels"} <= set(df.columns)
    assert set(df.run) == {"mlp-s0", "mlp-s1", "cnn-s0"}
    ipr = df[(df.metric == "ipr") & (df.run == "mlp-s0")]
    assert list(ipr.step) == [0, 20, 40]
    assert {"train_loss", "test_acc", "movement"} <= set(df.metric) and "lr" not in set(df.metric)


def test_load_references_reads_each_runs_reference_json(runs):
    refs = figdata.load_references([runs])
    assert set(refs.reference) == {"init", "gaussian", "permuted"}
    assert set(refs.run) == {"mlp-s0", "mlp-s1", "cnn-s0"} and "width" in refs.columns


def test_a_figure_of_two_runs_draws_two_lines():
    fig = plots.measures_figure(synthetic_runs(2), measures=["ipr"])
    assert len(model_lines(fig.axes[0])) == 2
    fig = plots.accuracy_figure(synthetic_runs(2))
    assert len(model_lines(fig.axes[0])) == 2


def test_group_by_draws_a_mean_line_and_a_band_per_group():
    fig = plots.measures_figure(synthetic_runs(2, seeds=3), measures=["ipr"], group_by="model")
    ax = fig.axes[0]
    assert len(model_lines(ax)) == 2
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2  # +-1 sd over the 3 seeds
    m0 = model_lines(ax)[0].get_ydata()
    assert np.allclose(m0, [0.051 + s * 1e-5 for s in (0, 10, 100, 1000)])  # mean of seeds 0, 1, 2


def test_references_are_drawn_in_each_lines_colour(runs):
    df, refs = figdata.load_runs([runs]), figdata.load_references([runs])
    fig = plots.measures_figure(df, refs, measures=["window_mass_3"], hue="model")
    ax = fig.axes[0]
    ref_lines = [line for line in ax.get_lines() if line.get_gid() == "reference"]
    assert len(ref_lines) == 2 * 2  # gaussian and permuted, for mlp and cnn
    assert len(model_lines(ax)) == 3  # every run its own line, coloured by model
    colours = {matplotlib.colors.to_hex(line.get_color()) for line in model_lines(ax)}
    assert {matplotlib.colors.to_hex(line.get_color()) for line in ref_lines} == colours


def test_unknown_group_key_names_the_valid_ones():
    with pytest.raises(KeyError, match="no config key 'widht'.*valid keys: model, run, seed"):
        plots.measures_figure(synthetic_runs(), group_by="widht")


def _figures(runs, seq_runs):
    df = figdata.load_runs([runs])
    return {
        "measures": lambda: plots.measures_figure(df, figdata.load_references([runs])),
        "accuracy": lambda: plots.accuracy_figure(df, hue="model"),
        "fields": lambda: plots.fields_grid_figure(figdata.load_fields([runs / "mlp-s0", runs / "cnn-s0"])),
        "spectra": lambda: plots.spectra_figure(*figdata.load_spectra([runs])),
        "routing": lambda: plots.routing_figure(figdata.load_routing([seq_runs])),
    }


@pytest.mark.parametrize("name", ["measures", "accuracy", "fields", "spectra", "routing"])
def test_each_figure_writes_non_empty_png_and_pdf_with_truetype_fonts(runs, seq_runs, tmp_path, name):
    fig = _figures(runs, seq_runs)[name]()
    pdf, png = plots.save(fig, tmp_path, name)
    assert (pdf.name, png.name) == (f"{name}.pdf", f"{name}.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and b"/FontFile2" in data  # pdf.fonttype 42: TrueType embedded


def test_routing_table_holds_the_mlps_jacobian_and_the_transformers_attention(seq_runs):
    r = figdata.load_routing([seq_runs])
    assert set(r.run) == {"mlp", "transformer"}
    assert set(r[r.run == "mlp"].method) == {"jacobian"}
    assert r[r.run == "transformer"].method.iloc[0].startswith("attention")
    sums = r.groupby(["run", "out_pos"]).weight.sum()
    assert np.allclose(sums, 1.0)
    assert r.source.any()


def test_fields_are_taken_at_first_middle_and_last_checkpoint(runs):
    f = figdata.load_fields([runs / "mlp-s0"])
    assert list(f.step) == [0, 1, 40]  # checkpoint_steps(40, 3)
    assert f.W.iloc[0].shape == (8, 40)


def test_make_figures_writes_every_figure_that_applies(runs, tmp_path):
    said = []
    written = make_figures([runs], tmp_path, group_by="model", steps=[40], prefix="t_", say=said.append)
    names = sorted(p.name for p in written)
    assert names == sorted(f"t_{n}.{ext}" for n in ("measures", "accuracy", "fields", "spectra") for ext in ("pdf", "png"))
    assert said == ["t_routing: skipped (no sequence runs)"]
    with pytest.raises(ConfigError, match="--group-by/--hue widht: no such config key"):
        make_figures([runs], tmp_path, group_by="widht")


def test_cli_figures(runs, tmp_path):
    res = CliRunner().invoke(app, ["figures", str(runs / "mlp-s0"), str(runs / "mlp-s1"), "--out", str(tmp_path),
                                   "--hue", "seed", "--steps", "40"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "measures.png").stat().st_size > 0 and (tmp_path / "fields.pdf").stat().st_size > 0
    res = CliRunner().invoke(app, ["figures", str(tmp_path / "nothing"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no such run folder" in res.output
