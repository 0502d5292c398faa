"""Spectra of weights (docs/design.md §4.6).

Per unit (first layer, needs a geometry): the power spectrum of each receptive field over the grid,
its entropy and peak frequency. Localized fields have broad spectra; Fourier-like fields one peak.

Per layer (any weight matrix W, m x n): effective rank, stable rank and the power-law exponent alpha of
the eigenvalues of W^T W, computed with weightwatcher's conventions (``stable_rank`` and ``alpha`` are
the columns of ``weightwatcher.WeightWatcher.analyze`` for the same matrix), and the share of ||W||^2
in the top principal components of the inputs.
"""

from __future__ import annotations

import numpy as np
import torch

# scipy.fft, scipy.linalg and scipy.sparse.linalg are imported where they are used: together ~0.3 CPU-s, which
# every `probe train` would pay through the registry's import of this module though its steps use none

from probe.geometry import Geometry
from probe.seeding import GAUSSIAN_SPECTRUM_STREAM
from probe.metrics.locality import as_matrix, unit_fields
from probe.threads import limit_threads

# -- per-unit spectra --------------------------------------------------------------------------------


def unit_spectra(W, geometry: Geometry, chunk: int = 1024) -> np.ndarray:
    """Power spectrum P_i(f) = sum_c |FFT_S(F[i, c])(f)|^2 of every field, shape (m, |S|).

    Frequencies are in ``numpy.fft`` order over the grid, flattened (index 0 is DC). The grid is
    treated as periodic whatever the geometry says (no window is applied). Computed in chunks of units
    to bound memory, with the real-input transform (``rfftn``: half the work): the fields are real, so
    P(f) = P(-f) and the bins it leaves out are mirror images of bins it has (:func:`_mirror_index`).
    """
    import scipy.fft

    F = unit_fields(W, geometry)
    axes = tuple(range(2, F.ndim))
    out = np.empty((len(F), geometry.n_positions))
    mirror = _mirror_index(geometry.spatial)
    for i in range(0, len(F), chunk):
        Z = scipy.fft.rfftn(F[i : i + chunk], axes=axes, workers=-1)
        out[i : i + chunk] = (Z.real**2 + Z.imag**2).sum(axis=1).reshape(len(Z), -1)[:, mirror]
    return out


def _mirror_index(spatial: tuple) -> np.ndarray:
    """For every bin f of the full grid spectrum (``numpy.fft`` order, flattened), the index of the bin of the
    flattened ``rfftn`` spectrum that holds f or its mirror -f (the last axis keeps frequencies 0 .. L // 2)."""
    full = np.meshgrid(*[np.arange(L) for L in spatial], indexing="ij")
    half = spatial[:-1] + (spatial[-1] // 2 + 1,)
    last = full[-1]
    flip = last > spatial[-1] // 2  # stored as its mirror: every coordinate negated
    coords = [np.where(flip, (-k) % L, k) for k, L in zip(full, spatial)]
    return np.ravel_multi_index(coords, half).ravel()


def frequency_magnitudes(geometry: Geometry) -> np.ndarray:
    """|f| in cycles per grid length for every bin of :func:`unit_spectra`, shape (|S|,).

    Per axis the frequency is the FFT index folded to [-L/2, L/2) (cycles per length of that axis);
    on a 2-D grid |f| is the euclidean norm of the two.
    """
    grids = np.meshgrid(*[np.fft.fftfreq(L) * L for L in geometry.spatial], indexing="ij")
    return np.sqrt(sum(g**2 for g in grids)).ravel()


def non_dc_spectra(W, geometry: Geometry) -> np.ndarray:
    """Spectra without the DC bin, for the units that have power there, shape (m_live, |S| - 1): what
    :func:`spectral_entropy` and :func:`peak_frequency` read (computed once and passed to both by
    :func:`probe.metrics.first_layer_measures`).

    DC is removed because it is the field's mean, not its structure: a localized blob and its
    sign-alternating version would otherwise differ by a single bin that dominates the entropy.
    """
    P = unit_spectra(W, geometry)[:, 1:]
    return P[P.sum(axis=1) > 0]


def spectral_entropy(W, geometry: Geometry, spectra: np.ndarray | None = None) -> float:
    """spectral_entropy = mean_i H(q_i) / log(|S| - 1), q_i(f) = P_i(f) / sum_{f != 0} P_i(f), DC excluded.

    1 for a flat spectrum (a single pixel); log(2) / log(|S| - 1) for a pure sinusoid (power at +f and
    -f); for white noise about 1 - (psi(C + 1) - log C) / log(|S| - 1) (psi the digamma function: 0.94
    for C = 1 and 0.98 for C = 3 on a 32 x 32 grid). Units without non-DC power (zero or constant fields) are left out.
    nan when |S| < 3. ``spectra``: :func:`non_dc_spectra` of W, when already computed.
    """
    if geometry.n_positions < 3:
        return float("nan")
    P = non_dc_spectra(W, geometry) if spectra is None else spectra
    if not len(P):
        return float("nan")
    q = P / P.sum(axis=1, keepdims=True)
    h = -(q * np.log(np.where(q > 0, q, 1.0))).sum(axis=1)
    return float(h.mean() / np.log(geometry.n_positions - 1))


def peak_frequency(W, geometry: Geometry, spectra: np.ndarray | None = None) -> float:
    """peak_frequency = mean_i |argmax_{f != 0} P_i(f)|, in cycles per grid length (DC excluded).

    Ties go to the first bin in FFT order (so a flat spectrum reports the lowest frequency, 1). ``spectra``:
    :func:`non_dc_spectra` of W, when already computed.
    """
    if geometry.n_positions < 2:
        return float("nan")
    P = non_dc_spectra(W, geometry) if spectra is None else spectra
    if not len(P):
        return float("nan")
    return float(frequency_magnitudes(geometry)[1:][P.argmax(axis=1)].mean())


# -- per-layer spectra -------------------------------------------------------------------------------
#
# Every per-layer measure reads the eigenvalues of the smaller Gram matrix, and only them: the caller that needs
# several measures of one matrix computes :func:`eigenvalues` once and passes them as ``evals`` (without them each
# measure decomposes W itself). Their values are invariant under permutations of rows (hidden units) and columns
# (inputs) and under transposition: the singular values of P W Q are those of W for permutation matrices P and Q.
# A permuted reference therefore has the spectral measures of W itself and is never decomposed, and a Gaussian
# reference's spectrum is drawn from its exact distribution without a decomposition (:func:`gaussian_eigenvalues`).

#: below this many Gram rows the solver's fixed costs dominate and scipy's LAPACK is called directly
TORCH_SOLVER_MIN = 256
#: above this many Gram rows, stable_rank alone takes its top singular value from Lanczos iterations
LANCZOS_MIN = 200


def gram(W) -> np.ndarray:
    """The smaller Gram matrix of W: W^T W when m >= n, else W W^T (numpy computes A^T A with syrk: half the
    products)."""
    W = np.asarray(W)
    return W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T


def eigenvalues(W, lapack_threads: int | None = 1, device: str | None = None) -> np.ndarray:
    """The min(m, n) eigenvalues lambda = sigma^2 of W^T W (the squared singular values), ascending.

    Computed from the smaller Gram matrix (W^T W or W W^T) with ``eigvalsh``, both in float64: about 4x faster
    than an SVD at 4096 x 3072, and accurate to about 1e-13 lambda_max, far below any eigenvalue the measures
    weigh. Round-off negatives are clipped to 0. This is the one step of the weight measures that grows
    faster than m n (as min(m, n)^2 max(m, n) for the Gram matrix, min(m, n)^3 for the solver), so it runs on
    the GPU when there is one.

    Not in float32, though it would be faster: on the CPU this was measured on (AMD EPYC, torch 2.13's MKL, one
    thread, 4096 x 4096, idle machine) a float32 Gram matrix and solver took 2.9-3.0 s, float64 ones 5.2-5.4 s. But
    a float32 solver is off by about 30 eps_32 relative on the top eigenvalues at 4096 (eps_32 = 1.2e-7), enough to
    move the power-law fit's xmin where its Kolmogorov-Smirnov distances have near ties, as they do on random
    layers: alpha 35.0 (D = 0.12394) instead of 11.0 (D = 0.12411, weightwatcher's value too) on a 4096 x 4096
    ``nn.Linear`` at its initialization (``torch.manual_seed(0)``). A float32 Gram matrix of float32 weights
    (solved in float64) is off by 0.1 to 20 eps_32 lambda_max depending on the weights (measured on
    random, heavy-tailed and mean-shifted 512 .. 2048 matrices): the zero eigenvalues of a nearly
    rank-deficient layer then come out as noise, and effective_rank with them (1.79 instead of 1.00 for a
    rank-one 4096 x 4096 layer).

    Args:
        lapack_threads: threads for the eigensolver on the CPU (None: leave the library's setting).
            Default 1 because its tridiagonal reduction is half memory-bound and spinning BLAS threads
            collapse when the cores are shared: measured on a busy 2-core machine at 3072 x 3072,
            2.4-3.9 s with one thread against 8.6-12.5 s with two (OpenBLAS), at 4096 x 4096 2.9 s against
            8.3 s (MKL).
        device: ``None``: torch on ``cuda`` when it is available, else the CPU; a torch device name
            (``cuda``, ``cpu``): torch's ``eigvalsh`` there. On the CPU, Gram matrices of at least
            :data:`TORCH_SOLVER_MIN` rows go to torch's ``eigvalsh`` as well (MKL's ``dsyevd`` in the usual
            builds: 3.9 s at 4096 x 4096 against 6.2 s for scipy's ``dsyevr``), smaller ones to scipy.
    """
    W = as_matrix(W)
    if device is None and torch.cuda.is_available():
        device = "cuda"
    if device is not None:
        T = torch.as_tensor(W, dtype=torch.float64, device=device)
        G = T.T @ T if T.shape[0] >= T.shape[1] else T @ T.T
        with limit_threads(lapack_threads if G.device.type == "cpu" else None):
            return np.clip(torch.linalg.eigvalsh(G).cpu().numpy(), 0.0, None)
    with limit_threads(lapack_threads):
        G = gram(W)
    if len(G) >= TORCH_SOLVER_MIN:
        with limit_threads(lapack_threads):
            ev = torch.linalg.eigvalsh(torch.from_numpy(G)).numpy()
    else:
        import scipy.linalg

        with limit_threads(lapack_threads):
            ev = scipy.linalg.eigvalsh(G, check_finite=False)
    return np.clip(ev, 0.0, None)


def effective_rank(W, evals: np.ndarray | None = None) -> float:
    """effective_rank = exp(-sum_k p_k log p_k), p_k = sigma_k / sum_j sigma_j (Roy & Vetterli, 2007).

    Between 1 (rank one) and min(m, n) (all singular values equal). ``evals``: precomputed
    :func:`eigenvalues` of W, to share one decomposition between measures (default: computed here).
    """
    sv = np.sqrt(eigenvalues(W) if evals is None else evals)
    if sv.sum() == 0:
        return float("nan")
    p = sv[sv > 0] / sv.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def stable_rank(W, evals: np.ndarray | None = None) -> float:
    """stable_rank = ||W||_F^2 / ||W||_2^2 = sum_k lambda_k / max_k lambda_k, as weightwatcher computes it.

    Needs only the Frobenius norm and the top singular value: without ``evals`` the latter comes from
    Lanczos iterations in float64 (``scipy.sparse.linalg.svds``, about 2 s at 4096 x 4096 against 4-5 s for
    the whole spectrum) when min(m, n) > :data:`LANCZOS_MIN`, from :func:`eigenvalues` otherwise. With ``evals``
    (W's eigenvalues) the top one is theirs, and ||W||_F^2 is summed from W when W is given
    (``stable_rank(None, evals)``: sum_k lambda_k).
    """
    if evals is not None:
        ev = np.asarray(evals)
        top = ev.max() if ev.size else 0.0
        fro2 = ev.sum() if W is None else _frobenius2(as_matrix(W))
        return float(fro2 / top) if top > 0 else float("nan")
    W = as_matrix(W)
    fro2 = _frobenius2(W)
    if fro2 == 0:
        return float("nan")
    if min(W.shape) <= LANCZOS_MIN:
        return stable_rank(W, eigenvalues(W))
    import scipy.sparse.linalg

    with limit_threads(1):
        top = scipy.sparse.linalg.svds(W, k=1, return_singular_vectors=False, v0=np.ones(min(W.shape)),
                                       solver="arpack")[0]
    return float(fro2 / top**2)


def _frobenius2(W: np.ndarray) -> float:
    """||W||_F^2 in float64 (a dot product of the flattened matrix)."""
    w = W.ravel()
    return float(w @ w)


def spectral_measures(W, evals: np.ndarray | None = None) -> dict[str, float]:
    """``effective_rank``, ``stable_rank`` and ``alpha`` of W from one spectrum (``evals``: W's :func:`eigenvalues`,
    computed here when not given)."""
    W = as_matrix(W)
    ev = eigenvalues(W) if evals is None else evals
    return {"effective_rank": effective_rank(W, ev), "stable_rank": stable_rank(W, ev), "alpha": alpha(W, ev)}


def gaussian_spectral_measures(shape, seed: int = 0) -> dict[str, float]:
    """:func:`spectral_measures` of the Gaussian reference of this shape, from :func:`gaussian_eigenvalues`.

    Unscaled: the three measures are scale-free, so the root-mean-square :func:`probe.metrics.references` and
    ``probe analyze`` scale their Gaussian references by changes nothing; stable_rank's ||G||_F^2 is the sum of the
    eigenvalues. A draw, not a Marchenko-Pastur formula: the measures of a finite matrix scatter around the formula
    (at 4096 x 4096 the top eigenvalue of a draw moves by about 0.3% between seeds, Tracy-Widom, and the power-law
    fit of alpha has no closed form on that spectrum), and a reference must scatter as a layer of that shape would.
    """
    ev = gaussian_eigenvalues(shape, seed)
    return {"effective_rank": effective_rank(None, ev), "stable_rank": stable_rank(None, ev), "alpha": alpha(None, ev)}




def gaussian_eigenvalues(shape, seed: int = 0) -> np.ndarray:
    """The min(m, n) eigenvalues of G^T G, ascending, for an m x n matrix G of i.i.d. N(0, 1) entries, drawn from
    their exact joint distribution without drawing G (Dumitriu & Edelman 2002, "Matrix models for beta ensembles",
    the Laguerre ensemble at beta = 1): with p = max(m, n) and q = min(m, n), Householder bidiagonalization
    turns G into an upper bidiagonal q x q matrix B with independent entries, diagonal chi_p, chi_(p-1), ...,
    chi_(p-q+1) and superdiagonal chi_(q-1), ..., chi_1, and leaves the singular values unchanged, so the
    eigenvalues of the tridiagonal B^T B (LAPACK's ``dsterf``, O(q^2)) are distributed as those of G^T G. 0.16 s at
    4096 x 4096, where decomposing a drawn G takes 4-5 s; tests/test_spectral.py checks the distribution against drawn
    matrices. Seeded by ``numpy.random.default_rng([seed, GAUSSIAN_SPECTRUM_STREAM])``. The spectra of (m, n) and
    (n, m) are the same draw.
    """
    shape, seed = tuple(int(s) for s in shape), int(seed)
    import scipy.linalg

    p, q = max(shape), min(shape)
    rng = np.random.default_rng([seed, GAUSSIAN_SPECTRUM_STREAM])
    d2 = rng.chisquare(p - np.arange(q))  # the squared diagonal of B
    e2 = rng.chisquare(np.arange(q - 1, 0, -1))  # the squared superdiagonal
    diagonal, off = d2 + np.concatenate([[0.0], e2]), np.sqrt(d2[:-1] * e2)  # B^T B
    ev = scipy.linalg.eigvalsh_tridiagonal(diagonal, off, lapack_driver="sterf") if q > 1 else d2
    return np.clip(np.sort(ev), 0.0, None)


def alpha_fit(W, evals: np.ndarray | None = None, rel_thresh: float = 1e-10) -> dict[str, float]:
    """Power-law fit p(lambda) ~ lambda^-alpha of the tail of the eigenvalues of W^T W (Clauset et al. 2009).

    For every candidate xmin among the eigenvalues (all but the largest), the continuous maximum
    likelihood exponent of the n_t eigenvalues >= xmin is alpha = 1 + n_t / sum_{lambda >= xmin}
    log(lambda / xmin); the xmin kept is the one whose fit has the smallest Kolmogorov-Smirnov distance
    D = max |F_fit - F_emp| on the tail, with F_fit(lambda) = 1 - (lambda / xmin)^(1 - alpha) and F_emp
    at the j-th tail eigenvalue = j / n_t. This is weightwatcher's default ``WWFit`` (0.7.x), except
    that eigenvalues below ``rel_thresh`` x lambda_max are dropped (weightwatcher drops those below an
    absolute 1e-5, which depends on the weights' scale) and that small spectra (< 20 eigenvalues) are
    fitted the same way (weightwatcher switches to a bias-corrected variant there).

    Returns:
        ``alpha``, ``xmin``, ``D`` and ``num_pl_spikes`` (the tail size), named as in weightwatcher;
        all nan if fewer than 3 eigenvalues are left.
    """
    ev = eigenvalues(W) if evals is None else np.sort(np.asarray(evals, dtype=np.float64))
    x = ev[ev > rel_thresh * ev.max()] if ev.size and ev.max() > 0 else ev[:0]
    N = len(x)
    if N < 3:
        return {"alpha": float("nan"), "xmin": float("nan"), "D": float("nan"), "num_pl_spikes": float("nan")}
    logx = np.log(x)
    tail_log_sums = np.cumsum(logx[::-1])[::-1]  # sum_{j >= i} log x_j
    best = (np.inf, 0, float("nan"))
    for i in range(N - 1):
        n = N - i
        denom = tail_log_sums[i] - n * logx[i]
        if denom <= 0:
            continue  # all tail values equal: no exponent
        a = 1 + n / denom
        D = np.abs(1 - (x[i:] / x[i]) ** (1 - a) - np.arange(n) / n).max()
        if D < best[0]:
            best = (D, i, a)
    D, i, a = best
    if not np.isfinite(D):
        return {"alpha": float("nan"), "xmin": float("nan"), "D": float("nan"), "num_pl_spikes": float("nan")}
    return {"alpha": float(a), "xmin": float(x[i]), "D": float(D), "num_pl_spikes": float(N - i)}


def alpha(W, evals: np.ndarray | None = None) -> float:
    """The power-law exponent of :func:`alpha_fit` (weightwatcher's ``alpha``)."""
    return alpha_fit(W, evals)["alpha"]


def input_pc_share(W, X, k: int = 10) -> float:
    """input_pc_share = ||W V_k||_F^2 / ||W||_F^2, V_k the top-k principal directions of the inputs X.

    Args:
        W: (m, n) first-layer weights.
        X: (B, n) inputs in the same flat layout; centred here before the principal components are taken.
        k: number of principal components (clipped to min(B, n)).

    1 when every row of W lies in the span of the top-k components, about k / n for random W.
    """
    W, X = as_matrix(W), as_matrix(X)
    if X.shape[1] != W.shape[1]:
        raise ValueError(f"input_pc_share: inputs have {X.shape[1]} features but W has {W.shape[1]} columns")
    X = X - X.mean(axis=0)
    B, n = X.shape
    k = int(min(k, B, n))
    if k < 1:
        raise ValueError(f"input_pc_share: k must be positive, got {k}")
    import scipy.linalg

    with limit_threads(1):  # see probe.threads
        if B >= n:  # top eigenvectors of the n x n covariance
            _, V = scipy.linalg.eigh(X.T @ X, subset_by_index=[n - k, n - 1])
        else:  # through the smaller B x B Gram matrix: V = X^T u / sigma
            lam, Uk = scipy.linalg.eigh(X @ X.T, subset_by_index=[B - k, B - 1])
            keep = lam > 1e-12 * max(lam.max(), np.finfo(float).tiny)
            V = X.T @ Uk[:, keep] / np.sqrt(lam[keep])
    total = (W**2).sum()
    return float(((W @ V) ** 2).sum() / total) if total > 0 else float("nan")
