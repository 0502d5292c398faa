import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from probe.run.checkpoint import list_checkpoints, load_checkpoint
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.metrics.interpolation import line_barrier, match_hidden_units
from probe.run.procedures.ecnn import embed_local_net
from probe.run.procedures.imp import prune_masks
from probe.sweep.execute import is_finished, run_sweep
from probe.sweep.spec import expand, load_spec, presets
from probe.sweep.summary import summarize

TINY = dict(task="mnist1d", model="mlp", width=8, depth=1, steps=20, batch_size=50, eval_every=10, log_every=10,
            checkpoints=3)
# a task that is cheap to build in a fresh process (worker processes do not share the MNIST-1D cache)
NLGP = dict(TINY, task="nlgp", task_opts={"n_train": 200, "n_test": 100, "size": 16})




def spec(base=None, **top):
    return {"name": "t", "base": dict(base or TINY), **top}


# -- the spec -------------------------------------------------------------------------------------------------
def test_grid_is_crossed_and_variants_are_zipped():
    s = expand(spec(grid={"seed": [0, 1], "task_opts.n_train": [100, 200, 0]},
                    variants=[{"name": "mlp", "model": "mlp"},
                              {"name": "cnn", "model": "cnn", "model_opts.channels": 4}]))
    assert len(s.runs) == 2 * 2 * 3 and s.columns == ("variant", "seed", "task_opts.n_train")
    cnn = [r for r in s.runs if r.varied["variant"] == "cnn"]
    assert all(r.config["model"] == "cnn" and r.config["model_opts"] == {"channels": 4} for r in cnn)
    assert {r.config["task_opts"]["n_train"] for r in cnn} == {100, 200, 0}
    assert s.runs[0].name == "mlp_s0_n_train=100"


def test_several_variant_axes_are_crossed_with_each_other():
    s = expand(spec(variants={"a": [{"name": "w8", "width": 8}, {"name": "w16", "width": 16}],
                              "b": [{"name": "d1", "depth": 1}, {"name": "d2", "depth": 2},
                                    {"name": "d3", "depth": 3}]}))
    assert len(s.runs) == 6 and s.columns == ("a", "b")
    assert {(r.config["width"], r.config["depth"]) for r in s.runs} == {(w, d) for w in (8, 16) for d in (1, 2, 3)}
    assert "w16_d3" in [r.name for r in s.runs]


def test_precedence_defaults_base_scale_variant_grid_set():
    sp = spec(base=dict(TINY, lr=0.1, steps=5), grid={"lr": [0.3]}, variants=[{"name": "v", "lr": 0.2, "steps": 7}],
              quick={"base": {"lr": 0.15, "steps": 6, "momentum": 0.5}})
    (r,) = expand(sp).runs
    assert (r.config["lr"], r.config["steps"], r.config["momentum"]) == (0.3, 7, 0.5)
    assert r.config["weight_decay"] == RunConfig().weight_decay
    (r,) = expand(sp, overrides={"steps": 9, "task_opts.n_train": 50}).runs
    assert r.config["steps"] == 9 and r.config["task_opts"] == {"n_train": 50}


def test_scales_replace_grid_keys_and_variant_axes():
    sp = spec(grid={"seed": [0, 1, 2]}, variants=[{"name": "a"}],
              quick={"grid": {"seed": [0]}}, full={"variants": [{"name": "x"}, {"name": "y"}]})
    assert [r.name for r in expand(sp).runs] == ["a_s0"]
    assert [r.name for r in expand(sp, "full").runs] == [f"{v}_s{s}" for v in "xy" for s in range(3)]


@pytest.mark.parametrize("bad, message", [
    ({"grid": {"widht": [1]}}, "unknown config key(s) widht"),
    ({"grid": {"task_opts.gian": [1]}}, "unknown task option(s) gian"),
    ({"grid": {"seed": 3}}, "must be a non-empty list"),
    ({"grdi": {}}, "unknown key(s) grdi"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "same folder name"),
    ({"variants": [{"procedure": "imp", "procedure_opts.roundz": 2}]}, "unknown procedure imp option(s) roundz"),
    ({"variants": [{"procedure": "magic"}]}, "unknown procedure 'magic'"),
    ({"variants": [{"procedure": "stability", "procedure_opts.eps": "big"}]}, "option eps must be float"),
    ({"variants": [{"procedure": "ntk_align", "procedure_opts.every": "x"}]}, "option every must be int"),
    ({"variants": [{"procedure": "ntk_align", "procedure_opts.ref_seed": "a"}]}, "option ref_seed must be an integer"),
    ({"variants": [{"procedure": "ecnn", "procedure_opts.source_opts": 3}]}, "option source_opts must be a table"),
])
def test_bad_specs_are_one_line_errors_naming_the_key(bad, message):
    with pytest.raises(ConfigError) as e:
        expand(spec(**bad))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_scale_the_spec_lacks_is_an_error():
    with pytest.raises(ConfigError, match="no scale 'full'"):
        expand(spec(quick={}), "full")


QUICK_FULL = {"mnist1d-controls": (40, 40), "nlgp-gain": (50, 84), "width-parametrization": (90, 192),
              "sparsity": (30, 20), "data-size": (50, 385), "ecnn": (35, 24), "augmentation": (40, 90),
              "routing": (36, 63), "recurrence": (48, 84), "spectrum": (90, 243), "patches-controls": (30, 180),
              "mechanism": (60, 60), "clone-dynamics": (10, 10)}
# the presets with a medium scale (about an hour on 2 CPU cores with --jobs 2) and its run counts
MEDIUM = {"data-size": 100, "mnist1d-controls": 50, "width-parametrization": 96, "augmentation": 72,
          "patches-controls": 80, "mechanism": 9}


@pytest.mark.parametrize("name", sorted(QUICK_FULL))
def test_every_preset_parses_and_expands_to_the_grid_it_describes(name):
    sp = load_spec(preset=name)
    assert sp["hypothesis"] and sp["anchor"] and "quick" in sp and "full" in sp
    quick, full = expand(sp, "quick"), expand(sp, "full")
    assert (len(quick.runs), len(full.runs)) == QUICK_FULL[name]
    assert expand(sp).scale == "quick"
    # the counts are also written in the preset's comment, so that readers see the size of the grid
    text = presets()[name].read_text()
    assert f"= {QUICK_FULL[name][0]} runs" in text and f"= {QUICK_FULL[name][1]} runs" in text


@pytest.mark.parametrize("name", sorted(MEDIUM))
def test_medium_scales_expand_to_the_grid_their_comment_describes(name):
    sp = load_spec(preset=name)
    assert len(expand(sp, "medium").runs) == MEDIUM[name]
    text = presets()[name].read_text()
    assert f"= {MEDIUM[name]} runs" in text and "medium:" in text


def test_presets_are_all_known():
    assert set(presets()) == set(QUICK_FULL)


# -- running ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_submitit_local_sweep_runs_two_runs_and_a_restart_runs_nothing(tmp_path):
    import submitit

    s = expand(spec(NLGP, grid={"seed": [0, 1]}))
    out = tmp_path / "sw"
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    results = run_sweep(s, out, executor)
    assert [r["status"] for r in results] == ["done", "done"], results
    for name in ("s0", "s1"):
        assert [st for st, _ in list_checkpoints(out / name)][-1] == 20 and is_finished(out / name)
    df = summarize(out)
    assert len(df) == 2 and list(df["seed"]) == [0, 1] and set(df["status"]) == {"done"}
    assert df["test_acc"].notna().all() and "ipr" in df and "ipr@gaussian" in df
    assert (out / "summary.csv").exists()
    jobs_before = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    again = run_sweep(s, out, submitit.LocalExecutor(folder=tmp_path / "jobs"))
    assert [r["status"] for r in again] == ["skipped", "skipped"]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == jobs_before  # nothing was submitted


@pytest.mark.slow
def test_local_executor_with_two_jobs_runs_worker_processes(tmp_path):
    s = expand(spec(NLGP, grid={"width": [4, 6]}))
    results = run_sweep(s, tmp_path / "sw", "local", jobs=2)
    assert sorted(r["status"] for r in results) == ["done", "done"], results
    assert sorted(r["run"] for r in results) == ["width=4", "width=6"]
    cfg = json.loads((tmp_path / "sw" / "width=6" / "config.json").read_text())
    assert cfg["width"] == 6 and (tmp_path / "sw" / "width=6" / "log.txt").exists()


@pytest.mark.slow
def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    s = expand(spec(grid={"seed": [3]}))
    run_sweep(s, tmp_path / "a", "local")
    run_sweep(s, tmp_path / "b", "local")
    run = tmp_path / "b" / "s3"
    # as if killed after the checkpoint before the last: the last checkpoint and the result never written
    last = list_checkpoints(run)[-1][1]
    last.unlink()
    (run / "result.json").unlink()
    assert not is_finished(run)
    start = (run / "checkpoints" / "step_0.pt").stat().st_mtime_ns
    (r,) = run_sweep(s, tmp_path / "b", "local")
    assert r["status"] == "done"
    assert (run / "checkpoints" / "step_0.pt").stat().st_mtime_ns == start  # resumed, not started over
    rows = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [x["step"] for x in rows(run)] == [x["step"] for x in rows(tmp_path / "a" / "s3")]
    a = load_checkpoint(tmp_path / "a" / "s3" / "checkpoints" / "step_20.pt")["state_dict"]
    b = load_checkpoint(run / "checkpoints" / "step_20.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    s = expand(spec(variants=[{"name": "bad", "model": "cnn", "model_opts.channels": "many"}, {"name": "ok"}]))
    results = run_sweep(s, tmp_path / "sw", "local")
    assert [r["status"] for r in results] == ["failed", "done"]
    assert "option channels must be int" in results[0]["error"]
    df = summarize(tmp_path / "sw")
    assert list(df["status"]) == ["failed", "done"] and (tmp_path / "sw" / "bad" / "error.txt").exists()


@pytest.mark.slow
def test_summary_of_a_folder_of_plain_runs_finds_the_keys_that_differ(tmp_path):
    from probe.run.loop import run_training

    for w in (4, 6):
        run_training(RunConfig(**dict(TINY, width=w)), tmp_path / f"w{w}", progress=False)
    df = summarize(tmp_path)
    assert list(df["run"]) == ["w4", "w6"] and list(df["width"]) == [4, 6] and "seed" not in df


# -- procedures -------------------------------------------------------------------------------------------------
def test_prune_masks_remove_the_smallest_surviving_weights_per_layer_or_globally():
    state = {"w": torch.tensor([[1.0, -5.0, 3.0, 0.5]]), "v": torch.tensor([[0.1, -0.2]])}
    masks = {"w": torch.tensor([[True, True, True, False]]), "v": torch.ones(1, 2, dtype=torch.bool)}
    layer = prune_masks(state, masks, 0.4, "layer")  # round(0.4 * 3) = 1 of w, round(0.4 * 2) = 1 of v
    assert layer["w"].tolist() == [[False, True, True, False]] and layer["v"].tolist() == [[False, True]]
    glob = prune_masks(state, masks, 0.4, "global")  # 2 of the 5 survivors: both of v's
    assert glob["w"].tolist() == [[True, True, True, False]] and glob["v"].tolist() == [[False, False]]


def test_random_pruning_removes_as_many_survivors_per_layer_at_random_and_reproducibly():
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(20, 50, generator=g), "v": torch.randn(10, 20, generator=g)}
    masks = {k: torch.ones_like(v, dtype=torch.bool) for k, v in state.items()}
    masks["w"][:, :10] = False  # already pruned: never revived
    magnitude = prune_masks(state, masks, 0.6, "layer")
    random = prune_masks(state, masks, 0.6, "layer", torch.Generator().manual_seed(1))
    again = prune_masks(state, masks, 0.6, "layer", torch.Generator().manual_seed(1))
    for k in state:
        assert int(random[k].sum()) == int(magnitude[k].sum())  # the same per-layer sparsity
        assert not (random[k] & ~masks[k]).any() and torch.equal(random[k], again[k])
    # magnitude keeps the largest survivors; random keeps small ones too
    smallest_kept = lambda m: state["w"].abs()[m].min()  # noqa: E731
    largest_cut = state["w"].abs()[masks["w"] & ~magnitude["w"]].max()
    assert smallest_kept(magnitude["w"]) >= largest_cut and smallest_kept(random["w"]) < largest_cut


@pytest.mark.slow
def test_imp_prunes_rewinds_and_keeps_the_mask_through_training(tmp_path):
    s = expand(spec(dict(TINY, width=16, optimizer="sgd", momentum=0.9, lr=0.05, track="default,zero_frac"),
                    variants=[{"name": "imp", "procedure": "imp",
                               "procedure_opts": {"rounds": 2, "prune": 0.5, "rewind": 10}}]))
    (r,) = run_sweep(s, tmp_path / "sw", "local")
    assert r["status"] == "done", r
    run = tmp_path / "sw" / "imp"
    proc = json.loads((run / "procedure.json").read_text())
    assert proc["sparsity"] == pytest.approx(0.75, abs=0.01) and len(proc["round_test_acc"]) == 3
    masks = load_checkpoint(run / "mask.pt")
    rewind = load_checkpoint(run / "stages" / "round_0" / "rewind.pt")
    for step in (0, 20):
        sd = load_checkpoint(run / "checkpoints" / f"step_{step}.pt")["state_dict"]
        for k, m in masks.items():
            assert (sd[k][~m] == 0).all()  # pruned weights stay zero through momentum SGD
    sd0 = load_checkpoint(run / "checkpoints" / "step_0.pt")["state_dict"]
    k = "layers.0.weight"
    assert torch.equal(sd0[k][masks[k]], rewind[k][masks[k]])  # survivors start from the rewind point
    assert "zero_frac" in summarize(tmp_path / "sw").columns


@pytest.mark.parametrize("model, task", [("cnn", "mnist1d"), ("lcn", "mnist1d"), ("cnn", "nlgp")])
def test_the_ecnn_embedding_computes_the_cnns_function(model, task):
    from probe.models import build_model
    from probe.tasks import make_task

    t = make_task(task, {"n_train": 64, "n_test": 8} if task == "nlgp" else {}, seed=0)
    torch.manual_seed(0)
    cnn = build_model(model, t, 1, 1, "standard", {"channels": 3, "kernel": 3, "layers": 2, "stride": 2})
    width, depth, state = embed_local_net(cnn)
    mlp = build_model("mlp", t, width, depth, "standard", {})
    mlp.load_state_dict(state)
    x = t.x_train[:32]
    with torch.no_grad():
        assert torch.allclose(mlp(x), cnn(x), atol=1e-5)
    assert (width, depth) == (3 * 20, 2)  # 3 channels x 20 positions after the stride-2 layer


@pytest.mark.slow
def test_ecnn_procedure_starts_from_the_cnn_and_measures_the_line(tmp_path):
    s = expand(spec(dict(TINY, lr=1e-3), variants=[{
        "name": "ecnn", "procedure": "ecnn",
        "procedure_opts": {"cnn_steps": 20, "points": 3, "source_opts": {"channels": 2, "layers": 2}}}]))
    (r,) = run_sweep(s, tmp_path / "sw", "local")
    assert r["status"] == "done", r
    run = tmp_path / "sw" / "ecnn"
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["model"], cfg["width"], cfg["depth"]) == ("mlp", 40, 2)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    cnn_last = [json.loads(x) for x in (run / "stages" / "cnn" / "metrics.jsonl").read_text().splitlines()][-1]
    assert first["test_loss"] == pytest.approx(cnn_last["test_loss"], rel=1e-4)  # step 0 is the CNN's function
    line = json.loads((run / "interpolation.json").read_text())
    assert line["alpha"] == [0.0, 0.5, 1.0] and len(line["test_loss"]) == 3
    # the null line runs between the plain MLP and one of another seed: their ends are those two solutions
    assert line["null"]["test_loss"][0] == pytest.approx(line["test_loss"][-1], rel=1e-5)
    null_cfg = json.loads((run / "stages" / "mlp_null" / "config.json").read_text())
    assert null_cfg["seed"] == cfg["seed"] + 10_000 and (null_cfg["width"], null_cfg["depth"]) == (40, 2)
    row = summarize(tmp_path / "sw").iloc[0]
    assert {"line_barrier", "cnn_test_acc", "mlp_test_acc", "line_barrier@mlps", "line_barrier_train@mlps",
            "line_barrier_unaligned", "line_barrier_unaligned@mlps", "line_error_barrier",
            "line_error_barrier@mlps"} <= set(row.index)
    assert 0 <= row["line_error_barrier"] <= 1
    # equal budgets: the plain MLPs train the eCNN's CNN steps and its own
    assert row["mlp_steps"] == 20 + cfg["steps"] and null_cfg["steps"] == 20 + cfg["steps"]
    assert json.loads((run / "stages" / "mlp" / "config.json").read_text())["steps"] == 20 + cfg["steps"]
    # the exact convolutional subspace of the known layout: the embedding starts in it
    assert row["conv_subspace_distance@init"] == pytest.approx(0.0, abs=1e-6)
    assert row["conv_subspace_distance_all@init"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < row["conv_subspace_distance"] < row["conv_subspace_distance@mlp"]
    assert line["aligned"] and "unaligned" in line


def _mlp_state(seed, n_in=6, width=5, depth=3, n_out=4):
    from probe.models.blocks import MLP

    torch.manual_seed(seed)
    return MLP(n_in, n_out, width, depth)


def test_weight_matching_undoes_a_permutation_of_hidden_units():
    net = _mlp_state(0)
    state = net.state_dict()
    perms = [torch.randperm(5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    shuffled = {k: v.clone() for k, v in state.items()}
    for l, p in enumerate(perms):
        shuffled[f"layers.{l}.weight"] = shuffled[f"layers.{l}.weight"][p]
        shuffled[f"layers.{l}.bias"] = shuffled[f"layers.{l}.bias"][p]
        nxt = f"layers.{l + 1}.weight" if l + 1 < 3 else "readout.weight"
        shuffled[nxt] = shuffled[nxt][:, p]
    other = _mlp_state(1)
    other.load_state_dict(shuffled)
    x = torch.randn(16, 6)
    with torch.no_grad():
        assert torch.allclose(other(x), net(x), atol=1e-6)  # the same function, units in another order
    back = match_hidden_units(state, shuffled)
    for k in state:
        assert torch.equal(back[k], state[k]), k
    # a matched copy of an unrelated net computes that net's function still
    unrelated = _mlp_state(2)
    aligned = match_hidden_units(state, unrelated.state_dict())
    moved = _mlp_state(3)
    moved.load_state_dict(aligned)
    with torch.no_grad():
        assert torch.allclose(moved(x), unrelated(x), atol=1e-6)


def test_the_line_barrier_is_the_largest_rise_over_the_chord_of_the_ends():
    alphas = [0, 0.25, 0.5, 0.75, 1]
    assert line_barrier([1, 2, 3, 4, 5], alphas) == 0  # linear along the line: no barrier
    assert line_barrier([1, 0.5, 0.2, 0.5, 1], alphas) == 0  # below the chord (a valley): the ends give 0
    assert line_barrier([1, 2, 4, 2, 3], alphas) == pytest.approx(2.0)  # at a = 0.5: 4 - (1 + 3) / 2


@pytest.mark.parametrize("periodic", [False, True])
def test_conv_layout_is_the_support_of_the_embedding_and_its_projection_is_exact(periodic):
    from probe.geometry import Geometry
    from probe.metrics.equivariance import conv_layout, conv_subspace_distance, conv_subspace_projection
    from probe.models.conv import local_dense

    g = Geometry(channels=2, spatial=(11,), periodic=periodic)
    O, k, stride, P = 3, 5, 2, 6
    ids = torch.arange(1, O * 2 * k + 1, dtype=torch.float64).reshape(O, 1, 2, k).expand(O, P, 2, k)
    dense = local_dense(ids, g.spatial, stride, k // 2, periodic)
    index = conv_layout(g, O, k, stride)
    np.testing.assert_array_equal(index + 1, dense.numpy())  # the same tap in the same entry
    W = local_dense(torch.randn(O, 1, 2, k, dtype=torch.float64).expand(O, P, 2, k), g.spatial, stride, k // 2,
                    periodic).numpy()
    assert conv_subspace_distance(W, index) == pytest.approx(0.0, abs=1e-12)
    lcn = local_dense(torch.randn(O, P, 2, k, dtype=torch.float64), g.spatial, stride, k // 2, periodic).numpy()
    assert 0.5 < conv_subspace_distance(lcn, index) < 1.0  # local, not shared
    proj = conv_subspace_projection(lcn, index)
    assert conv_subspace_projection(proj, index) == pytest.approx(proj)  # a projection
    assert np.sum((lcn - proj) * proj) == pytest.approx(0.0, abs=1e-9)  # orthogonal
    G = np.random.default_rng(0).standard_normal(W.shape)
    assert conv_subspace_distance(G, index) > 0.9


@pytest.mark.slow
def test_final_measures_come_with_the_same_measures_of_the_runs_initialization(tmp_path):
    from probe.metrics.functional import lie_derivative
    from probe.models import build_model
    from probe.tasks import make_task

    s = expand(spec(TINY, final_measures=["lie_derivative", "shift_consistency"]))
    (r,) = run_sweep(s, tmp_path / "sw", "local")
    m = r["measures"]
    assert {"lie_derivative", "lie_derivative@init", "shift_consistency_1", "shift_consistency_1@init"} <= set(m)
    cfg = RunConfig(**TINY)
    task = make_task(cfg.task, cfg.task_opts, seed=cfg.seed)
    model = build_model(cfg.model, task, cfg.width, cfg.depth)
    run = tmp_path / "sw" / r["run"]
    model.load_state_dict(load_checkpoint(list_checkpoints(run)[0][1])["state_dict"])
    model.eval()
    assert m["lie_derivative@init"] == pytest.approx(lie_derivative(model, task.x_test[:512], task.geometry))
    assert m["lie_derivative@init"] != pytest.approx(m["lie_derivative"])  # trained 20 steps: not the init
    assert {"lie_derivative@init"} <= set(summarize(tmp_path / "sw").columns)


def test_shift_augment_rolls_the_batches_of_the_plain_order():
    from probe.tasks import make_task
    from probe.run.loop import Batches

    plain, aug = make_task("mnist1d", {}), make_task("mnist1d", {"augment_shift": 3})
    b0, b1 = Batches(plain, 50, 5, torch.device("cpu")), Batches(aug, 50, 5, torch.device("cpu"))
    for step in (0, 79, 80):
        (x0, y0), (x1, y1) = b0(step), b1(step)
        assert torch.equal(y0, y1)
        assert all(any(torch.equal(torch.roll(x0[i], s), x1[i]) for s in range(-3, 4)) for i in range(len(x1)))
    assert torch.equal(b1(7)[0], b1(7)[0])  # a pure function of (seed, step)


# -- command line -----------------------------------------------------------------------------------------------
def test_cli_lists_presets_and_dry_runs_a_spec(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["sweep", "--list"])
    assert res.exit_code == 0 and all(name in res.output for name in QUICK_FULL)
    res = runner.invoke(app, ["sweep", "--preset", "routing", "--dry-run"])
    assert res.exit_code == 0 and "36 runs" in res.output and "mqar-p4-L16_transformer_s2" in res.output
    res = runner.invoke(app, ["sweep", "--preset", "nope"])
    assert res.exit_code == 2 and "unknown preset" in res.output


@pytest.mark.slow
def test_cli_runs_a_spec_file_and_summarizes_it(tmp_path):
    (tmp_path / "s.toml").write_text('name = "tiny"\n[base]\ntask = "mnist1d"\nwidth = 4\ndepth = 1\nsteps = 10\n'
                                     'eval-every = 10\nlog_every = 10\ncheckpoints = 2\n[grid]\nseed = [0]\n')
    out = tmp_path / "sw"
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "s.toml"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "[1/1] s0: done" in res.output and "summary of 1 runs" in res.output
    res = CliRunner().invoke(app, ["sweep", str(out), "--summary"])
    assert res.exit_code == 0 and "s0" in res.output and (out / "summary.csv").exists()
    assert "95% CI" in res.output and (out / "stats.csv").exists()  # one seed: the mean, no interval
    stats = pd.read_csv(out / "stats.csv")
    assert {"measure", "null", "n", "mean", "sd", "ci_low", "ci_high"} <= set(stats.columns)
    assert (stats.loc[stats.measure == "test_acc", "n"] == 1).all()


@pytest.mark.slow
def test_a_sweep_folder_refuses_a_changed_spec_for_runs_already_started(tmp_path):
    run_sweep(expand(spec(grid={"seed": [0]})), tmp_path / "sw", "local")
    with pytest.raises(ConfigError, match="run s0 was started from another spec"):
        run_sweep(expand(spec(dict(TINY, lr=0.5), grid={"seed": [0]})), tmp_path / "sw", "local")
    (r,) = run_sweep(expand(spec(grid={"seed": [0]}), overrides={"device": "cpu"}), tmp_path / "sw", "local")
    assert r["status"] == "skipped"


def test_slurm_executor_submits_one_job_array_with_the_options(tmp_path, monkeypatch):
    # a fake Slurm: srun exists, sbatch answers like Slurm does; nothing runs, the sweep only submits
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text("#!/bin/sh\necho Submitted batch job 4242\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{__import__('os').environ['PATH']}")
    s = expand(spec(grid={"seed": [0, 1, 2]}))
    results = run_sweep(s, tmp_path / "sw", "slurm", jobs=2,
                        slurm={"partition": "gpu", "time_min": 30, "gpus": 1, "cpus": 8})
    assert [r["status"] for r in results] == ["submitted"] * 3
    assert [r["job_id"] for r in results] == ["4242_0", "4242_1", "4242_2"]
    script = next((tmp_path / "sw" / ".submitit").rglob("*.sh")).read_text()
    for line in ("--array=0-2%2", "--partition=gpu", "--time=30", "--gpus-per-node=1", "--cpus-per-task=8"):
        assert line in script


def test_slurm_executor_without_slurm_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="--executor slurm: .*srun"):
        run_sweep(expand(spec()), tmp_path / "sw", "slurm")


def test_readme_spec_example_expands():
    import re
    from pathlib import Path

    import tomllib

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("### `probe sweep`: the spec format"):]
    text = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    spec = tomllib.loads(text)
    spec["hypothesis"] = spec["anchor"] = "x"
    sweep = expand(spec)
    assert sweep.scale == "quick" and len(sweep.runs) == 6  # [quick] keeps seed 0: 3 gains x 2 variants
    assert {r.config["task_opts"]["gain"] for r in sweep.runs} == {1, 3, 10}
    assert ({r.config["model"] for r in sweep.runs} == {"mlp", "cnn"}
            and {r.config["steps"] for r in sweep.runs} == {500})


def test_an_old_run_folder_is_read_with_its_nulls_stored_the_one_way():
    # result.json as earlier versions wrote it (tests/data/sweep_run_v1): nulls as X_random, and a null's own @init
    from probe.sweep.summary import end_values

    values = end_values(Path(__file__).parent / "data" / "sweep_run_v1")
    assert not [k for k in values if "_random" in k]
    assert values["position_ipr@gaussian"] == 0.047 and values["position_sharing@gaussian"] == 0.125
    assert values["embed_fourier_top@chance"] == 0.1 and "neuron_fourier_top@chance" not in values  # no neurons
    assert values["position_ipr"] == 0.31 and values["position_ipr@init"] == 0.05
