"""Figures a paper can use: words for titles and legends, markers at evaluated steps, bands in
the measure's range, one task per figure, --x and --hue on one key, distinct and interior fields, every mark in a
legend. Synthetic tables and hand-written run folders: no training, seconds."""

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection

from probe.config import RunConfig
from probe.figures import labels, plots
from probe.figures import tables as figdata
from probe.figures.fields import cropped_units, select_units, shift_similarity
from probe.figures.make import make_figures
from probe.geometry import Geometry


def texts(fig) -> list[str]:
    """Every string a figure prints: titles, axis labels, tick labels, legend entries and titles, free text."""
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def nlgp_runs(values) -> pd.DataFrame:
    """load_runs-shaped rows of four NLGP runs named as the nlgp-gain sweep names its folders."""
    rows = []
    for task in ("nlgp", "nlgp-gauss"):
        for gain in (1.0, 100.0):
            run = f"lsg_task={task}_gain={gain:g}_s0"
            for step, v in zip((0, 50, 300), values):
                rows += [dict(run=run, step=step, metric=m, value=v, task=task, seed=0, width=1,
                              **{"task_opts.gain": gain})
                         for m in ("ipr", "ipr_frac_above")]
    return pd.DataFrame(rows)


def test_runs_are_named_by_what_differs_between_them_in_words():
    names = labels.run_labels(nlgp_runs((0.1, 0.2, 0.3)))
    assert names["lsg_task=nlgp-gauss_gain=100_s0"] == "Gaussian clone of NLGP, gain 100"
    assert names["lsg_task=nlgp_gain=1_s0"] == "NLGP, gain 1"
    # configs alike: the folder still tells them apart
    same = pd.DataFrame(dict(run=["a", "b"], seed=[0, 0], task=["mnist1d"] * 2))
    assert labels.run_labels(same) == {"a": "a", "b": "b"}
    # a variant that names its width is not followed by the width again; one that does not, is
    wide = pd.DataFrame(dict(run=["w", "n"], variant=["mlp-1024", "mlp"], width=[1024, 100], seed=[0, 0]))
    assert labels.run_labels(wide) == {"w": "MLP, width 1024", "n": "MLP, width 100"}
    # a CNN never reads --width or --depth: its name leaves out the defaults its config still holds
    mixed = pd.DataFrame(dict(run=["c", "m"], model=["cnn", "mlp"], width=[100, 1], depth=[2, 1], seed=[0, 0]))
    assert labels.run_labels(mixed) == {"c": "CNN", "m": "MLP, width 1, depth 1"}


def test_measure_panels_and_legends_print_words_not_folder_or_code_names():
    fig = plots.measures_figure(nlgp_runs((0.1, 0.2, 0.3)), measures=["ipr", "ipr_frac_above"])
    printed = texts(fig)
    assert "share of localized units" in printed and "localization (ipr)" in printed
    assert not [t for t in printed if "_s0" in t or "ipr_frac_above" in t or "task_opts" in t or "task=" in t]
    assert "Gaussian clone of NLGP, gain 100" in printed
    fig = plots.measures_figure(nlgp_runs((0.1, 0.2, 0.3)), measures=["ipr"], hue="task_opts.gain", group_by="task")
    printed = texts(fig)
    assert "NLGP gain g" in printed and {"1", "100"} <= set(printed) and "100.0" not in printed


def test_every_evaluated_step_is_a_marker_on_its_line():
    fig = plots.measures_figure(nlgp_runs((0.1, 0.2, 0.3)), measures=["ipr"], hue="task")
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() != "reference" and len(ln.get_xdata()) > 1]
    assert lines and all(ln.get_marker() == "o" for ln in lines)
    fig = plots.accuracy_figure(nlgp_runs((0.1, 0.2, 0.3)).replace({"ipr": "test_acc"}))
    assert all(ln.get_marker() == "o" for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1)


def test_sd_bands_of_a_share_stay_inside_zero_one():
    rows = []
    for seed, vals in enumerate([(0.0, 0.0, 0.98), (0.0, 0.02, 1.0), (0.3, 0.5, 0.4)]):
        rows += [dict(run=f"s{seed}", step=st, metric="ipr_frac_above", value=v, model="mlp", seed=seed)
                 for st, v in zip((0, 10, 100), vals)]
    fig = plots.measures_figure(pd.DataFrame(rows), measures=["ipr_frac_above"], group_by="model")
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert bands
    y = np.concatenate([p.vertices[:, 1] for b in bands for p in b.get_paths()])
    assert y.min() >= 0.0 and y.max() <= 1.0
    # unclipped, mean - sd at step 0 is 0.1 - 0.17 < 0: the clip did something
    assert np.isclose(y.min(), 0.0)


def test_references_carry_markers_unlike_any_group_line_and_are_kept_per_task():
    rows, refs = [], []
    for task in ("mnist1d", "mnist1d-shuffled"):
        for seed in (0, 1):
            run = f"{task}_mlp_s{seed}"
            rows += [dict(run=run, step=st, metric="ipr", value=0.1 + 0.01 * st, model="mlp", task=task, seed=seed)
                     for st in (0, 10)]
            refs += [dict(run=run, reference="lcn", metric="ipr", value=0.3 if task == "mnist1d" else 0.5,
                          model="mlp", task=task, seed=seed)]
    fig = plots.measures_figure(pd.DataFrame(rows), pd.DataFrame(refs), measures=["ipr"], hue="model",
                                group_by="task", references=("lcn",))
    ax = fig.axes[0]
    ref_lines = [ln for ln in ax.get_lines() if ln.get_gid() == "reference"]
    # one line per task (never their mean, 0.4), each with the lcn marker
    assert sorted(round(float(ln.get_ydata()[0]), 3) for ln in ref_lines) == [0.3, 0.5]
    assert {ln.get_marker() for ln in ref_lines} == {plots.REFERENCE_MARKER["lcn"]}
    entries = fig.legends[0].get_lines()
    ref_entry = [h for h, t in zip(entries, fig.legends[0].get_texts()) if t.get_text().startswith("reference")]
    assert ref_entry and ref_entry[0].get_marker() == plots.REFERENCE_MARKER["lcn"]


def final_table(x_values=(8, 16)) -> pd.DataFrame:
    return pd.DataFrame([dict(run=f"w{w}_s{s}", metric=m, value=v, width=w, seed=s)
                         for w in x_values for s in (0, 1) for m, v in (("test_acc", 0.5 + w / 100), ("ipr", 0.1))])


def test_final_figure_with_x_and_hue_on_the_same_key_draws():
    fig = plots.final_figure(final_table(), "width", ["test_acc", "ipr"], hue="width")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "16"] and ax.get_xlabel() == "width (hidden units)"
    means = [ln for ln in ax.get_lines() if ln.get_gid() != "reference"]
    assert sorted(ln.get_label() for ln in means) == ["16", "8"]


def hand_run(root, name, task, seed=0, shape=(1, 40), **cfg):
    """A run folder written by hand: config, metrics with ipr and test_acc, task.json with its input geometry."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(RunConfig(task=task, seed=seed, **cfg).to_dict()))
    rows = [{"step": s, "test_acc": 0.1 + s / 100, "ipr": 0.05 + s / 1000} for s in (0, 10, 20)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    geo = {"channels": shape[0], "spatial": list(shape[1:]), "periodic": False, "channels_last": False,
           "perm": None, "kind": "image"}
    (d / "task.json").write_text(json.dumps({"geometry": geo, "n_train": 100}))
    (d / "reference.json").write_text(json.dumps({"step": 20, "seed": seed, "gaussian": {"ipr": 0.02 * shape[1] / 40}}))
    return d


def test_make_figures_draws_one_task_per_figure_and_says_so(tmp_path):
    for task in ("mnist1d", "nlgp"):
        for seed in (0, 1):
            hand_run(tmp_path / "runs", f"{task}-s{seed}", task, seed)
    said = []
    written = make_figures([tmp_path / "runs"], tmp_path / "out", which=("measures", "accuracy"), hue="seed",
                           say=said.append)
    assert sorted(p.name for p in written if p.suffix == ".png") == [
        "mnist1d_accuracy.png", "mnist1d_measures.png", "nlgp_accuracy.png", "nlgp_measures.png"]
    assert len(said) == 1 and "runs of 2 tasks (mnist1d, nlgp): one set of figures per task" in said[0]
    said.clear()
    written = make_figures([tmp_path / "runs"], tmp_path / "together", which=("measures",), hue="task", say=said.append)
    assert [p.name for p in written] == ["measures.pdf", "measures.png"]
    assert said == ["runs of 2 tasks (mnist1d, nlgp) drawn together, as asked; each task keeps its own references"]


def test_one_task_at_two_input_sizes_is_two_tasks_to_the_figures(tmp_path):
    hand_run(tmp_path / "runs", "small", "nlgp", shape=(1, 40))
    hand_run(tmp_path / "runs", "large", "nlgp", shape=(1, 400))
    said = []
    written = make_figures([tmp_path / "runs"], tmp_path / "out", which=("measures",), say=said.append)
    assert {p.name for p in written if p.suffix == ".png"} == {"nlgp-1x40_measures.png", "nlgp-1x400_measures.png"}
    assert figdata.input_shape(tmp_path / "runs" / "large") == "1x400"


def conv_dense(channels=4, n=40, k=5, seed=0) -> np.ndarray:
    """The dense matrix of a 1-D convolution (stride 1, zero padding k // 2): unit (c, p) holds kernel c at p - k//2
    .. p + k//2, cut at the borders."""
    rng = np.random.default_rng(seed)
    kernels = rng.normal(size=(channels, k))
    W = np.zeros((channels * n, n))
    for c in range(channels):
        for p in range(n):
            for j in range(k):
                s = p + j - k // 2
                if 0 <= s < n:
                    W[c * n + p, s] = kernels[c, j]
    return W


def test_a_cnns_most_localized_units_are_interior_and_distinct():
    W, geo = conv_dense(), Geometry(1, (40,))
    crop = cropped_units(W)
    assert crop.sum() == 4 * 4 and not crop[2] and crop[0] and crop[39]  # two cropped units at each border
    naive, _, _ = select_units(W, geo, n_top=8, distinct=False, interior=False)
    assert crop[naive].any()  # what the figure showed before: units cut by the padding
    top, _, _ = select_units(W, geo, n_top=8)
    assert len(top) == 4 and not crop[top].any()  # one interior unit per channel: the rest are its shifts
    assert sorted(t // 40 for t in top) == [0, 1, 2, 3]
    F = geo.fields(W)
    assert np.isclose(shift_similarity(F[10], F[20]), 1.0) and shift_similarity(F[10], F[50]) < 0.98
    # a dense MLP: nothing is cropped, and random fields are not shifts of each other
    G = np.random.default_rng(1).normal(size=(16, 40))
    assert not cropped_units(G).any() and len(select_units(G, geo, n_top=8)[0]) == 8


def test_fields_of_runs_that_share_their_initialization_are_drawn_once():
    geo = Geometry(1, (40,))
    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(1, 40))
    rows = [dict(run=f"lsg_task={t}_gain=100_s0", step=s, W=W0 if s == 0 else rng.normal(size=(1, 40)), geometry=geo,
                 task=t, seed=0, width=1) for t in ("nlgp", "nlgp-gauss") for s in (0, 300)]
    fig = plots.fields_grid_figure(pd.DataFrame(rows))
    printed = texts(fig)
    assert sum("the same weights as" in t for t in printed) == 1
    assert any("NLGP, step 0" in t.replace("\n", ", ") for t in printed if "the same weights" in t)
    assert not [t for t in printed if "_s0" in t or "lsg_" in t]


def test_the_middle_field_step_is_the_checkpoint_nearest_half_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(figdata, "list_checkpoints", lambda d: [(s, None) for s in (0, 1, 3, 10, 45, 200, 900, 2000)])
    assert figdata.chosen_steps(tmp_path) == [0, 900, 2000]


def test_routing_figure_explains_its_rings():
    T = 4
    rows = [dict(run=f"mqar-p4-L16_{m}_s0", method="jacobian", example=0, out_pos=3, in_pos=s, weight=0.25,
                 source=s == 1, model=m, seed=0) for m in ("mlp", "transformer") for s in range(T)]
    fig = plots.routing_figure(pd.DataFrame(rows))
    printed = texts(fig)
    assert any("ground-truth source" in t for t in printed)
    assert "MLP\nJacobian map" in printed and not [t for t in printed if "_s0" in t]


def test_interpolation_figure_tells_two_seeds_of_one_variant_apart():
    rows = [dict(run=f"ecnn-t300_s{seed}", pair=pair, alpha=a, split=split, loss=1.0 + a + seed, variant="ecnn-t300",
                 seed=seed)
            for seed in (0, 1) for pair in ("eCNN -> MLP", "MLP -> MLP, another seed (null)")
            for split in ("train", "test") for a in (0.0, 0.5, 1.0)]
    fig = plots.interpolation_figure(pd.DataFrame(rows), hue="variant")
    ax = fig.axes[0]
    markers = {ln.get_marker() for ln in ax.get_lines() if ln.get_color() != "0.6"}
    assert len(markers) == 2
    printed = texts(fig)
    assert {"seed 0", "seed 1"} <= set(printed) and "eCNN -> MLP, eCNN (CNN trained 300 steps)" in printed


def test_make_figures_with_x_and_hue_on_the_same_key(tmp_path, monkeypatch):
    for w in (8, 16):
        for seed in (0, 1):
            hand_run(tmp_path / "runs", f"w{w}-s{seed}", "mnist1d", seed, width=w)
    said, drawn = [], []
    real = plots.final_figure
    monkeypatch.setattr(plots, "final_figure", lambda *a, **k: drawn.append((a, k, real(*a, **k))) or drawn[-1][2])
    written = make_figures([tmp_path / "runs"], tmp_path / "out", which=(), x="width", hue="width",
                           final=["test_acc", "ipr"], say=said.append)
    assert [p.name for p in written] == ["final.pdf", "final.png", "final_stats.csv"] and said == []
    assert all(p.stat().st_size > 1000 for p in written[:2])
    stats = pd.read_csv(tmp_path / "out" / "final_stats.csv")  # the numbers behind it, per width over 2 seeds
    assert set(stats.width) == {8, 16} and (stats[stats.measure == "test_acc"].n == 2).all()
    # the figure drawn is of the runs' final values (step 20 of hand_run: test_acc 0.3, ipr 0.07), by width
    (table, x, metrics, *_), _, fig = drawn[0]
    assert x == "width" and list(metrics) == ["test_acc", "ipr"]
    assert sorted(table.width.unique()) == [8, 16] and len(table) == 2 * 2 * 2
    assert set(table[table.metric == "test_acc"].value.round(6)) == {0.3}
    assert set(table[table.metric == "ipr"].value.round(6)) == {0.07}
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "16"]
    assert sorted(ln.get_label() for ln in ax.get_lines() if ln.get_gid() != "reference") == ["16", "8"]


def test_per_step_nulls_are_drawn_beside_their_measure_in_the_lines_colour():
    """A tracker's ``NAME@KIND`` keys (``grad_window_mass_3@phase``) are the null of NAME at each step: drawn in the
    panel of NAME (and of its twin's base for ``conv_share@random``), in the colour of the line, named in the
    legend; not drawn in other panels."""
    rows = []
    for run, model in (("mlp_s0", "mlp"), ("cnn_s0", "cnn")):
        for step in (0, 100, 200):
            rows += [dict(run=run, step=step, metric=m, value=v, model=model, seed=0, task="mnist1d")
                     for m, v in (("grad_window_mass_3", 0.3), ("grad_window_mass_3@phase", 0.2),
                                  ("grad_conv_share", 0.5), ("conv_share@random", 0.01), ("grad_ipr", 0.1))]
    runs = pd.DataFrame(rows)
    assert plots.step_nulls("grad_window_mass_3", set(runs.metric)) == ["grad_window_mass_3@phase"]
    assert plots.step_nulls("grad_conv_share", set(runs.metric)) == ["conv_share@random"]
    assert plots.step_nulls("grad_ipr", set(runs.metric)) == []
    fig = plots.measures_figure(runs, measures=["grad_window_mass_3", "grad_conv_share", "grad_ipr"], hue="model")
    axes = fig.axes[:3]
    nulls = [[ln for ln in ax.get_lines() if ln.get_gid() == "step-null"] for ax in axes]
    assert [len(n) for n in nulls] == [2, 2, 0]  # one per line (model) where there is a null
    assert {round(float(ln.get_ydata()[0]), 6) for ln in nulls[0]} == {0.2}
    assert {round(float(ln.get_ydata()[0]), 6) for ln in nulls[1]} == {0.01}
    line_colours = {tuple(ln.get_color()) if not isinstance(ln.get_color(), str) else ln.get_color()
                    for ln in axes[0].get_lines() if ln.get_gid() != "step-null" and len(ln.get_xdata()) == 3}
    null_colours = {tuple(ln.get_color()) if not isinstance(ln.get_color(), str) else ln.get_color() for ln in nulls[0]}
    assert null_colours <= line_colours
    printed = texts(fig)
    assert "null at each step: phases randomized" in printed and "null at each step: random direction" in printed
    assert "pull G: energy in the best 3-pixel window" in [t.replace("\n", " ") for t in printed]  # titles wrap
