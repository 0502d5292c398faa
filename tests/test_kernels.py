"""Kernel alignment (probe.metrics.kernels): CKA, KTA and the empirical NTK on constructions with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from probe.metrics.kernels import center, cka, empirical_ntk, kta, label_kernel, ntk_alignment


def _gram(n=30, d=5, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, d))
    return X, X @ X.T


def test_cka_of_a_kernel_with_itself_is_one_and_ignores_scale_and_offset():
    X, K = _gram()
    assert cka(K, K) == pytest.approx(1.0, abs=1e-12)
    assert cka(K, 7.5 * K) == pytest.approx(1.0, abs=1e-12)
    assert cka(K, 3 * K + 4.0) == pytest.approx(1.0, abs=1e-12)  # centring removes a constant kernel
    Q = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))[0]
    assert cka(K, (X @ Q) @ (X @ Q).T) == pytest.approx(1.0, abs=1e-12)  # a rotation of the features: same kernel
    _, L = _gram(seed=2)
    assert cka(K, L) < 0.9  # independent features: far from 1
    assert np.isnan(cka(K, np.ones_like(K)))


def test_cka_of_rank_one_kernels_is_the_squared_cosine_of_the_centred_vectors():
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=20), rng.normal(size=20)
    uc, vc = u - u.mean(), v - v.mean()
    expected = (uc @ vc) ** 2 / ((uc @ uc) * (vc @ vc))
    assert cka(np.outer(u, u), np.outer(v, v)) == pytest.approx(expected, rel=1e-10)
    assert np.allclose(center(np.outer(u, u)), np.outer(uc, uc))


def test_kta_of_the_label_kernel_is_one_and_of_unrelated_kernels_small():
    y = np.random.default_rng(4).integers(0, 4, size=200)
    assert kta(label_kernel(y), y) == pytest.approx(1.0, abs=1e-12)
    assert kta(2 * label_kernel(y) + 1, y) == pytest.approx(1.0, abs=1e-12)
    # a kernel of class-free Gaussian features: about C / n
    X = np.random.default_rng(5).normal(size=(200, 50))
    assert abs(kta(X @ X.T, y)) < 0.1
    # two classes with labels +-1: Y Y^T centred is the centred outer product of the +-1 vector
    y2 = np.array([0, 1] * 10)
    s = 2.0 * y2 - 1
    assert kta(np.outer(s, s), y2) == pytest.approx(1.0, abs=1e-12)


class _Bare(nn.Module):
    """A linear map by a bare parameter (not nn.Linear): its NTK goes through the per-example Jacobian path."""

    def __init__(self, d, C):
        super().__init__()
        self.W = nn.Parameter(torch.randn(C, d))

    def forward(self, x):
        return x @ self.W.T


def test_the_ntk_of_a_linear_model_is_the_input_gram_times_the_outputs():
    torch.manual_seed(0)
    x = torch.randn(16, 7)
    X = x.double().numpy()
    lin = nn.Linear(7, 3)  # factorized path: C (X X^T + 1) (the bias adds 1 per output)
    assert np.allclose(empirical_ntk(lin, x), 3 * (X @ X.T + 1), rtol=1e-5, atol=1e-5)
    bare = _Bare(7, 3)  # Jacobian path: C X X^T
    assert np.allclose(empirical_ntk(bare, x, chunk=5), 3 * (X @ X.T), rtol=1e-5, atol=1e-4)


def test_ntk_alignment_reads_the_kernel_against_reference_labels_and_inputs():
    # a bare linear model's NTK is C X X^T: exactly aligned with the Gram matrix and with itself as reference
    torch.manual_seed(1)
    x = torch.randn(24, 5)
    X = x.double().numpy()
    y = np.arange(24) % 3
    labels, gram = label_kernel(y, 3), X @ X.T
    got = ntk_alignment(_Bare(5, 3), x, 3 * gram, labels, gram)
    assert got["ntk_cka"] == pytest.approx(1.0, abs=1e-6) and got["ntk_input_cka"] == pytest.approx(1.0, abs=1e-6)
    assert got["ntk_kta"] == pytest.approx(kta(gram, y, 3), abs=1e-6)
    other = ntk_alignment(_Bare(5, 3), x, labels, labels, gram)  # the reference is the argument, not the inputs
    assert other["ntk_cka"] == pytest.approx(got["ntk_kta"], abs=1e-9)


def _brute_ntk(model, x):
    """sum_c J_c J_c^T from the full Jacobian of every parameter, example by example."""
    params = [p for p in model.parameters()]
    rows = []
    for xi in x:
        out = model(xi.unsqueeze(0)).squeeze(0)
        rows.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[c], params,
                                                                                       retain_graph=True)])
                                 for c in range(len(out))]))
    J = torch.stack(rows).double()  # (n, C, P)
    return torch.einsum("ncp,mcp->nm", J, J).numpy()


@pytest.mark.parametrize("kind", ["mlp", "cnn", "lcn"])
def test_the_ntk_matches_the_full_jacobian_on_an_mlp_a_cnn_and_an_lcn(kind):
    from probe.models import build_model
    from probe.tasks import make_task

    task = make_task("nlgp", {"n_train": 16, "n_test": 8, "size": 12}, seed=0)
    torch.manual_seed(0)
    opts = {"channels": 3, "kernel": 3, "layers": 2, "stride": 2} if kind != "mlp" else {}
    model = build_model(kind, task, 12, 2, "standard", opts)
    x = task.x_train[:10]
    K = empirical_ntk(model, x, chunk=4)
    assert np.allclose(K, _brute_ntk(model, x), rtol=1e-4, atol=1e-5)
    assert np.allclose(K, K.T) and np.linalg.eigvalsh(K).min() > -1e-6 * np.abs(K).max()  # a Gram matrix


@pytest.mark.parametrize("cfg, opts, match", [
    (dict(task="mqar"), {}, "not an image classification task"),
    ({}, {"ref": "resnet9000"}, "unknown ref model"),
    ({}, {"every": 3}, "every a multiple"),
    ({}, {"examples": 1}, "examples >= 2"),
])
def test_ntk_align_refuses_what_it_cannot_take(tmp_path, cfg, opts, match):
    from probe.config import ConfigError, RunConfig
    from probe.run.procedures import run_procedure

    base = RunConfig(task="mnist1d", model="mlp", steps=4, log_every=2, eval_every=2, checkpoints=2)
    with pytest.raises(ConfigError, match=match):
        run_procedure("ntk_align", base.replace(**cfg), tmp_path / "r", opts)


@pytest.mark.slow
def test_ntk_align_writes_the_alignments_into_the_rows(tmp_path):
    import json

    from probe.config import RunConfig
    from probe.run.procedures import run_procedure
    from probe.run.procedures.ntk_align import ntk_subset

    cfg = RunConfig(task="mnist1d", model="mlp", width=16, steps=20, log_every=10, eval_every=10, checkpoints=2)
    row, res = run_procedure("ntk_align", cfg, tmp_path / "a", {"ref_steps": 10, "examples": 64,
                                                              "ref_opts": {"channels": 2, "layers": 1}})
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all({"ntk_cka", "ntk_kta", "ntk_input_cka"} <= set(r) for r in rows)
    assert all(-1 <= r["ntk_cka"] <= 1 and -1 <= r["ntk_kta"] <= 1 for r in rows)
    assert res["ntk_cka@init"] == rows[0]["ntk_cka"] and res["ntk_kta"] == rows[-1]["ntk_kta"]
    assert res["examples"] == 64 and 0 < res["ref_kta"] < 1 and 0 <= res["ref_test_acc"] <= 1
    # a reference that is the run itself (same model, seed and steps): its kernel aligns with the run's at the end
    row, res = run_procedure("ntk_align", cfg, tmp_path / "self", {"ref": "mlp", "examples": 64})
    assert res["ntk_cka"] == pytest.approx(1.0, abs=1e-6) and res["ntk_kta"] == pytest.approx(res["ref_kta"], abs=1e-6)
    # the subset is fixed: the same examples whatever the run's seed
    from probe.tasks import make_task

    t = make_task("mnist1d", {}, seed=0)
    assert torch.equal(ntk_subset(t, 64), ntk_subset(make_task("mnist1d", {}, seed=5), 64))


class _Twice(nn.Module):
    """One Linear applied twice, and a second Linear tied to the first's weight: neither can be factored per call."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))))


def test_the_ntk_of_reused_and_tied_layers_matches_the_full_jacobian():
    torch.manual_seed(1)
    model, x = _Twice(), torch.randn(9, 6)
    assert np.allclose(empirical_ntk(model, x), _brute_ntk(model, x), rtol=1e-4, atol=1e-5)
