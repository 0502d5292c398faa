"""Shift symmetry of embedded layers (probe.metrics.symmetry) and the stability procedure."""

import json

import numpy as np
import pytest
import torch

from probe.config import ConfigError, RunConfig
from probe.geometry import Geometry
from probe.metrics.equivariance import (
    circular_conv_matrix,
    conv_layout,
    conv_subspace_distance,
    conv_subspace_projection,
)
from probe.metrics.symmetry import (
    complement_growth,
    complement_norm,
    complement_share,
    invariant_readout_layout,
    orbit,
    shift_layout,
    subspace_distances,
)
from probe.models.conv import conv_layouts
from probe.run.procedures import run_procedure
from probe.run.procedures.ecnn import conv_subspace_distances, embed_local_net
from probe.run.procedures.stability import ComplementTracker, OrbitAugment, perturb_off_convolutions, symmetry_layouts

GEO = Geometry(channels=2, spatial=(12,))


def test_circular_convolutions_lie_in_both_subspaces_and_wide_kernels_only_in_the_equivariant_one():
    rng = np.random.default_rng(0)
    equiv = shift_layout(GEO, 3, 1, (12,))
    local = conv_layout(GEO, 3, 3, 1, 1, True)
    W = circular_conv_matrix(rng.normal(size=(3, 2, 3)), (12,))
    assert complement_share(W, equiv) < 1e-12 and complement_share(W, local) < 1e-12
    wide = circular_conv_matrix(rng.normal(size=(3, 2, 9)), (12,))  # shared but not local
    assert complement_share(wide, equiv) < 1e-12 and complement_share(wide, local) > 0.5
    # a random matrix: the share outside a subspace of dimension T in R^(m n) is about sqrt(1 - T / (m n))
    R = rng.normal(size=(36, 24))
    assert complement_share(R, equiv) == pytest.approx(np.sqrt(1 - 3 * 2 * 12 / R.size), abs=0.03)
    # nested subspaces: the convolutions of the layout are equivariant; projecting is idempotent
    Pl = conv_subspace_projection(R, local)
    assert np.allclose(conv_subspace_projection(Pl, equiv), Pl)
    Pe = conv_subspace_projection(R, equiv)
    assert np.allclose(conv_subspace_projection(Pe, equiv), Pe)


def test_a_strided_circular_conv_is_equivariant_to_shifts_by_its_stride():
    from probe.models.conv import local_dense

    w = torch.randn(3, 2, 3)
    M = local_dense(w.unsqueeze(1).expand(3, 6, 2, 3), (12,), 2, 1, True).double().numpy()
    assert complement_share(M, shift_layout(GEO, 3, 2, (6,))) < 1e-12
    assert complement_share(M, conv_layout(GEO, 3, 3, 2, 1, True)) < 1e-12
    with pytest.raises(ValueError, match="not an equivariant image"):
        shift_layout(GEO, 3, 2, (7,))  # an odd extra output position: no shift maps the grid onto itself


def test_the_orbit_holds_every_circular_shift_and_is_closed():
    x = torch.arange(2 * 2 * 12, dtype=torch.float32).reshape(2, 24)
    o = orbit(x, GEO)
    assert o.shape == (2 * 12, 24)
    assert torch.equal(o[0], x[0]) and torch.equal(o[12 + 5].reshape(2, 12), torch.roll(x[1].reshape(2, 12), 5, 1))
    # the orbit of a shifted example is the same set of rows
    shifted = torch.roll(x[:1].reshape(1, 2, 12), 3, 2).reshape(1, 24)
    a = {tuple(r.tolist()) for r in orbit(x[:1], GEO)}
    assert a == {tuple(r.tolist()) for r in orbit(shifted, GEO)}
    g2 = Geometry(channels=1, spatial=(3, 4))
    o2 = orbit(torch.randn(2, 12), g2)
    assert o2.shape == (24, 12) and len({tuple(r.tolist()) for r in o2[:12]}) == 12


def _embedded(pool=True, padding="circular", seed=0):
    from probe.models import build_model
    from probe.tasks import make_task

    task = make_task("mnist1d", {}, seed=0)
    torch.manual_seed(seed)
    cnn = build_model("cnn", task, 1, 1, "standard",
                      {"channels": 3, "kernel": 3, "layers": 2, "stride": 2, "padding": padding, "pool": pool})
    width, depth, state = embed_local_net(cnn)
    mlp = build_model("mlp", task, width, depth, "standard", {})
    mlp.load_state_dict(state)
    return task, cnn, mlp, state


def _train(task, mlp, orbits: bool, steps=8, lr=0.05):
    """SGD on batches of 16 examples, whole orbits or plain, with the trainer's loss."""
    from probe.run.loop import Batches, loss_fn

    opt = torch.optim.SGD(mlp.parameters(), lr=lr)
    if orbits:
        task.sampler = OrbitAugment(task)
    batches = Batches(task, 16, 0, torch.device("cpu"))
    for step in range(steps):
        x, y = batches(step)
        opt.zero_grad()
        loss_fn(mlp(x), y, "ce").backward()
        opt.step()
    task.sampler = None


def test_an_equivariant_embedded_net_stays_exactly_equivariant_under_full_orbit_augmentation():
    task, cnn, mlp, state = _embedded()
    x = task.x_train[:8]
    with torch.no_grad():
        assert torch.allclose(mlp(x), cnn(x), atol=1e-5)  # the pooled readout is embedded exactly
    layouts = symmetry_layouts(cnn)
    tracker = ComplementTracker(layouts, invariant_readout_layout(10, 3, 20), state, perturbed=False)
    assert tracker.measures(state)["equiv_subspace_distance_all"] < 1e-7
    _train(task, mlp, orbits=True)
    after = tracker.measures(mlp.state_dict())
    assert after["equiv_subspace_distance_all"] < 1e-6 and after["readout_shift_distance"] < 1e-6
    assert after["conv_subspace_distance_all"] > 1e-4  # shared, yes; local, no: the gradient has taps everywhere
    # the same steps on plain batches break the symmetry
    task, cnn, mlp, state = _embedded()
    _train(task, mlp, orbits=False)
    assert tracker.measures(mlp.state_dict())["equiv_subspace_distance_all"] > 1e-3


def test_orbits_do_not_keep_the_symmetry_with_a_readout_that_is_not_invariant():
    task, cnn, mlp, state = _embedded(pool=False)
    layouts = symmetry_layouts(cnn)
    tracker = ComplementTracker(layouts, invariant_readout_layout(10, 3, 20), state, perturbed=False)
    _train(task, mlp, orbits=True)
    assert tracker.measures(mlp.state_dict())["equiv_subspace_distance"] > 1e-4


def test_subspace_distances_and_growth_pool_the_layers_complements():
    # norms (r_l, n_l) written out: the shares r/n, and sqrt(sum r^2 / sum n^2) for the layers together
    shares, pooled = subspace_distances([(3.0, 5.0), (0.0, 12.0)])
    assert shares == [0.6, 0.0] and pooled == pytest.approx(3 / 13, rel=1e-15)
    shares, pooled = subspace_distances([(0.0, 0.0)])
    assert np.isnan(shares[0]) and np.isnan(pooled)
    assert complement_growth([(6.0, 9.0), (8.0, 9.0)], [(3.0, 9.0), (4.0, 9.0)]) == (2.0, pytest.approx(2.0))
    assert complement_growth([(1.0, 1.0)], [(0.0, 1.0)]) == (None, None)  # started inside: no growth to read
    # on an embedded net: what the tracker writes is these of complement_norm, and ecnn's distances agree with it
    _, cnn, _, state = _embedded()
    layouts = symmetry_layouts(cnn)
    perturbed = perturb_off_convolutions(state, layouts, 0.2, "first", seed=1)
    norms = [complement_norm(perturbed[f"layers.{l}.weight"].double().numpy(), lay["conv"])
             for l, lay in enumerate(layouts)]
    m = ComplementTracker(layouts, invariant_readout_layout(10, 3, 20), state, perturbed=False).measures(perturbed)
    shares, pooled = subspace_distances(norms)
    assert m["conv_subspace_distance"] == shares[0] == pytest.approx(0.2, rel=1e-6)
    assert m["conv_subspace_distance_l1"] == shares[1] < 1e-7 and m["conv_subspace_distance_all"] == pooled
    ecnn_view = conv_subspace_distances(perturbed, conv_layouts(cnn))
    assert ecnn_view == {"conv_subspace_distance": shares[0], "conv_subspace_distance_all": pooled}
    W = perturbed["layers.0.weight"].double().numpy()
    assert shares[0] == pytest.approx(conv_subspace_distance(W, layouts[0]["conv"]), rel=1e-12)


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3])
def test_the_perturbation_lies_off_the_convolutions_at_relative_norm_eps(eps):
    _, cnn, _, state = _embedded()
    layouts = symmetry_layouts(cnn)
    perturbed = perturb_off_convolutions(state, layouts, eps, "all", seed=3)
    tracker = ComplementTracker(layouts, invariant_readout_layout(10, 3, 20), perturbed, perturbed=True)
    m = tracker.measures(perturbed)
    assert m["conv_subspace_distance"] == pytest.approx(eps, rel=1e-6)
    assert m["conv_subspace_distance_l1"] == pytest.approx(eps, rel=1e-6)
    assert m["conv_complement_growth"] == pytest.approx(1.0) and m["equiv_complement_growth_all"] == pytest.approx(1.0)
    for l, lay in enumerate(layouts):  # the projection is the unperturbed layer: the perturbation is orthogonal
        W = perturbed[f"layers.{l}.weight"].double().numpy()
        assert np.allclose(conv_subspace_projection(W, lay["conv"]), state[f"layers.{l}.weight"].double().numpy(),
                           atol=1e-6)
    first = perturb_off_convolutions(state, layouts, eps, "first", seed=3)
    assert torch.equal(first["layers.1.weight"], state["layers.1.weight"])
    assert torch.equal(first["layers.0.weight"], perturbed["layers.0.weight"])


@pytest.mark.parametrize("cfg, opts, match", [
    (dict(model="cnn"), {}, "plain model=mlp"),
    ({}, {"eps": 1.0}, "0 <= eps < 1"),
    ({}, {"augment": "shift"}, "augment none or orbit"),
    ({}, {"precision": "half"}, "precision float32 or float64"),
    ({}, {"augment": "orbit", "cnn_steps": 0, "source_opts": {"channels": 2, "layers": 1, "pool": False}},
     "fixed point of circular shifts"),
    ({}, {"augment": "orbit", "cnn_steps": 0, "source_opts": {"channels": 2, "layers": 1, "padding": "zeros"}},
     "fixed point of circular shifts"),
    (dict(task="mqar"), {}, "not an image task"),
])
def test_stability_refuses_what_it_cannot_take(tmp_path, cfg, opts, match):
    base = RunConfig(task="mnist1d", model="mlp", steps=4, log_every=2, eval_every=2, checkpoints=2)
    with pytest.raises(ConfigError, match=match):
        run_procedure("stability", base.replace(**cfg), tmp_path / "r", opts)


@pytest.mark.slow
def test_stability_procedure_tracks_the_complement_from_eps(tmp_path):
    cfg = RunConfig(task="mnist1d", model="mlp", steps=20, batch_size=20, log_every=10, eval_every=10, checkpoints=2,
                    optimizer="sgd", lr=0.05)
    src = {"channels": 2, "layers": 2}
    row, res = run_procedure("stability", cfg, tmp_path / "orbit", {"cnn_steps": 10, "source_opts": src, "eps": 0.1,
                                                                       "augment": "orbit"})
    rows = [json.loads(x) for x in (tmp_path / "orbit" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert rows[0]["conv_subspace_distance"] == pytest.approx(0.1, rel=1e-6)
    assert res["conv_subspace_distance@init"] == pytest.approx(0.1, rel=1e-6)
    assert res["conv_complement_ratio"] == pytest.approx(rows[-1]["conv_complement_growth"])
    assert (res["width"], res["depth"]) == (40, 2) and 0 <= res["cnn_test_acc"] <= 1
    # no perturbation, whole orbits: the layers stay equivariant, the ratio is undefined
    _, res = run_procedure("stability", cfg, tmp_path / "exact", {"cnn_steps": 10, "source_opts": src, "eps": 0.0,
                                                                       "augment": "orbit"})
    assert res["equiv_subspace_distance_all"] < 1e-6 and res["conv_complement_ratio"] is None
    assert json.loads((tmp_path / "exact" / "config.json").read_text())["model"] == "mlp"


@pytest.mark.slow
def test_in_float64_adam_keeps_an_equivariant_net_equivariant_to_rounding(tmp_path):
    cfg = RunConfig(task="mnist1d", model="mlp", steps=30, batch_size=20, log_every=10, eval_every=10, checkpoints=2,
                    optimizer="adam", lr=1e-3)
    opts = {"cnn_steps": 10, "source_opts": {"channels": 2, "layers": 2}, "eps": 0.0, "augment": "orbit",
            "precision": "float64"}
    _, res = run_procedure("stability", cfg, tmp_path / "f64", opts)
    assert res["equiv_subspace_distance_all"] < 1e-12 and res["readout_shift_distance"] < 1e-12
    from probe.run.checkpoint import load_checkpoint

    sd = load_checkpoint(tmp_path / "f64" / "checkpoints" / "step_30.pt")["state_dict"]
    assert sd["layers.0.weight"].dtype == torch.float64
    # resuming a finished float64 run reads its result again
    _, again = run_procedure("stability", cfg, tmp_path / "f64", opts)
    assert again["equiv_subspace_distance_all"] == res["equiv_subspace_distance_all"]


def test_orbit_batches_are_the_orbits_of_the_plain_batches():
    """OrbitAugment reads the trainer's epoch order (probe.seeding.EpochOrder): step t's rows are the |S| shifts of
    each example of the plain run's batch t, across an epoch boundary too."""
    from probe.metrics.symmetry import orbit
    from probe.run.loop import Batches
    from probe.tasks import make_task

    plain, aug = make_task("mnist1d", {"num_samples": 500}), make_task("mnist1d", {"num_samples": 500})
    aug.sampler = OrbitAugment(aug)
    b0, b1 = Batches(plain, 40, 3, torch.device("cpu")), Batches(aug, 40, 3, torch.device("cpu"))
    for step in (0, 9, 10, 23):  # 400 training examples: 10 batches an epoch
        (x0, y0), (x1, y1) = b0(step), b1(step)
        assert torch.equal(x1, orbit(x0, plain.geometry)) and torch.equal(y1, y0.repeat_interleave(40))
