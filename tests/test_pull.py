"""The learned part ΔW and the pull G (probe/metrics/pull.py): constructions with known answers."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.geometry import Geometry
from probe.metrics import first_layer_measures, references
from probe.metrics.equivariance import conv_layout, conv_subspace_projection
from probe.metrics.pull import (com_share, com_share_chance, com_share_units, first_layer_gradient, pull_batch,
                                random_shares, shared_chance, subspace_dims, subspace_shares)
from probe.models.conv import LocalNet, conv_layouts, local_dense
from probe.models.blocks import MLP
from probe.run.loop import loss_fn, run_training
from probe.run.procedures.ecnn import embed_local_net
from probe.run.tracking import (DELTA_TRACK, PULL_TRACK, Tracker, check_model, parse_track, unit_layout,
                                write_layout)

G1 = Geometry(1, (20,))
G2 = Geometry(2, (6, 6), periodic=True)


# -- the subspace shares --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("geo, stride", [(G1, 1), (G1, 2), (G2, 1)])
def test_a_matrix_in_the_convolutional_subspace_has_both_shares_one(geo, stride):
    index = conv_layout(geo, 3, 3, stride)
    M = conv_subspace_projection(np.random.default_rng(0).standard_normal(index.shape), index)
    shares = subspace_shares(M, index)
    assert shares["conv_share"] == pytest.approx(1, abs=1e-12)
    assert shares["local_share"] == pytest.approx(1, abs=1e-12)


def test_a_locally_connected_matrix_is_local_but_not_convolutional():
    index = conv_layout(G1, 4, 3)
    M = np.where(index >= 0, np.random.default_rng(1).standard_normal(index.shape), 0.0)
    shares = subspace_shares(M, index)
    assert shares["local_share"] == pytest.approx(1, abs=1e-12)
    # the shared part of i.i.d. taps: about one entry per tap of the ~P entries holding it
    assert shares["conv_share"] < 0.2
    # ... yet far above a random direction's level: locality alone passes that null, not the local one
    assert shares["conv_share"] > 4 * random_shares(index)["conv_share"]


@pytest.mark.parametrize("geo, stride", [(G1, 1), (G1, 2), (G2, 1)])
def test_a_local_unshared_matrix_reads_conv_share_at_its_local_null(geo, stride):
    """shared_chance is the expected conv_share of a matrix local and random within its windows, at any local
    share: 40 draws with half their energy outside the windows average to it within sampling error."""
    index = conv_layout(geo, 3, 3, stride)
    rng = np.random.default_rng(4)
    held = index >= 0
    draws, nulls = [], []
    for _ in range(40):
        M = np.where(held, rng.standard_normal(index.shape), 0.0)
        M[~held] = rng.standard_normal((~held).sum()) * np.sqrt(held.sum() / (~held).sum())  # same energy off
        shares = subspace_shares(M, index)
        draws.append(shares["conv_share"])
        nulls.append(shared_chance(shares, index))
    draws = np.array(draws)
    assert np.mean(nulls) == pytest.approx(0.5 * subspace_dims(index)["conv"] / subspace_dims(index)["local"], rel=0.05)
    assert abs(draws.mean() - np.mean(nulls)) < 4 * draws.std(ddof=1) / np.sqrt(len(draws))
    # a convolution reads conv_share 1, far above its local null (dim_conv / dim_local)
    C = conv_subspace_projection(rng.standard_normal(index.shape), index)
    assert subspace_shares(C, index)["conv_share"] > 5 * shared_chance(subspace_shares(C, index), index)


def test_a_random_direction_has_the_dimension_ratio_within_sampling_error():
    index = conv_layout(G2, 4, 3)
    dims = subspace_dims(index)
    assert dims == {"conv": 4 * 2 * 9, "local": 4 * 36 * 2 * 9, "all": index.size}
    rng = np.random.default_rng(2)
    draws = np.array([[subspace_shares(rng.standard_normal(index.shape), index)[k] for k in ("conv_share",
                                                                                            "local_share")]
                      for _ in range(40)])
    chance = random_shares(index)
    for j, k in enumerate(("conv_share", "local_share")):
        mean, se = draws[:, j].mean(), draws[:, j].std(ddof=1) / np.sqrt(len(draws))
        assert abs(mean - chance[k]) < 4 * se + 1e-4, k


def test_an_orthogonal_complement_direction_has_conv_share_zero():
    index = conv_layout(G1, 2, 3)
    R = np.random.default_rng(3).standard_normal(index.shape)
    shares = subspace_shares(R - conv_subspace_projection(R, index), index)
    assert shares["conv_share"] == pytest.approx(0, abs=1e-12)
    assert np.isnan(subspace_shares(np.zeros(index.shape), index)["conv_share"])


# -- the centre-of-mass window share -----------------------------------------------------------------------------
@pytest.mark.parametrize("geo", [G1, Geometry(1, (20,), periodic=True), G2])
def test_a_gradient_inside_each_units_window_has_com_share_one(geo):
    rng = np.random.default_rng(4)
    m, S = 12, geo.spatial
    W = np.zeros((m, geo.channels, *S))
    G = np.zeros_like(W)
    for i in range(m):
        c = tuple(rng.integers(0, n) for n in S)
        W[(i, slice(None), *c)] = 1.0  # a one-pixel field: its centre of mass is c
        # the gradient on the 3-window around c (clipped into an open grid, wrapped on a periodic one)
        idx = []
        for a, n in enumerate(S):
            start = (c[a] - 1) % n if geo.periodic else min(max(c[a] - 1, 0), n - 3)
            idx.append([(start + j) % n for j in range(3)])
        for c in range(geo.channels):
            G[i, c][np.ix_(*idx)] = rng.standard_normal([3] * len(S))
    Wf, Gf = geo.flatten_fields(W), geo.flatten_fields(G)
    assert com_share(Gf, Wf, geo, 3) == pytest.approx(1, abs=1e-12)
    # the 5-window around the same centre holds the 3-window
    assert com_share(Gf, Wf, geo, 5) == pytest.approx(1, abs=1e-12)


def test_an_isotropic_gradient_has_com_share_at_chance():
    geo = Geometry(1, (40,))
    rng = np.random.default_rng(5)
    W = rng.standard_normal((400, 40)) * np.exp(-0.5 * ((np.arange(40) - 13) / 2.0) ** 2)  # fields near 13
    assert com_share_chance(geo, 3) == 3 / 40
    values = [com_share(rng.standard_normal(W.shape), W, geo, 3) for _ in range(5)]
    assert np.mean(values) == pytest.approx(3 / 40, abs=0.006)
    G = np.zeros_like(W)
    G[:, 30:] = 1.0  # all gradient energy far from every field
    assert com_share(G, W, geo, 3) == 0


def test_a_gradient_unrelated_to_the_fields_but_peaked_mid_grid_reads_its_unit_null_not_chance():
    """Random fields on an open grid have their centres of mass mid-grid; a gradient whose energy peaks there too,
    drawn independently of the fields, exceeds |K|/|S| threefold, and the unit-shuffled null reads the same."""
    geo = Geometry(1, (40,))
    rng = np.random.default_rng(7)
    W = rng.standard_normal((200, 40))
    G = rng.standard_normal(W.shape) * np.exp(-0.5 * ((np.arange(40) - 19.5) / 8) ** 2)
    share, null = com_share(G, W, geo, 3), com_share_units(G, W, geo, 3, seed=0)
    assert share > 2 * com_share_chance(geo, 3)
    assert null == pytest.approx(share, rel=0.15)
    # a gradient inside each unit's own window: 1, its unit null far below
    W1 = np.zeros((40, 40))
    W1[np.arange(40), np.arange(40)] = 1.0
    assert com_share(W1, W1, geo, 3) == pytest.approx(1)
    assert com_share_units(W1, W1, geo, 3, seed=0) < 0.3
    assert np.isnan(com_share_units(W1[:1], W1[:1], geo, 3, seed=0))


# -- the gradient of the dense first layer -------------------------------------------------------------------------
def _batch(n=64, C=1, L=20, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C * L, generator=g), torch.randint(0, k, (n,), generator=g)


def test_the_mlp_pull_is_its_first_layers_weight_gradient():
    torch.manual_seed(0)
    model = MLP(20, 3, 16, 2)
    x, y = _batch()
    G = first_layer_gradient(model, x, y, "ce", chunk=25)  # in chunks: the same mean loss
    assert model.layers[0].weight.grad is None  # no parameter gradient touched
    loss_fn(model(x), y, "ce").backward()
    torch.testing.assert_close(G, model.layers[0].weight.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shared", [True, False])
def test_the_local_nets_pull_is_the_gradient_of_its_dense_matrix(shared):
    """Chain rule through M(theta): the kernel's gradient is the sum of G over the entries each tap holds (cnn),
    or G's entries themselves (lcn); and G is what an MLP carrying M exactly feels."""
    torch.manual_seed(1)
    geo = Geometry(1, (20,))
    model = LocalNet(geo, 3, channels=4, kernel=3, layers=2, stride=1, shared=shared)
    x, y = _batch()
    G = first_layer_gradient(model, x, y, "ce").double().numpy()
    loss_fn(model(x), y, "ce").backward()
    first = model.layers[0]
    index = conv_layout(*conv_layouts(model)[0])
    if shared:
        taps = np.bincount(index[index >= 0], weights=G[index >= 0], minlength=first.weight.numel())
        np.testing.assert_allclose(taps, first.weight.grad.double().numpy().ravel(), rtol=1e-4, atol=1e-7)
    else:
        dense_grad = local_dense(first.weight.grad.double(), geo.spatial, 1, first.pad, first.circular).numpy()
        np.testing.assert_allclose(np.where(index >= 0, G, 0), dense_grad, rtol=1e-4, atol=1e-7)
    # the embedded MLP computes the same function: its first weight gradient is G
    width, depth, state = embed_local_net(model)
    mlp = MLP(20, 3, width, depth)
    mlp.load_state_dict(state)
    loss_fn(mlp(x), y, "ce").backward()
    np.testing.assert_allclose(mlp.layers[0].weight.grad.double().numpy(), G, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("geo", [Geometry(1, (20,)), Geometry(2, (8, 8)), Geometry(2, (8, 8), periodic=True)])
@pytest.mark.parametrize("shared", [True, False])
def test_the_pull_of_a_strided_or_2d_local_net_is_the_gradient_of_its_dense_matrix(geo, shared):
    """Stride 2 and 2-D, several channels: the kernel's gradient is G summed over each tap's entries (cnn), or
    G's entries in the windows (lcn); the forward hook's row order must be the dense matrix's."""
    torch.manual_seed(2)
    model = LocalNet(geo, 3, channels=3, kernel=3, layers=1, stride=2, shared=shared)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, geo.channels * geo.n_positions, generator=g), torch.randint(0, 3, (32,), generator=g)
    G = first_layer_gradient(model, x, y, "ce").double().numpy()
    loss_fn(model(x), y, "ce").backward()
    first, index = model.layers[0], conv_layout(*conv_layouts(model)[0])
    if shared:
        taps = np.bincount(index[index >= 0], weights=G[index >= 0], minlength=first.weight.numel())
        np.testing.assert_allclose(taps, first.weight.grad.double().numpy().ravel(), rtol=1e-4, atol=1e-7)
    else:
        dense_grad = local_dense(first.weight.grad.double(), geo.spatial, 2, first.pad, first.circular).numpy()
        np.testing.assert_allclose(np.where(index >= 0, G, 0), dense_grad, rtol=1e-4, atol=1e-7)


def test_the_pull_batch_is_fixed_and_whole_when_small():
    class T:
        x_train, y_train = torch.arange(5000.0)[:, None], torch.arange(5000)

    x, y = pull_batch(T, seed=3)
    assert len(x) == 2048 and len(set(y.tolist())) == 2048 and torch.equal(x, pull_batch(T, seed=3)[0])
    assert not torch.equal(x, pull_batch(T, seed=4)[0])
    T.x_train, T.y_train = T.x_train[:100], T.y_train[:100]
    assert torch.equal(pull_batch(T, seed=3)[1], T.y_train)


# -- tracking ---------------------------------------------------------------------------------------------------
def test_aliases_expand_to_the_delta_and_pull_sets():
    assert parse_track("delta") == DELTA_TRACK == ("delta_ipr", "delta_ipr_frac_above", "delta_window_mass_3",
                                                  "delta_hoyer")
    assert parse_track("default,pull,conv_share")[-len(PULL_TRACK) - 1:] == (*PULL_TRACK, "conv_share")
    with pytest.raises(ConfigError, match="grad_ipr"):
        parse_track("grad_ipr", "sequence")


def test_delta_measures_are_the_measures_of_w_minus_w0_and_absent_at_w0():
    geo = Geometry(1, (12,))
    rng = np.random.default_rng(6)
    W0 = rng.standard_normal((16, 12))
    cfg = RunConfig(task="mnist1d", steps=10, eval_every=5, log_every=5)
    t = Tracker(("ipr", "delta_ipr", "delta_window_mass_3", "delta_effective_rank"), cfg, geo, W0)
    assert t.mechanism(W0.copy(), None) == {}  # ΔW = 0: no delta measures, not a number
    D = np.zeros_like(W0)
    D[:, 3:5] = rng.standard_normal((16, 2))  # a learned part on two neighbouring pixels
    row = t.mechanism(W0 + D, None)
    plain = first_layer_measures(D, geo, ["ipr", "window_mass_3"])
    assert row["delta_ipr"] == pytest.approx(plain["ipr"]) and row["delta_window_mass_3"] == pytest.approx(1)
    assert row["delta_effective_rank"] <= 2 + 1e-9
    refs = t.references(W0 + D)
    drawn = references(D, geo, seed=cfg.seed, names=["ipr", "window_mass_3"], layer_names=["effective_rank"])
    for kind in ("gaussian", "permuted", "phase"):
        assert refs[kind]["delta_window_mass_3"] == pytest.approx(drawn[kind]["window_mass_3"])
    assert "delta_ipr" not in refs["init"]


def _tiny(tmp_path, name, **kw):
    cfg = RunConfig(task="mnist1d", task_opts={"n_train": 300}, width=16, depth=1, steps=40,
                    batch_size=50, eval_every=20, log_every=20, checkpoints=2, device="cpu", **kw)
    run_training(cfg, tmp_path / name, progress=False)
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_a_tracked_cnn_learns_only_inside_its_convolutional_subspace(tmp_path):
    rows = _tiny(tmp_path, "cnn", model="cnn", model_opts={"channels": 4, "layers": 1},
                 track="delta,pull,conv_share,local_share")
    assert "delta_ipr" not in rows[0] and "grad_com_share_3@chance" in rows[0] and "grad_com_share_3@units" in rows[0]
    last = rows[-1]
    assert last["delta_conv_share"] == pytest.approx(1) and last["delta_local_share"] == pytest.approx(1)
    assert 0 < last["grad_conv_share"] <= last["grad_local_share"] <= 1 + 1e-12
    assert last["grad_window_mass_3@phase"] > 0 and last["conv_share@random"] < last["local_share@random"] < 1
    for p in ("grad", "delta"):  # the local null of conv_share, from the same step's local share
        assert last[f"{p}_conv_share@local"] == pytest.approx(last[f"{p}_local_share"] * last["conv_share@random"]
                                                              / last["local_share@random"])
    refs = json.loads((tmp_path / "cnn" / "reference.json").read_text())
    assert refs["gaussian"]["grad_conv_share"] == last["conv_share@random"]
    assert {"delta_ipr", "grad_ipr"} <= set(refs["phase"])


def test_the_layout_shares_need_a_layout_and_the_ecnn_records_one(tmp_path):
    torch.manual_seed(0)
    cnn = LocalNet(Geometry(1, (20,)), 3, channels=2, kernel=3, layers=1, stride=1, shared=True)
    width, depth, state = embed_local_net(cnn)
    mlp = MLP(20, 3, width, depth)
    mlp.load_state_dict(state)
    with pytest.raises(ConfigError, match="unit layout"):
        check_model(("conv_share",), mlp, tmp_path, "mlp")
    write_layout(tmp_path, conv_layouts(cnn)[0])
    index = check_model(("conv_share",), mlp, tmp_path, "mlp")
    np.testing.assert_array_equal(index, unit_layout(cnn))
    assert subspace_shares(mlp.first_layer_dense(), index)["conv_share"] == pytest.approx(1)


def test_the_cli_refuses_the_layout_shares_without_a_layout_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["train", "--task", "mnist1d", "--steps", "20", "--track", "local_share",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "unit layout" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_analyze_delta_needs_w0_and_reports_the_delta_measures(tmp_path):
    _tiny(tmp_path, "mlp", track="none")
    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(tmp_path / "mlp"), "--delta", "--no-data", "--json",
                              str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["layers"]["layers.0"]["delta_window_mass_3"] > 0
    assert "delta_window_mass_3" in rep["reference"]["phase"]["layers.0"]
    sd = torch.load(tmp_path / "mlp" / "checkpoints" / "step_40.pt", weights_only=False)["state_dict"]
    torch.save(sd, tmp_path / "plain.pt")
    res = runner.invoke(app, ["analyze", str(tmp_path / "plain.pt"), "--input-shape", "1,40", "--delta"])
    assert res.exit_code == 2 and "--init" in res.output and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("geo", [Geometry(1, (2,), periodic=True), Geometry(1, (2, 5), periodic=True),
                                 Geometry(1, (2,))])
def test_a_window_that_covers_the_grid_holds_all_of_the_gradient(geo):
    rng = np.random.default_rng(7)
    W, G = rng.standard_normal((6, geo.n_inputs)), rng.standard_normal((6, geo.n_inputs))
    assert com_share_chance(geo, 5) == 1
    assert com_share(G, W, geo, 5) == pytest.approx(1)


def test_the_pull_reads_the_module_a_model_names_and_refuses_a_model_without_one():
    from probe.metrics import pull
    from probe.models import build_model
    from probe.tasks import Task, make_task

    geo = Geometry(channels=1, spatial=(8,))
    task = Task("t", torch.zeros(4, 8), torch.zeros(4, dtype=torch.long), torch.zeros(2, 8),
                torch.zeros(2, dtype=torch.long), geo, n_outputs=3)
    mlp = build_model("mlp", task, 5, 1, "standard", {})
    assert pull.first_layer_module(mlp) is mlp.layers[0]
    assert pull.first_layer_module(build_model("linear", task, 5, 0, "standard", {})).weight.shape == (3, 8)
    lcn = build_model("lcn", task, 5, 1, "standard", {"channels": 2, "kernel": 3, "layers": 1, "stride": 1})
    assert pull.first_layer_module(lcn) is lcn.layers[0]
    seq = make_task("parity", {"n_test": 8}, seed=0)
    transformer = build_model("transformer", seq, 8, 1, "standard", {})
    assert pull.first_layer_module(transformer) is None
    with pytest.raises(ValueError, match="needs a first layer linear in its input"):
        first_layer_gradient(transformer, seq.x_train[:4], seq.y_train[:4], seq.loss)
