"""Recurrence: the tasks, the rnn control, length generalization and the recurrence measures, each
measure on a construction whose answer is known exactly (a causal convolution and a linear recurrence have
time_sharing 1)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from typer.testing import CliRunner

from probe.analysis.function import applicable, function_measures
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.metrics.recurrence import (causal_mass, dependence_map, distance_profile, length_accuracy, permuted_nulls,
                                      recurrence_measures, time_sharing)
from probe.models import build_model
from probe.run.loop import run_training
from probe.tasks import make_task

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = {"n_train": 64, "n_test": 32, "length": 8}
TASKS = ("running-parity", "count", "dyck", "delayed-copy")


# -- tasks -------------------------------------------------------------------------------------------------------
def test_targets_are_the_recurrences_they_name():
    t = make_task("running-parity", SMALL, seed=0)
    assert torch.equal(t.y_test, t.x_test.cumsum(1) % 2)
    t = make_task("count", {**SMALL, "vocab": 3}, seed=0)
    assert torch.equal(t.y_test, (t.x_test == 0).long().cumsum(1)) and t.n_outputs == 4 * 8 + 1
    t = make_task("dyck", SMALL, seed=0)
    depth = (1 - 2 * t.x_test).cumsum(1)  # token 0 = "(" = +1, 1 = ")" = -1
    assert torch.equal(t.y_test, depth) and int(depth.min()) >= 0
    t = make_task("dyck", {**SMALL, "max_depth": 2}, seed=0)
    assert int(t.y_test.max()) <= 2 and t.n_outputs == 3
    t = make_task("delayed-copy", {**SMALL, "delay": 3}, seed=0)
    assert (t.y_test[:, :3] == -100).all() and torch.equal(t.y_test[:, 3:], t.x_test[:, :-3])
    assert torch.equal(t.extras["source_test"][0, 3:], torch.arange(5))


@pytest.mark.parametrize("name", TASKS)
def test_every_task_stores_test_splits_at_2T_and_4T(name):
    t = make_task(name, SMALL, seed=1)
    assert t.info["family"] == "recurrence" and t.info["max_length"] == 32
    for f in (2, 4):
        x, y = t.extras[f"x_test_{f}T"], t.extras[f"y_test_{f}T"]
        assert x.shape == y.shape == (32, 8 * f)
        assert 0 <= t.info[f"unseen_{f}T"] <= 1
    # the same task twice is the same data; a fresh training batch is a pure function of (seed, step)
    t2 = make_task(name, SMALL, seed=1)
    assert torch.equal(t.extras["x_test_4T"], t2.extras["x_test_4T"])
    assert torch.equal(t.sampler(1, 5, 4)[0], t2.sampler(1, 5, 4)[0])


def test_count_reports_the_answers_whose_class_training_never_shows():
    t = make_task("count", {"length": 8, "vocab": 2, "n_train": 200, "n_test": 200}, seed=0)
    seen = int(t.y_train.max())
    y = t.extras["y_test_4T"]
    assert t.info["unseen_4T"] == pytest.approx(float((y > seen).float().mean()))
    assert t.info["unseen_4T"] > 0.3  # half the tokens are counted: at 4T most counts exceed those of T


# -- models and lengths ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_rnn_reads_any_length_and_its_dense_first_layer_is_its_shared_input_weights(cell):
    task = make_task("running-parity", SMALL, seed=0)
    torch.manual_seed(0)
    net = build_model("rnn", task, 6, 2, "standard", {"cell": cell}).eval()
    assert net(task.x_test[:3]).shape == (3, 8, 2) and net(task.extras["x_test_4T"][:3]).shape == (3, 32, 2)
    x = task.x_test[:3]
    torch.testing.assert_close(net(F.one_hot(x, 2).float()), net(x))
    W = net.first_layer_dense()  # (T * gates * width) x (T * C): W_ih at every position
    gates = {"elman": 1, "gru": 3, "lstm": 4}[cell]
    assert W.shape == (8 * gates * 6, 8 * 2)
    flat = F.one_hot(x, 2).float().flatten(1)
    per_step = F.one_hot(x, 2).float() @ net.rnn.weight_ih_l0.T  # (B, T, gates * width)
    torch.testing.assert_close(flat @ W.T, per_step.flatten(1))


def test_an_rnn_on_a_one_answer_task_reads_out_at_the_last_position():
    task = make_task("mqar", {"n_train": 16, "n_test": 8}, seed=0)
    net = build_model("rnn", task, 8, 1, "standard", {})
    assert net(task.x_test[:2]).shape == (2, 16, task.n_outputs)
    task = make_task("parity", {"n_train": 16, "n_test": 8}, seed=0)
    assert build_model("rnn", task, 8, 1, "standard", {})(task.x_test[:2]).shape == (2, 2)


@pytest.mark.parametrize("opts, message", [({"cell": "transformer"}, "cell must be one of elman, gru, lstm"),
                                           ({"cell": "gru", "activation": "relu"}, "elman cells only"),
                                           ({"activation": "sigmoid"}, "tanh or relu")])
def test_bad_rnn_options_are_config_errors(opts, message):
    task = make_task("running-parity", SMALL, seed=0)
    with pytest.raises(ConfigError, match=message):
        build_model("rnn", task, 8, 1, "standard", opts)
    with pytest.raises(ConfigError, match="depth >= 1"):
        build_model("rnn", task, 8, 0, "standard", {})


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "none"])
def test_the_transformer_reads_the_longer_test_splits(positions):
    task = make_task("count", SMALL, seed=0)
    net = build_model("transformer", task, 8, 1, "standard", {"positions": positions}).eval()
    assert net(task.extras["x_test_4T"][:2]).shape == (2, 32, task.n_outputs)
    assert net.max_length == (32 if positions == "learned" else math.inf)
    if positions == "learned":
        assert net.pos.shape == (32, 8)


def test_a_length_a_model_cannot_read_is_one_line_and_exit_2(tmp_path):
    task = make_task("running-parity", {**SMALL, "test_length": 16}, seed=0)
    assert task.x_test.shape == (32, 16) and task.x_train.shape == (64, 8)
    for model in ("mlp", "mixer"):
        with pytest.raises(ConfigError, match=f"model {model} reads sequences of length 8 only"):
            build_model(model, task, 8, 1, "standard", {})
    build_model("rnn", task, 8, 1, "standard", {})
    res = CliRunner().invoke(app, ["train", "--task", "running-parity", "--task-opt", "test_length=32",
                                   "--model", "mlp", "--out", str(tmp_path / "r"), "--steps", "2"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "reads sequences of length 16 only" in lines[0] and "(rnn, transformer)" in lines[0]


# -- the measures on constructions ---------------------------------------------------------------------------------
class CausalConv(nn.Module):
    """z_t = sum_{j < k} H_j x_{t-j}: an exact causal convolution over one-hot inputs (B, T, C) -> (B, T, K)."""

    def __init__(self, C, K, k, seed=0, anti=False):
        super().__init__()
        self.H = torch.randn(k, K, C, generator=torch.Generator().manual_seed(seed))
        self.anti = anti

    def forward(self, x):
        T, k = x.shape[1], len(self.H)
        z = torch.zeros(x.shape[0], T, self.H.shape[1])
        for j in range(k):
            term = x @ self.H[j].T  # (B, T, K): what x_s contributes through H_j
            if self.anti:  # z_t reads x_{t+j}
                z = z + F.pad(term[:, j:], (0, 0, 0, j))
            else:  # z_t reads x_{t-j}
                z = z + F.pad(term[:, : T - j], (0, 0, j, 0))
        return z


class LinearRecurrence(nn.Module):
    """h_t = A h_{t-1} + B x_t, z_t = C h_t: an exact linear recurrence."""

    def __init__(self, C, K, d, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = 0.8 * torch.linalg.qr(torch.randn(d, d, generator=g))[0]
        self.B, self.Cm = torch.randn(d, C, generator=g), torch.randn(K, d, generator=g)

    def forward(self, x):
        h = torch.zeros(x.shape[0], self.A.shape[0])
        out = []
        for t in range(x.shape[1]):
            h = h @ self.A.T + x[:, t] @ self.B.T
            out.append(h @ self.Cm.T)
        return torch.stack(out, 1)


def onehots(B=64, T=10, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.one_hot(torch.randint(0, C, (B, T), generator=g), C).float()


def test_an_exact_causal_convolution_and_a_linear_recurrence_have_time_sharing_and_causal_mass_1():
    x = onehots()
    y = torch.randint(0, 4, (64, 10), generator=torch.Generator().manual_seed(1))
    for f in (CausalConv(3, 4, k=3), LinearRecurrence(3, 4, d=5)):
        M = dependence_map(f, x, y)
        assert time_sharing(M) == pytest.approx(1.0, abs=1e-9)
        assert causal_mass(M) == pytest.approx(1.0, abs=1e-12)
        null = permuted_nulls(M, seed=0)
        assert null["time_sharing"] < 0.5 and null["causal_mass"] < 0.9


def test_the_dependence_map_is_the_squared_kernel_of_a_convolution():
    f = CausalConv(3, 4, k=3)
    x, y = onehots(B=8), torch.tensor([0, 2]).repeat(8, 5)  # answers of classes 0 and 2 only
    M = dependence_map(f, x, y)
    H = (f.H - f.H.mean(1, keepdim=True))[:, [0, 2]]  # the centred logits' kernel, (k, |S|, C)
    for t in range(10):
        for s in range(10):
            want = float(H[t - s].pow(2).sum()) if 0 <= t - s < 3 else 0.0
            assert M[t, s] == pytest.approx(want, rel=1e-5, abs=1e-9)
    d, share = distance_profile(M)
    assert share.sum() == pytest.approx(1.0) and set(d[share > 0]) == {0, 1, 2}


def test_an_anticausal_map_has_no_causal_mass_beyond_its_diagonal():
    f = CausalConv(3, 4, k=3, anti=True)  # z_t reads x_t, x_{t+1}, x_{t+2}
    M = dependence_map(f, onehots(), torch.zeros(64, 10, dtype=torch.long))
    diag = np.nansum(np.diag(M))
    assert causal_mass(M) == pytest.approx(diag / np.nansum(M))


def test_rows_where_nothing_is_asked_are_left_out():
    f = CausalConv(3, 4, k=2)
    y = torch.zeros(64, 10, dtype=torch.long)
    y[:, :4] = -100
    M = dependence_map(f, onehots(), y)
    assert np.isnan(M[:4]).all() and np.isfinite(M[4:]).all()
    assert time_sharing(M) == pytest.approx(1.0, abs=1e-9)


def test_time_sharing_of_iid_maps_is_about_its_closed_form_and_constant_maps_are_undefined():
    T = 12
    rng = np.random.default_rng(0)
    vals = [time_sharing(rng.random((T, T))) for _ in range(400)]
    assert np.mean(vals) == pytest.approx(2 / (T + 2), rel=0.1)
    assert np.isnan(time_sharing(np.ones((T, T))))
    assert causal_mass(np.ones((T, T))) == pytest.approx((T + 1) / (2 * T))


def test_a_relu_elman_rnn_with_nonnegative_weights_is_a_linear_recurrence_with_time_sharing_1():
    task = make_task("running-parity", SMALL, seed=0)
    torch.manual_seed(0)
    net = build_model("rnn", task, 5, 1, "standard", {"cell": "elman", "activation": "relu"}).eval()
    with torch.no_grad():  # every preactivation >= 0 on one-hot inputs: relu is the identity, the cell linear
        for p in net.rnn.parameters():
            p.abs_()
        net.rnn.weight_hh_l0.mul_(0.3)
    x = F.one_hot(task.x_test, 2).float()
    M = dependence_map(net, x, task.y_test)
    assert time_sharing(M) == pytest.approx(1.0, abs=1e-6) and causal_mass(M) == pytest.approx(1.0, abs=1e-12)


def test_length_accuracy_of_the_exact_rule_is_1_at_every_length():
    task = make_task("running-parity", SMALL, seed=0)

    def rule(x):  # logits of the running parity itself
        return F.one_hot(x.cumsum(1) % 2, 2).float()

    for f in (2, 4):
        assert length_accuracy(rule, task.extras[f"x_test_{f}T"], task.extras[f"y_test_{f}T"]) == 1.0


def test_recurrence_measures_report_longer_lengths_only_for_models_that_read_them():
    task = make_task("delayed-copy", SMALL, seed=0)
    assert applicable(task) == ("routing", "recurrence")
    assert applicable(make_task("parity", {"n": 6}, seed=0)) == ("routing",)
    for model, longer in (("mlp", False), ("mixer", False), ("rnn", True), ("transformer", True)):
        torch.manual_seed(0)
        net = build_model(model, task, 8, 1, "standard", {})
        res = recurrence_measures(net, task, n=16)
        assert {"time_sharing", "causal_mass", "time_sharing@permuted", "causal_mass@permuted"} <= set(res)
        assert ("test_acc_2T" in res and "test_acc_4T" in res) == longer
        if model in ("rnn", "transformer"):  # causal by construction
            assert res["causal_mass"] == pytest.approx(1.0)
    assert "time_sharing" in function_measures(net, task, ["recurrence"], n=16)
    assert recurrence_measures(net, make_task("parity", {"n": 6}, seed=0)) == {}


def test_a_sweep_run_of_the_rnn_gets_its_recurrence_measures_and_their_nulls(tmp_path):
    from probe.sweep.execute import final_measures

    cfg = RunConfig(task="running-parity", task_opts={**SMALL}, model="rnn", width=8, depth=1, steps=4, batch_size=8,
                    eval_every=2, log_every=2, track="none")
    run_training(cfg, tmp_path / "r", progress=False)
    res = final_measures(tmp_path / "r", ["recurrence"], n=16)
    assert {"time_sharing", "time_sharing@init", "time_sharing@permuted", "test_acc_4T", "test_acc_4T@init"} <= set(res)
    assert not any(k.count("@") > 1 for k in res)  # no null of a null


def test_probe_analyze_reads_rnn_and_transformer_checkpoints_of_a_recurrence_task(tmp_path):
    from probe.analysis.report import analyze_checkpoint

    for model in ("rnn", "transformer"):
        cfg = RunConfig(task="count", task_opts={**SMALL}, model=model, width=8, depth=1, steps=2, batch_size=8,
                        eval_every=2, log_every=2, track="none")
        run_training(cfg, tmp_path / model, progress=False)
        shell = analyze_checkpoint(tmp_path / model, data=False)  # the model rebuilt on a task shell
        rep = analyze_checkpoint(tmp_path / model, n_data=16)
        assert list(shell.layers) == list(rep.layers)
        assert {"time_sharing", "causal_mass", "test_acc_2T", "test_acc_4T"} <= set(rep.function)
        # the nulls sit in the reference columns, not among the measures
        assert not any("@" in k for k in rep.function)
        assert {"time_sharing", "causal_mass"} <= set(rep.reference["permuted"]["function"])
        assert {"time_sharing", "causal_mass"} <= set(rep.reference["init"]["function"])
