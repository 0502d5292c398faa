"""The class-conditional Gaussian clone (probe/tasks/clone.py), clone_acc / real_acc and the QDA ceiling
(probe/metrics/second_order.py)."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from typer.testing import CliRunner

from probe.analysis.function import function_measures
from probe.cli import app
from probe.config import ConfigError, RunConfig
from probe.run.loop import run_training
from probe.run.tracking import parse_track
from probe.tasks import make_task
from probe.tasks.clone import gaussian_clone
from probe.metrics.second_order import qda_accuracy

runner = CliRunner()


def moment_z(x_clone, x_source):
    """The clone's moments against the source's sample moments (mu, S), whitened by S on its range (rank r): the
    clone is N(mu, S) exactly, so with W = S^{-1/2} Sc S^{-1/2} (Sc the clone's sample covariance from m draws):
    T = m (mean - mu)^T S^+ (mean - mu) ~ chi^2(r) exactly, and W ~ Wishart(I_r / (m - 1), m - 1), whose entries
    are uncorrelated with z_ij = W_ij sqrt(m - 1) (i < j) and z_ii = (W_ii - 1) sqrt((m - 1) / 2) of unit variance.
    Returns (T, r, the z's, the clone's largest spread off the source's range, which must be 0)."""
    xs, xc = np.asarray(x_source, np.float64), np.asarray(x_clone, np.float64)
    m = len(xc)
    mu, S = xs.mean(0), np.cov(xs, rowvar=False)
    lam, V = np.linalg.eigh(S)
    live = lam > 1e-8 * lam.max()
    P = V[:, live] / np.sqrt(lam[live])  # whitening on the range of S
    e = (xc - mu) @ P
    T = m * float((e.mean(0) ** 2).sum())
    W = np.cov(e, rowvar=False)
    r = int(live.sum())
    iu = np.triu_indices(r, 1)
    z = np.concatenate([W[iu] * math.sqrt(m - 1), (np.diag(W) - 1) * math.sqrt((m - 1) / 2)])
    off = float(np.abs((xc - mu) @ V[:, ~live]).max()) if (~live).any() else 0.0
    return T, r, z, off


def check_moments(T, r, z):
    """T within chi^2(r)'s central 1 - 2e-5, the z's: none beyond 6, mean square within 6 s.e. of 1 (a clone
    with another scale, a dropped correlation or a shifted mean fails)."""
    from scipy.stats import chi2

    assert chi2.ppf(1e-5, r) < T < chi2.ppf(1 - 1e-5, r), (T, r)
    assert np.abs(z).max() < 6, np.abs(z).max()
    assert abs(np.mean(z**2) - 1) < 6 * math.sqrt(2 / len(z)), np.mean(z**2)


def test_the_clone_has_each_class_s_training_moments_to_sampling_error():
    real = make_task("digits", seed=3)
    clone = make_task("digits", {"clone": "gaussian"}, seed=3)
    assert torch.equal(clone.y_train, real.y_train) and torch.equal(clone.y_test, real.y_test)  # same labels
    assert clone.info["clone"] == "gaussian" and torch.equal(clone.extras["real_x_test"], real.x_test)
    assert not torch.allclose(clone.x_train, real.x_train)
    Ts, rs, zs = 0.0, 0, []
    for c in range(10):
        xs, xc = real.x_train[real.y_train == c], clone.x_train[clone.y_train == c]
        T, r, z, off = moment_z(xc, xs)  # digits: ~144 examples of 64 pixels a class, some pixels constant
        assert off < 1e-4  # a pixel constant in the class stays that constant in the clone
        Ts, rs = Ts + T, rs + r
        zs.append(z)
    check_moments(Ts, rs, np.concatenate(zs))


def test_a_clone_measured_on_fewer_examples_than_pixels_lies_in_their_span_with_their_moments():
    rng = np.random.default_rng(0)
    d, n = 50, 30  # n_c <= d: Sigma_c singular, sampled through the data factor
    A = rng.standard_normal((d, d)) / math.sqrt(d)
    x = torch.tensor(rng.standard_normal((2 * n, d)) @ A + 3 * rng.standard_normal(d), dtype=torch.float32)
    y = torch.tensor([0] * n + [1] * n)
    labels = torch.tensor([0, 1] * 2500)
    xc = gaussian_clone(x, y, labels, 2, torch.Generator().manual_seed(0))
    for c in (0, 1):
        src, cl = x[y == c].double().numpy(), xc[labels == c].double().numpy()
        T, r, z, off = moment_z(cl, src)
        assert r == n - 1  # the class's covariance has rank n_c - 1 < d
        check_moments(T, r, z)
        assert off < 1e-4 * np.abs(cl).max()  # in the affine span of the class's own examples


def test_the_clone_test_set_has_the_real_test_labels_and_the_training_moments(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 16))
    y = rng.integers(0, 3, 600)
    x_test = rng.standard_normal((3000, 16)) + 10.0  # a test set far from the training set
    y_test = rng.integers(0, 3, 3000)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test, input_shape=[1, 16])
    t = make_task(f"npz:{tmp_path / 'd.npz'}", {"clone": "gaussian"}, seed=0)
    assert torch.equal(t.y_test, torch.tensor(y_test))
    for c in range(3):
        check_moments(*moment_z(t.x_test[t.y_test == c], x[y == c])[:3])


def test_the_clone_is_seeded_training_by_the_run_test_set_by_the_data():
    a, b = make_task("digits", {"clone": "gaussian"}, seed=0), make_task("digits", {"clone": "gaussian"}, seed=0)
    c = make_task("digits", {"clone": "gaussian"}, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.allclose(a.x_train, c.x_train)  # another run's draw of the training clone
    assert torch.equal(a.x_test, c.x_test)  # one clone test set for every run, as a real test set is


@pytest.mark.parametrize("task,opts,message", [
    ("mqar", {"clone": "gaussian"}, "task mqar: clone=gaussian needs an image classification task; mqar is a sequence"),
    ("add", {"clone": "gaussian"}, "task add: clone=gaussian needs an image classification task; this one is a "
                                   "regression"),
    ("nlgp", {"clone": "gaussian", "fresh": True, "n_train": 50, "n_test": 20}, "task nlgp: clone=gaussian needs a "
                                                                                "fixed training set"),
    ("digits", {"clone": "yes"}, "task digits: clone must be one of none, gaussian, got 'yes'"),
])
def test_a_task_the_clone_cannot_take_is_one_line_exit_2(tmp_path, task, opts, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_task(task, opts)
    args = [x for k, v in opts.items() for x in ("--task-opt", f"{k}={v}")]
    res = runner.invoke(app, ["train", "--task", task, *args, "--steps", "2", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and message in res.output, res.output
    assert not (tmp_path / "r").exists()


def test_probe_tasks_lists_clone_for_image_tasks_only():
    res = runner.invoke(app, ["tasks", "mnist1d"])
    assert res.exit_code == 0 and "clone" in res.output and "class-conditional" in " ".join(res.output.split())
    assert "clone" not in runner.invoke(app, ["tasks", "mqar"]).output


def test_track_clone_acc_is_a_data_track_of_image_tasks_only():
    assert parse_track("ipr,clone_acc", "image") == ("ipr", "clone_acc")
    with pytest.raises(ConfigError, match="clone_acc does not apply to a sequence task"):
        parse_track("clone_acc", "sequence")


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_clone_acc_in_the_rows_and_both_directions_on_one_clone_test_set(tmp_path):
    common = dict(task="digits", width=16, depth=1, steps=40, batch_size=100, eval_every=20, log_every=20,
                  checkpoints=2, track="clone_acc", track_every=20)
    run_training(RunConfig(**common), tmp_path / "real", progress=False)
    run_training(RunConfig(**common, task_opts={"clone": "gaussian"}), tmp_path / "clone", progress=False)
    real, clone = rows(tmp_path / "real"), rows(tmp_path / "clone")
    assert [r["step"] for r in real if "clone_acc" in r] == [0, 20, 40]
    assert all("real_acc" not in r for r in real)
    # a run on the clone: its test set is the clone test set, and real_acc is its accuracy on the real test set
    assert all(r["clone_acc"] == r["test_acc"] for r in clone if "clone_acc" in r)
    assert all(0 <= r["real_acc"] <= 1 for r in clone if "clone_acc" in r)
    # same seed, same initialization: at step 0 both runs score the same network on the same clone test set
    assert real[0]["clone_acc"] == clone[0]["clone_acc"]
    assert real[0]["test_acc"] == clone[0]["real_acc"]
    from probe.run.check import check_run

    assert check_run(tmp_path / "real").ok  # clone_acc alone writes no reference.json, and none is asked for


def test_a_sweep_may_ask_for_the_second_order_final_measures():
    from probe.sweep.spec import FINAL_MEASURES, expand

    assert "second_order" in FINAL_MEASURES
    sweep = expand({"name": "s", "final_measures": ["second_order"],
                    "base": {"task": "nlgp", "track": "clone_acc", "task_opts": {"kurtosis": "elliptical"}},
                    "grid": {"task_opts.clone": ["none", "gaussian"]}})
    assert len(sweep.runs) == 2 and all(list(r.final_measures) == ["second_order"] for r in sweep.runs)


def bayes_two_gaussians(n_train, n_test, d, sep, seed):
    """Two classes N(+m, I), N(-m, I), |m| = sep / 2, equal priors: the Bayes accuracy is Phi(sep / 2)."""
    rng = np.random.default_rng(seed)
    m = np.zeros(d)
    m[0] = sep / 2

    def draw(n):
        y = rng.integers(0, 2, n)
        return rng.standard_normal((n, d)) + np.where(y[:, None] == 0, m, -m), y

    return (*draw(n_train), *draw(n_test)), norm.cdf(sep / 2)


def test_qda_reaches_the_bayes_accuracy_of_gaussian_classes():
    (x, y, xt, yt), bayes = bayes_two_gaussians(4000, 20000, 5, 2.0, 0)
    acc = qda_accuracy(x, y, xt, yt)
    se = math.sqrt(bayes * (1 - bayes) / len(yt))
    # QDA estimates 2 means and 2 covariances of 5 dims from 4000 examples: its excess error is ~ d^2/n, far
    # below 4 standard errors of the test set here
    assert bayes - 5 * se < acc < bayes + 4 * se, (acc, bayes)


def test_second_order_final_measures_only_when_named():
    from probe.models import build_model

    task = make_task("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", task, 8, 1)
    assert not {"clone_acc", "qda_acc"} & set(function_measures(model, task, n=64))
    out = function_measures(model, task, ["second_order"], n=64)
    assert set(out) == {"clone_acc", "qda_acc", "qda_clone_acc", "clone_detect_acc"}
    assert 0.6 < out["clone_detect_acc"] <= 1  # 8x8 digits are far from Gaussian: the clone is told apart
    assert out["qda_acc"] > 0.85  # 8x8 digits: class Gaussians separate them well (a random net: ~0.1)
    clone = make_task("digits", {"clone": "gaussian"}, seed=0)
    out_c = function_measures(model, clone, ["second_order"], n=64)
    assert out_c["qda_acc"] == out["qda_acc"] and out_c["clone_acc"] == out["clone_acc"]  # real data, one clone set
    assert "real_acc" in out_c


def test_qda_does_not_depend_on_the_data_s_units():
    (x, y, xt, yt), _ = bayes_two_gaussians(500, 2000, 30, 2.0, 1)
    x[:, -1] = xt[:, -1] = 0.0  # a constant input: a singular covariance, which the shrinkage handles
    assert qda_accuracy(1e-4 * x, y, 1e-4 * xt, yt) == qda_accuracy(x, y, xt, yt) > 0.7
