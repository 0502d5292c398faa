"""Figures (probe/figures/plots.py), their tidy tables (probe/figures/tables.py) and `probe figures`
(probe/figures.py)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from typer.testing import CliRunner

from probe.figures import tables as figdata, plots
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.figures.make import make_figures
from probe.run.loop import run_training

TINY = dict(task="mnist1d", width=8, depth=1, steps=40, batch_size=50, eval_every=20, log_every=10, checkpoints=3,
            device="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, slow_setup):
    """Two tiny MLP runs (seeds 0, 1) and a CNN run, with the default tracked measures."""
    root = tmp_path_factory.mktemp("runs")
    for name, kw in [("mlp-s0", {}), ("mlp-s1", {"seed": 1}),
                     ("cnn-s0", {"model": "cnn", "model_opts": {"channels": 4}})]:
        run_training(RunConfig(**{**TINY, **kw}), root / name, progress=False)
    return root


@pytest.fixture(scope="module")
def seq_runs(tmp_path_factory, slow_setup):
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
    assert set(refs.reference) == {"init", "init_seeds", "gaussian", "permuted", "phase"}
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
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # the 95% t interval over the 3 seeds
    m0 = model_lines(ax)[0].get_ydata()
    assert np.allclose(m0, [0.051 + s * 1e-5 for s in (0, 10, 100, 1000)])  # mean of seeds 0, 1, 2
    # seeds add 0, 0.001, 0.002: sd 0.001, half-width t_{0.975, 2} * 0.001 / sqrt(3) = 0.0024841 (not 1 sd, 0.001)
    y = bands[0].get_paths()[0].vertices[:, 1]
    assert y.max() - y.min() == pytest.approx(1000e-5 + 2 * 4.302653 * 0.001 / np.sqrt(3), abs=1e-6)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("95% t interval" in s and "n = 3" in s for s in labels)


def test_references_are_drawn_in_each_lines_colour(runs):
    df, refs = figdata.load_runs([runs]), figdata.load_references([runs])
    fig = plots.measures_figure(df, refs, measures=["window_mass_3"], hue="model")
    ax = fig.axes[0]
    ref_lines = [line for line in ax.get_lines() if line.get_gid() == "reference"]
    assert len(ref_lines) == 3 * 2  # gaussian, permuted and the deciding phase null, for mlp and cnn
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
    assert names == sorted(f"t_{n}.{ext}" for n in ("measures", "accuracy", "fields", "spectra")
                           for ext in ("pdf", "png"))
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


# -- end-of-run values against a swept key -------------------------------------------------------------------
def _hand_run(root, name, variant, seed, last_acc, n_train, **files):
    """A run folder written by hand: config, two metrics rows, task.json, sweep_run.json and ``files``."""
    import json

    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(RunConfig(seed=seed).to_dict()))
    rows = [{"step": 0, "lr": 0.01, "test_acc": 0.1, "ipr": 0.05}, {"step": 10, "lr": 0.01, "test_acc": last_acc}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "task.json").write_text(json.dumps({"n_train": n_train}))
    (d / "sweep_run.json").write_text(json.dumps({"varied": {"variant": variant, "seed": seed}, "procedure": "ecnn"}))
    for fname, obj in files.items():
        (d / f"{fname}.json").write_text(json.dumps(obj))
    return d


def test_load_final_takes_last_values_final_measures_and_procedure_results(tmp_path):
    _hand_run(tmp_path, "r", "imp", 3, 0.7, 123,
              result={"status": "done", "test_acc": 0.7,
                      "measures": {"lie_derivative": 2.0, "lie_derivative@init": 5.0}},
              procedure={"line_barrier": 0.5, "round_test_acc": [0.6, 0.7], "note": "x"})
    f = figdata.load_final([tmp_path / "r"])
    got = dict(zip(f.metric, f.value))
    assert got == {"test_acc": 0.7, "ipr": 0.05, "lie_derivative": 2.0, "lie_derivative@init": 5.0, "line_barrier": 0.5}
    assert set(f["task.n_train"]) == {123} and set(f.variant) == {"imp"} and set(f.procedure) == {"ecnn"}
    assert set(f.seed) == {3}


def test_a_sweeps_runs_come_in_the_order_of_its_grid(tmp_path):
    import json

    for name in ("a", "b", "c"):
        _hand_run(tmp_path, name, name, 0, 0.5, 10)
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": [{"name": "c"}, {"name": "a"}]}))
    assert [d.name for d in figdata.run_dirs([tmp_path])] == ["c", "a", "b"]  # b is not in the grid: last


def _final_table():
    """mlp and cnn x (250, 500, 1000) x seeds 0, 1: test_acc, window_mass_3 (with a permuted null that differs and
    a gaussian null equal to the value) and lie_derivative spanning 3 decades with an @init null."""
    rows, refs = [], []
    for model in ("mlp", "cnn"):
        for n in (1000, 250, 500):
            for seed in (0, 1):
                run = f"{model}-{n}-s{seed}"
                wm = (0.2 if model == "mlp" else 0.8) + 0.01 * seed
                cfg = {"run": run, "variant": model, "task.n_train": n, "seed": seed}
                rows += [{**cfg, "metric": "test_acc", "value": n / 2000 + 0.01 * seed},
                         {**cfg, "metric": "window_mass_3", "value": wm},
                         {**cfg, "metric": "lie_derivative", "value": 10.0 ** (n // 250 - 1)},
                         {**cfg, "metric": "lie_derivative@init", "value": 0.5}]
                refs += [{"run": run, "reference": "permuted", "metric": "window_mass_3", "value": wm - 0.1},
                         {"run": run, "reference": "gaussian", "metric": "window_mass_3", "value": wm}]
    return pd.DataFrame(rows), pd.DataFrame(refs)


def test_final_figure_draws_group_means_against_x_with_their_nulls():
    final, refs = _final_table()
    fig = plots.final_figure(final, "task.n_train", ["test_acc", "window_mass_3", "lie_derivative", "nope"], refs,
                             hue="variant")
    ax_acc, ax_wm, ax_ld = fig.axes[:3]
    assert [ax.get_title() for ax in fig.axes[:3]] == ["test accuracy", "energy in the best 3-pixel window",
                                                      "Lie derivative (translation)"]  # words, not keys
    mlp = next(line for line in model_lines(ax_acc) if line.get_label() == "MLP")
    # x: 250, 500, 1000 evenly spaced (dodged by hue); y: the mean over seeds, in %
    assert np.allclose(np.round(mlp.get_xdata()), [0, 1, 2])
    assert np.allclose(mlp.get_ydata(), [100 * (n / 2000 + 0.005) for n in (250, 500, 1000)])
    assert [t.get_text() for t in ax_acc.get_xticklabels()] == ["250", "500", "1000"]
    wm_refs = [line for line in ax_wm.get_lines() if line.get_gid() == "reference"]
    assert len(wm_refs) == 2  # permuted, one per model; the gaussian null equals the value and is left out
    assert sorted(round(float(np.mean(line.get_ydata())), 3) for line in wm_refs) == [0.105, 0.705]
    ld_refs = [line for line in ax_ld.get_lines() if line.get_gid() == "reference"]
    assert len(ld_refs) == 2 and np.allclose(ld_refs[0].get_ydata(), 0.5)  # the @init null
    assert ax_ld.get_yscale() == "log" and ax_acc.get_yscale() == "linear"


def test_final_figure_with_categorical_x_draws_no_lines_across_categories():
    final, refs = _final_table()
    final["variant"] = final["variant"].map({"mlp": "imp", "cnn": "sgd"})
    fig = plots.final_figure(final, "variant", ["test_acc"], refs)
    means = [line for line in fig.axes[0].get_lines() if line.get_gid() != "reference"]
    assert len(means) == 1 and means[0].get_linestyle() == "None"
    # order of the runs, in words
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["IMP (rewinding)", "SGD"]
    with pytest.raises(ValueError, match="none of the metrics nope"):
        plots.final_figure(final, "variant", ["nope"])
    with pytest.raises(KeyError, match="no config key 'widht'"):
        plots.final_figure(final, "widht", ["test_acc"])


def test_make_figures_draws_final_and_interpolation_figures_of_hand_made_runs(tmp_path):
    null = {"alpha": [0.0, 0.5, 1.0], "train_loss": [0.02, 0.5, 0.03], "test_loss": [1.5, 1.7, 1.4]}
    line = {"alpha": [0.0, 0.5, 1.0], "train_loss": [0.01, 2.0, 0.02], "test_loss": [1.0, 2.5, 1.5], "null": null}
    for i, v in enumerate(("ecnn-t0", "ecnn-t300")):
        _hand_run(tmp_path / "sw", v, v, 0, 0.6 + 0.1 * i, 4000, interpolation=line,
                  result={"status": "done", "measures": {"shift_consistency_1": 0.7, "shift_consistency_1@init": 0.3}})
    lines = figdata.load_interpolation([tmp_path / "sw"])
    assert len(lines) == 24 and set(lines.split) == {"train", "test"}
    mid = lines[(lines.split == "test") & (lines.alpha == 0.5)]
    assert dict(zip(mid.pair, mid.loss)) == {"eCNN -> MLP": 2.5, "MLP -> MLP, another seed (null)": 1.7}
    said = []
    written = make_figures([tmp_path / "sw"], tmp_path / "out", hue="variant", x="variant", say=said.append,
                           which=("interpolation",), final=["test_acc", "shift_consistency_1"])
    assert sorted(p.name for p in written) == sorted([f"{n}.{e}" for n in ("final", "interpolation")
                                                      for e in ("pdf", "png")] + ["final_stats.csv"])
    assert said == []
    with pytest.raises(ConfigError, match="--x/--hue widht: no such config key"):
        make_figures([tmp_path / "sw"], tmp_path / "out", x="widht", which=())


def test_final_stats_pairs_each_run_with_its_own_null(runs):
    final, refs = figdata.load_final([runs]), figdata.load_references([runs])
    st = figdata.final_stats(final, refs, ["model"])
    row = st[(st.model == "mlp") & (st.measure == "window_mass_3") & (st.null == "phase")].iloc[0]
    v = final[(final.metric == "window_mass_3") & (final.model == "mlp")].set_index("run").value
    n = refs[(refs.metric == "window_mass_3") & (refs.reference == "phase") & (refs.model == "mlp")]
    d = v - n.set_index("run").value
    assert row["n"] == 2 and row["mean"] == pytest.approx(d.mean()) and row["sd"] == pytest.approx(d.std(ddof=1))
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    assert set(st[st.model == "cnn"].n) == {1}  # one seed: a mean, no interval


def test_final_figure_clips_an_interval_to_the_values_a_share_can_take():
    """Three seeds of a share at 0.3, 0.9 and 1.0 have a t interval reaching past 1 (and below 0); the bar stops at
    the share's range [0, 1], as the line figures' bands do (before, it ran to about 1.6)."""
    final = pd.DataFrame({"run": ["a", "b", "c"], "metric": "routing_accuracy", "value": [0.3, 0.9, 1.0],
                          "model": "mixer", "seed": [0, 1, 2], "step": 100})
    fig = plots.final_figure(final, x="model", metrics=["routing_accuracy"])
    (bar,) = [c for c in fig.axes[0].collections if c.get_gid() == "interval"]
    (seg,) = bar.get_segments()
    assert seg[:, 1].min() == 0.0 and seg[:, 1].max() == 1.0
