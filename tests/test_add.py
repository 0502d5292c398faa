"""The "add two numbers" end of the spectrum: the add task, its measures on constructions with a known
answer (a network computing x_a + x_b with zero weights elsewhere has relevant_weight_mass 1), and its controls."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probe.analysis.function import applicable, function_measures
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.metrics.arith import arith_measures, rel_mse, relevant_weight_mass
from probe.models import build_model
from probe.run.loop import run_training
from probe.tasks import make_task

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("op, fn", [("add", np.add), ("mul", np.multiply), ("max", np.maximum)])
def test_targets_are_the_rule_of_the_two_relevant_inputs(op, fn):
    t = make_task("add", {"D": 6, "positions": "4,1", "op": op, "n_train": 50, "n_test": 40}, seed=0)
    assert t.x_train.shape == (50, 6) and t.y_train.shape == (50, 1) and t.loss == "mse" and t.n_outputs == 1
    for x, y in ((t.x_train, t.y_train), (t.x_test, t.y_test), (t.extras["x_extrap"], t.extras["y_extrap"])):
        np.testing.assert_allclose(y[:, 0].numpy(), fn(x[:, 4].numpy(), x[:, 1].numpy()), rtol=1e-6, atol=1e-6)
    assert t.info["relevant"] == [4, 1] and t.info["family"] == "arith"


def test_the_training_range_and_the_extrapolation_split_outside_it():
    t = make_task("add", {"low": 0.0, "high": 2.0, "n_test": 500}, seed=0)
    assert float(t.x_train.min()) >= 0 and float(t.x_train.max()) <= 2
    ex = t.extras["x_extrap"]
    assert bool(((ex < 0) | (ex > 2)).all()) and float(ex.min()) >= -2 and float(ex.max()) <= 4
    assert bool((ex < 0).any()) and bool((ex > 2).any())  # both sides
    noisy = make_task("add", {"noise": 0.5, "n_test": 4000}, seed=0)
    resid = noisy.y_test[:, 0] - noisy.x_test[:, 0] - noisy.x_test[:, 1]
    assert float(resid.std()) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("opts, message", [({"op": "sub"}, "op must be one of add, mul, max"),
                                           ({"positions": "0,0"}, "two distinct positions"),
                                           ({"positions": "0,16"}, "two distinct positions"),
                                           ({"low": 1.0, "high": 1.0}, "high > low"),
                                           ({"D": 1}, "D >= 2")])
def test_bad_options_are_one_line_config_errors(opts, message):
    with pytest.raises(ConfigError, match=message):
        make_task("add", opts, seed=0)


def test_a_bad_option_on_the_command_line_exits_2(tmp_path):
    res = CliRunner().invoke(app, ["train", "--task", "add", "--task-opt", "op=sub", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1


def exact_adder(task, a=0, b=1):
    """relu(x_a + x_b) - relu(-(x_a + x_b)) = x_a + x_b: one hidden layer of two units, every other weight zero."""
    net = build_model("mlp", task, 2, 1, "standard", {})
    first, readout = net.layers[0], net.readout
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        first.weight[0, [a, b]] = 1.0
        first.weight[1, [a, b]] = -1.0
        readout.weight[0] = torch.tensor([1.0, -1.0])
    return net


def test_a_network_computing_the_sum_with_zero_weights_elsewhere_has_relevant_mass_1_and_no_error():
    task = make_task("add", {"D": 8, "positions": "2,5", "n_train": 40, "n_test": 200}, seed=0)
    net = exact_adder(task, 2, 5)
    res = arith_measures(net, task)
    assert res["relevant_weight_mass"] == pytest.approx(1.0)
    assert res["rel_mse"] == pytest.approx(0.0, abs=1e-10) and res["extrap_rel_mse"] == pytest.approx(0.0, abs=1e-10)
    assert res["relevant_weight_mass@gaussian"] == pytest.approx(2 / 8)
    assert res["rel_mse@rule"] == pytest.approx(0.0, abs=1e-12)
    # linear regression represents the sum exactly: no error, and every coefficient off the two inputs is zero
    assert res["rel_mse@linreg"] == pytest.approx(0.0, abs=1e-8)
    assert res["relevant_weight_mass@linreg"] == pytest.approx(1.0, abs=1e-8)


def test_relevant_weight_mass_of_gaussian_weights_is_about_its_null():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4000, 20))
    assert relevant_weight_mass(W, [3, 7]) == pytest.approx(2 / 20, rel=0.05)
    assert relevant_weight_mass(np.eye(20)[[3, 7]], [3, 7]) == 1.0
    assert np.isnan(relevant_weight_mass(np.zeros((2, 20)), [0, 1]))


def test_rel_mse_is_0_for_the_truth_and_1_for_the_mean():
    y = np.random.default_rng(0).standard_normal(1000)
    assert rel_mse(y, y) == 0.0 and rel_mse(np.full_like(y, y.mean()), y) == pytest.approx(1.0)


def test_linear_regression_cannot_represent_a_product():
    task = make_task("add", {"op": "mul", "n_train": 2000, "n_test": 2000}, seed=0)
    res = arith_measures(exact_adder(task), task)
    assert res["rel_mse@linreg"] == pytest.approx(1.0, abs=0.05)
    assert res["rel_mse@rule"] == pytest.approx(0.0, abs=1e-12)


def test_the_add_task_trains_and_its_sweep_measures_come_with_nulls(tmp_path):
    from probe.sweep.execute import final_measures

    task = make_task("add", {"n_train": 64, "n_test": 64}, seed=0)
    assert applicable(task) == ("arith",)
    cfg = RunConfig(task="add", task_opts={"n_train": 64, "n_test": 64}, width=8, depth=1, steps=4, batch_size=16,
                    eval_every=2, log_every=2, track="zero_frac")
    run_training(cfg, tmp_path / "r", progress=False)
    res = final_measures(tmp_path / "r", ["arith"])
    assert {"relevant_weight_mass", "relevant_weight_mass@init", "relevant_weight_mass@linreg", "rel_mse",
            "extrap_rel_mse", "rel_mse@rule", "extrap_rel_mse@linreg"} <= set(res)
    assert set(function_measures(build_model("mlp", task, 4, 1), task)) == {
        k for k in res if not k.endswith("@init")}
