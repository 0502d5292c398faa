"""Spectral measures: per-unit spectra on known fields, per-layer spectra against weightwatcher and scipy."""

import logging
import warnings

import numpy as np
import pytest
import torch

from probe.geometry import Geometry
from probe.metrics import layer_measures
from probe.metrics import spectral
from probe.metrics.spectral import (
    alpha_fit,
    effective_rank,
    eigenvalues,
    frequency_magnitudes,
    gaussian_eigenvalues,
    gaussian_spectral_measures,
    input_pc_share,
    non_dc_spectra,
    peak_frequency,
    spectral_entropy,
    spectral_measures,
    stable_rank,
    unit_spectra,
)

G2 = Geometry(channels=2, spatial=(12, 16), periodic=True)

# -- per-unit spectra --------------------------------------------------------------------------------


def test_unit_spectra_match_numpy_fft_summed_over_channels():
    W = np.random.default_rng(0).standard_normal((3, G2.n_inputs))
    F = W.reshape(3, 2, 12, 16)
    expected = (np.abs(np.fft.fft2(F)) ** 2).sum(axis=1).reshape(3, -1)
    np.testing.assert_allclose(unit_spectra(W, G2, chunk=2), expected, rtol=1e-10)
    # odd and 1-D grids too (the half spectrum of the real transform is mirrored into the full grid)
    for spatial in ((7, 9), (9, 8), (41,), (40,)):
        geo = Geometry(channels=2, spatial=spatial, periodic=True)
        W = np.random.default_rng(1).standard_normal((5, geo.n_inputs))
        F = W.reshape(5, 2, *spatial)
        expected = (np.abs(np.fft.fftn(F, axes=tuple(range(2, F.ndim)))) ** 2).sum(axis=1).reshape(5, -1)
        np.testing.assert_allclose(unit_spectra(W, geo), expected, rtol=1e-10, atol=1e-12 * expected.max())


def test_frequency_magnitudes_are_cycles_per_grid_length():
    f = frequency_magnitudes(G2).reshape(12, 16)
    assert f[0, 0] == 0
    assert f[0, 3] == 3 and f[0, 13] == 3  # bin 13 of 16 is -3 cycles
    assert f[4, 3] == pytest.approx(5.0)


def test_single_pixel_has_flat_spectrum_of_entropy_one():
    W = np.zeros((2, G2.n_inputs))
    W[0, 5], W[1, 200] = 1.0, -3.0
    assert spectral_entropy(W, G2) == pytest.approx(1.0)


def test_sinusoid_has_two_bin_entropy_and_its_peak_frequency():
    g = Geometry(channels=1, spatial=(64,), periodic=True)
    s = np.arange(64)
    W = np.stack([np.sin(2 * np.pi * 5 * s / 64 + p) for p in (0.0, 1.0, 2.0)])
    assert spectral_entropy(W, g) == pytest.approx(np.log(2) / np.log(63))
    assert peak_frequency(W, g) == pytest.approx(5.0)


def test_peak_frequency_ignores_the_mean():
    g = Geometry(channels=1, spatial=(32,), periodic=True)
    W = 10.0 + np.cos(2 * np.pi * 3 * np.arange(32) / 32)[None, :]
    assert peak_frequency(W, g) == pytest.approx(3.0)


def test_localized_fields_have_broader_spectra_than_fourier_fields():
    g = Geometry(channels=1, spatial=(32, 32), periodic=True)
    rng = np.random.default_rng(1)
    local = np.zeros((20, 1, 32, 32))
    local[:, 0, 10:13, 10:13] = rng.standard_normal((20, 3, 3))
    y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    waves = np.stack([np.cos(2 * np.pi * (3 * x + 2 * y) / 32 + p) for p in rng.uniform(0, 6, 20)])
    assert spectral_entropy(local.reshape(20, -1), g) > 0.8 > 0.3 > spectral_entropy(waves.reshape(20, -1), g)


# -- per-layer spectra -------------------------------------------------------------------------------


def test_eigenvalues_are_squared_singular_values_either_orientation():
    rng = np.random.default_rng(2)
    # scipy's solver below TORCH_SOLVER_MIN Gram rows, torch's from there on
    assert 25 < spectral.TORCH_SOLVER_MIN <= 270
    for shape in [(40, 25), (25, 40), (300, 270), (270, 300)]:
        W = rng.standard_normal(shape)
        sv = np.linalg.svd(W, compute_uv=False)
        np.testing.assert_allclose(eigenvalues(W), np.sort(sv**2), rtol=1e-9)


def test_effective_rank_is_rank_for_equal_singular_values_and_one_for_rank_one():
    Q = np.linalg.qr(np.random.default_rng(3).standard_normal((30, 30)))[0]
    assert effective_rank(3.0 * Q[:, :7].T) == pytest.approx(7.0)
    assert effective_rank(np.outer(np.arange(1, 6), np.arange(1, 9))) == pytest.approx(1.0)


def test_stable_rank_is_frobenius_over_spectral_norm_squared():
    W = np.random.default_rng(4).standard_normal((30, 50))
    assert stable_rank(W) == pytest.approx(np.linalg.norm(W) ** 2 / np.linalg.norm(W, 2) ** 2)


def test_alpha_recovers_the_exponent_of_pareto_samples():
    # eigenvalues drawn from p(x) ~ x^-2.5 on [1, inf): the fit recovers 2.5
    u = np.random.default_rng(5).uniform(size=4000)
    evals = np.sort((1 - u) ** (-1 / 1.5))
    assert alpha_fit(None, evals=evals)["alpha"] == pytest.approx(2.5, rel=0.05)


@pytest.fixture(scope="module")
def weightwatcher_details():
    """weightwatcher's analysis of a small nn.Sequential of Linear layers, with the matrices it saw."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import weightwatcher

        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        rng = np.random.default_rng(6)
        mats = [
            rng.standard_t(3, size=(300, 120)),  # heavy-tailed
            rng.standard_normal((200, 100)),
            rng.standard_t(2.5, size=(100, 250)),  # heavy-tailed, wide
        ]
        layers = [torch.nn.Linear(M.shape[1], M.shape[0], bias=False) for M in mats]
        with torch.no_grad():
            for layer, M in zip(layers, mats):
                layer.weight.copy_(torch.tensor(M))
        details = weightwatcher.WeightWatcher(model=torch.nn.Sequential(*layers)).analyze(
            plot=False, randomize=False, mp_fit=False
        )
    return [layer.weight.detach() for layer in layers], details


def test_stable_rank_equals_weightwatcher(weightwatcher_details):
    weights, details = weightwatcher_details
    assert len(details) == len(weights)
    for W, ww_stable_rank in zip(weights, details["stable_rank"]):
        assert stable_rank(W) == pytest.approx(ww_stable_rank, rel=1e-5)


def test_alpha_is_close_to_weightwatcher_power_law_fit(weightwatcher_details):
    weights, details = weightwatcher_details
    for W, ww_alpha, ww_xmin in zip(weights, details["alpha"], details["xmin"]):
        fit = alpha_fit(W)
        assert fit["alpha"] == pytest.approx(ww_alpha, rel=0.10)
        assert fit["xmin"] == pytest.approx(ww_xmin, rel=0.10)


def test_layer_measures_share_one_decomposition_and_match_the_single_measures():
    W = np.random.default_rng(7).standard_t(3, size=(80, 60))
    out = layer_measures(torch.tensor(W))
    assert out == {
        "effective_rank": pytest.approx(effective_rank(W)),
        "stable_rank": pytest.approx(stable_rank(W)),
        "alpha": pytest.approx(alpha_fit(W)["alpha"]),
    }


def test_input_pc_share_matches_sklearn_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(8)
    W = rng.standard_normal((6, 20))
    for B in (500, 12):  # through the covariance and through the smaller Gram matrix
        X = rng.standard_normal((B, 20)) * np.linspace(1, 6, 20) + 3.0
        V = PCA(n_components=4).fit(X).components_.T
        expected = np.linalg.norm(W @ V) ** 2 / np.linalg.norm(W) ** 2
        assert input_pc_share(W, X, k=4) == pytest.approx(expected, rel=1e-8)


def test_input_pc_share_is_one_inside_the_input_span_and_zero_outside():
    rng = np.random.default_rng(10)
    basis = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    X = rng.standard_normal((50, 3)) @ basis[:, :3].T + 1.0  # inputs span 3 directions (plus a mean)
    assert input_pc_share(rng.standard_normal((4, 3)) @ basis[:, :3].T, X, k=3) == pytest.approx(1.0)
    assert input_pc_share(basis[:, 3:].T, X, k=3) == pytest.approx(0.0, abs=1e-12)


def test_input_pc_share_of_random_rows_is_about_k_over_n():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((300, 100)) * np.linspace(1, 5, 100)
    assert input_pc_share(rng.standard_normal((2000, 100)), X, k=10) == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("shape", [(60, 40), (40, 60)])
def test_eigenvalues_on_a_torch_device_match_the_cpu_solver(shape):
    # the GPU path (device=None on a cuda machine) is this code with device="cuda"
    W = np.random.default_rng(0).standard_normal(shape)
    ref = eigenvalues(W, device=None) if not torch.cuda.is_available() else None
    got = eigenvalues(W, device="cpu")
    sv = np.linalg.svd(W, compute_uv=False)
    assert got.shape == (40,) and np.all(np.diff(got) >= 0)
    assert np.allclose(got, np.sort(sv**2), rtol=1e-9, atol=1e-9 * sv.max() ** 2)
    if ref is not None:
        assert np.allclose(got, ref, rtol=1e-9, atol=1e-9 * sv.max() ** 2)


# -- one decomposition per matrix: passed to every measure, never for a permutation or a Gaussian reference -----


@pytest.fixture
def count_decompositions(monkeypatch):
    """A list that grows by one shape per eigendecomposition (the measures' and the analysis's)."""
    from probe.analysis import report

    calls = []
    real = spectral.eigenvalues

    def counted(W, *args, **kwargs):
        calls.append(np.shape(W))
        return real(W, *args, **kwargs)

    monkeypatch.setattr(spectral, "eigenvalues", counted)
    monkeypatch.setattr(report, "eigenvalues", counted)
    return calls


def test_spectral_measures_are_unchanged_by_permutations_and_transposition():
    # the singular values of P W Q are those of W: the permuted reference has W's spectral measures
    rng = np.random.default_rng(11)
    for shape in [(70, 50), (300, 270)]:  # both solvers
        W = rng.standard_t(3, size=shape)
        want = spectral_measures(W)
        P, Q = rng.permutation(shape[0]), rng.permutation(shape[1])
        for M in (W[P], W[:, Q], W[P][:, Q], W.T):
            got = spectral_measures(np.ascontiguousarray(M))
            assert got == {k: pytest.approx(v, rel=1e-9) for k, v in want.items()}


def test_measures_given_the_spectrum_decompose_nothing_and_agree(count_decompositions):
    W = np.random.default_rng(12).standard_t(3, size=(60, 40))
    ev = eigenvalues(W)
    count_decompositions.clear()
    given = layer_measures(W, ev)
    assert count_decompositions == []  # every spectral measure from the eigenvalues passed in
    assert layer_measures(W) == given and count_decompositions == [(60, 40)]  # without them: one decomposition
    assert alpha_fit(W)["alpha"] == alpha_fit(None, evals=ev)["alpha"] == given["alpha"]
    assert effective_rank(torch.tensor(W)) == given["effective_rank"]
    # the construction that would fool a test of agreement alone: another matrix's spectrum is used as given
    other = eigenvalues(np.random.default_rng(13).standard_normal((60, 40)))
    assert layer_measures(W, other)["alpha"] != given["alpha"]


def test_gaussian_spectra_have_the_distribution_of_drawn_matrices(count_decompositions):
    # Dumitriu-Edelman's bidiagonal model against the spectra of 600 drawn 30 x 12 Gaussian matrices: the largest,
    # smallest and median eigenvalue and the effective rank agree in distribution (two-sample Kolmogorov-Smirnov)
    from scipy.stats import ks_2samp

    shape, draws = (30, 12), 600
    rng = np.random.default_rng(20)
    drawn = np.array([np.linalg.eigvalsh(G.T @ G) for G in rng.standard_normal((draws, *shape))])
    model = np.array([gaussian_eigenvalues(shape, seed) for seed in range(draws)])
    assert count_decompositions == []  # no matrix decomposed
    assert model.shape == drawn.shape and (np.diff(model, axis=1) >= 0).all() and (model > 0).all()
    stats = {"top": lambda ev: ev[:, -1], "bottom": lambda ev: ev[:, 0], "median": lambda ev: ev[:, 6],
             "effective_rank": lambda ev: [effective_rank(None, e) for e in ev]}
    for name, stat in stats.items():
        assert ks_2samp(stat(model), stat(drawn)).pvalue > 0.01, name
    # the trace of G^T G is chi^2 with m n degrees of freedom: its mean m n, its variance 2 m n
    trace = model.sum(axis=1)
    assert abs(trace.mean() - 360) < 4 * np.sqrt(720 / draws) and abs(trace.var() / 720 - 1) < 0.2
    # and the construction that would fool a weaker test: the same bidiagonal model with its superdiagonal's degrees
    # of freedom in the wrong order (chi_1 first) keeps the trace's distribution, and is told apart
    def wrong_model():
        d, e = np.sqrt(rng.chisquare(30 - np.arange(12))), np.sqrt(rng.chisquare(np.arange(1, 12)))
        return np.linalg.eigvalsh((np.diag(d) + np.diag(e, 1)).T @ (np.diag(d) + np.diag(e, 1)))

    wrong = np.array([wrong_model() for _ in range(draws)])
    assert abs(wrong.sum(axis=1).mean() - 360) < 4 * np.sqrt(720 / draws)
    assert min(ks_2samp(stat(wrong), stat(drawn)).pvalue for stat in stats.values()) < 1e-6


def test_gaussian_reference_is_seeded_and_of_the_shape_alone(count_decompositions):
    shape, seed = (90, 70), 5
    first = gaussian_spectral_measures(shape, seed)
    assert gaussian_spectral_measures(shape, seed) == first  # the same draw every time
    assert gaussian_spectral_measures(shape[::-1], seed) == first  # (m, n) and (n, m): the same spectrum
    assert gaussian_spectral_measures(shape, seed + 1)["alpha"] != first["alpha"]
    assert len(gaussian_eigenvalues((1, 40), 0)) == 1 and count_decompositions == []


def test_analyze_takes_layer_gaussian_references_from_shape_and_seed(tmp_path, count_decompositions):
    from probe.analysis.report import analyze_checkpoint

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2 * 6 * 6, 30), torch.nn.ReLU(), torch.nn.Linear(30, 30), torch.nn.ReLU(),
                              torch.nn.Linear(30, 30), torch.nn.ReLU(), torch.nn.Linear(30, 4))
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    rep = analyze_checkpoint(tmp_path / "sd.pt", input_shape=(2, 6, 6), seed=3)
    for name in ("2", "4"):  # layers after the first: the seeded Gaussian spectrum of (30, 30)
        assert rep.reference["gaussian"][name] == gaussian_spectral_measures((30, 30), 3)
    assert rep.reference["gaussian"]["0"]["effective_rank"] == gaussian_spectral_measures((30, 72), 3)["effective_rank"]
    # one decomposition per layer and none for a Gaussian reference
    assert sorted(count_decompositions) == sorted([(30, 72), (30, 30), (30, 30), (4, 30)])


def test_stable_rank_of_a_large_matrix_needs_no_spectrum(count_decompositions):
    W = np.random.default_rng(13).standard_t(4, size=(400, 300))
    assert min(W.shape) > spectral.LANCZOS_MIN
    assert stable_rank(W) == pytest.approx(np.linalg.norm(W) ** 2 / np.linalg.norm(W, 2) ** 2, rel=1e-10)
    assert count_decompositions == []  # Lanczos iterations for the top singular value, not the spectrum
    assert stable_rank(W, eigenvalues(W)) == pytest.approx(stable_rank(W), rel=1e-10)


def test_float32_rank_one_layer_keeps_effective_rank_one():
    # the spectrum stays in float64 for float32 weights: a float32 Gram matrix would turn the 299 zero eigenvalues
    # into noise of about eps_32 lambda_max and the effective rank into 1.12
    rng = np.random.default_rng(14)
    W = torch.tensor(np.outer(rng.standard_normal(300), rng.standard_normal(300)), dtype=torch.float32)
    assert layer_measures(W)["effective_rank"] == pytest.approx(1.0, abs=1e-3)


def test_first_layer_measures_compute_the_unit_spectra_once(monkeypatch):
    from probe.metrics import first_layer_measures

    W = np.random.default_rng(19).standard_normal((20, G2.n_inputs))
    want = {"spectral_entropy": spectral_entropy(W, G2), "peak_frequency": peak_frequency(W, G2)}
    calls = []
    real = spectral.unit_spectra
    monkeypatch.setattr(spectral, "unit_spectra", lambda W, g, *a: calls.append(1) or real(W, g, *a))
    got = first_layer_measures(W, G2, ["spectral_entropy", "peak_frequency"])
    assert got == {k: pytest.approx(v, rel=1e-12) for k, v in want.items()} and len(calls) == 1
    first_layer_measures(W, G2, ["spectral_entropy"])  # one of them alone: computed once, for it
    assert len(calls) == 2
    # spectra passed in are the ones read: another matrix's give its values
    V = np.random.default_rng(20).standard_t(2, size=W.shape)
    P = non_dc_spectra(V, G2)
    assert spectral_entropy(W, G2, spectra=P) == spectral_entropy(V, G2)
    assert spectral_entropy(V, G2) != pytest.approx(want["spectral_entropy"], rel=1e-9)
