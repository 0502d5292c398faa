"""Spectra of weights (docs/design.md §4.6).

Per unit (first layer, needs a geometry): the power spectrum of each receptive field over the grid,
its entropy and peak frequency. Localized fields have broad spectra; Fourier-like fields one peak.

Per layer (any weight matrix W, m x n): effective rank, stable rank and the power-law exponent alpha of
the eigenvalues of W^T W, computed with weightwatcher's conventions (``stable_rank`` and ``alpha`` are
the columns of ``weightwatcher.WeightWatcher.analyze`` for the same matrix), and the share of ||W||^2
in the top principal components of the inputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

# scipy.fft, scipy.linalg and scipy.sparse.linalg are imported where they are used: together ~0.3 CPU-s, which
# every `probe train` would pay through the registry's import of this module though its steps use none (issue 17)

from probe.geometry import Geometry
from probe.metrics.locality import as_matrix, blas_threads, unit_fields

# -- per-unit spectra --------------------------------------------------------------------------------


def unit_spectra(W, geometry: Geometry, chunk: int = 1024) -> np.ndarray:
    """Power spectrum P_i(f) = sum_c |FFT_S(F[i, c])(f)|^2 of every field, shape (m, |S|).

    Frequencies are in ``numpy.fft`` order over the grid, flattened (index 0 is DC). The grid is
    treated as periodic whatever the geometry says (no window is applied). Computed in chunks of units
    to bound memory.
    """
    import scipy.fft

    F = unit_fields(W, geometry)
    axes = tuple(range(2, F.ndim))
    out = np.empty((len(F), geometry.n_positions))
    for i in range(0, len(F), chunk):
        Z = scipy.fft.fftn(F[i : i + chunk], axes=axes, workers=-1)
        out[i : i + chunk] = (Z.real**2 + Z.imag**2).sum(axis=1).reshape(len(Z), -1)
    return out


def frequency_magnitudes(geometry: Geometry) -> np.ndarray:
    """|f| in cycles per grid length for every bin of :func:`unit_spectra`, shape (|S|,).

    Per axis the frequency is the FFT index folded to [-L/2, L/2) (cycles per length of that axis);
    on a 2-D grid |f| is the euclidean norm of the two.
    """
    grids = np.meshgrid(*[np.fft.fftfreq(L) * L for L in geometry.spatial], indexing="ij")
    return np.sqrt(sum(g**2 for g in grids)).ravel()


def _non_dc(W, geometry: Geometry) -> np.ndarray:
    """Spectra without the DC bin, for the units that have power there, shape (m_live, |S| - 1).

    DC is removed because it is the field's mean, not its structure: a localized blob and its
    sign-alternating version would otherwise differ by a single bin that dominates the entropy.
    """
    P = unit_spectra(W, geometry)[:, 1:]
    return P[P.sum(axis=1) > 0]


def spectral_entropy(W, geometry: Geometry) -> float:
    """spectral_entropy = mean_i H(q_i) / log(|S| - 1), q_i(f) = P_i(f) / sum_{f != 0} P_i(f), DC excluded.

    1 for a flat spectrum (a single pixel); log(2) / log(|S| - 1) for a pure sinusoid (power at +f and
    -f); for white noise about 1 - (psi(C + 1) - log C) / log(|S| - 1) (psi the digamma function: 0.94
    for C = 1 and 0.98 for C = 3 on a 32 x 32 grid). Units without non-DC power (zero or constant fields) are left out.
    nan when |S| < 3.
    """
    if geometry.n_positions < 3:
        return float("nan")
    P = _non_dc(W, geometry)
    if not len(P):
        return float("nan")
    q = P / P.sum(axis=1, keepdims=True)
    h = -(q * np.log(np.where(q > 0, q, 1.0))).sum(axis=1)
    return float(h.mean() / np.log(geometry.n_positions - 1))


def peak_frequency(W, geometry: Geometry) -> float:
    """peak_frequency = mean_i |argmax_{f != 0} P_i(f)|, in cycles per grid length (DC excluded).

    Ties go to the first bin in FFT order (so a flat spectrum reports the lowest frequency, 1).
    """
    if geometry.n_positions < 2:
        return float("nan")
    P = _non_dc(W, geometry)
    if not len(P):
        return float("nan")
    return float(frequency_magnitudes(geometry)[1:][P.argmax(axis=1)].mean())


# -- per-layer spectra -------------------------------------------------------------------------------
#
# Every per-layer measure reads the eigenvalues of the smaller Gram matrix, and only them: one
# decomposition per matrix (:func:`spectrum`), shared by every measure and memoized by content, so that
# a matrix met again (a run's step-0 weights as a checkpoint and as every step's init reference, tracking's
# references at the last step, a Gaussian reference shared by layers of one shape) is never decomposed
# twice. Their values are invariant under permutations of rows (hidden units) and columns (inputs) and
# under transposition: the singular values of P W Q are those of W for permutation matrices P and Q. A
# permuted reference therefore has the spectral measures of W itself and is never decomposed (and a
# Gaussian reference depends only on the shape and the seed: :func:`gaussian_spectral_measures`, decomposed once
# per machine and kept on disk by :func:`gaussian_eigenvalues`). Inside :func:`background_spectra` the
# decompositions run on both cores while the caller computes the other measures.

#: below this many Gram rows the solver's fixed costs dominate and scipy's LAPACK is called directly
TORCH_SOLVER_MIN = 256
#: above this many Gram rows, stable_rank alone takes its top singular value from Lanczos iterations
LANCZOS_MIN = 200
_SPECTRA: OrderedDict = OrderedDict()  # content key -> eigenvalues, most recent last
SPECTRA_CACHED = 256  # matrices whose spectra are kept (an array of min(m, n) floats each: 6 MB at 3072)
_GAUSSIAN: dict = {}  # (shape, seed) -> eigenvalues of the Gaussian reference
_PENDING: dict = {}  # content key or ("gaussian", shape, seed) -> Future of a spectrum computed in the background
_LOCK = threading.RLock()  # guards the three dicts above (background threads write them)
_POOL: ThreadPoolExecutor | None = None  # set inside background_spectra()
#: the version of the on-disk Gaussian spectra (bump when what is stored changes)
GAUSSIAN_CACHE_VERSION = 1


@contextmanager
def torch_threads(n: int | None):
    """Limit torch's intra-op threads (MKL's LAPACK included) inside the block; no-op when n is None."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def gram(W) -> np.ndarray:
    """The smaller Gram matrix of W: W^T W when m >= n, else W W^T (numpy computes A^T A with syrk: half the products)."""
    W = np.asarray(W)
    return W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T


def eigenvalues(W, lapack_threads: int | None = 1, device: str | None = None) -> np.ndarray:
    """The min(m, n) eigenvalues lambda = sigma^2 of W^T W (the squared singular values), ascending.

    Computed from the smaller Gram matrix (W^T W or W W^T) with ``eigvalsh``, both in float64: about 4x faster
    than an SVD at 4096 x 3072, and accurate to about 1e-13 lambda_max, far below any eigenvalue the measures
    weigh. Round-off negatives are clipped to 0. This is the one step of the weight measures that grows
    faster than m n (as min(m, n)^2 max(m, n) for the Gram matrix, min(m, n)^3 for the solver), so it runs on
    the GPU when there is one. The measures read it through :func:`spectrum`, which memoizes it.

    Not in float32, although that would halve both steps on the CPU. A float32 solver is off by about
    30 eps_32 relative on the top eigenvalues at 4096 (eps_32 = 1.2e-7), enough to move the power-law fit's
    xmin where its Kolmogorov-Smirnov distances have near ties, as they do on random layers: alpha 35.0
    (D = 0.12394) instead of 11.0 (D = 0.12411, weightwatcher's value too) on a 4096 x 4096 ``nn.Linear`` at
    its initialization (``torch.manual_seed(0)``). A float32 Gram matrix of float32
    weights (solved in float64) is off by 0.1 to 20 eps_32 lambda_max depending on the weights (measured on
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
        with torch_threads(lapack_threads if G.device.type == "cpu" else None):
            return np.clip(torch.linalg.eigvalsh(G).cpu().numpy(), 0.0, None)
    with blas_threads(lapack_threads):
        G = gram(W)
    if len(G) >= TORCH_SOLVER_MIN:
        with torch_threads(lapack_threads):
            ev = torch.linalg.eigvalsh(torch.from_numpy(G)).numpy()
    else:
        import scipy.linalg

        with blas_threads(lapack_threads):
            ev = scipy.linalg.eigvalsh(G, check_finite=False)
    return np.clip(ev, 0.0, None)


def _content_key(W: np.ndarray) -> tuple:
    """(shape, dtype, digest of the bytes): equal keys mean equal matrices."""
    W = np.ascontiguousarray(W)
    return W.shape, W.dtype.str, hashlib.sha1(W.reshape(-1).view(np.uint8)).hexdigest()


def spectrum(W, device: str | None = None) -> np.ndarray:
    """:func:`eigenvalues` of W, memoized by W's content.

    The last :data:`SPECTRA_CACHED` spectra are kept, keyed by a digest of W's bytes (about 0.1 s for a
    4096 x 4096 matrix, against 5-6 s for the decomposition it saves). A spectrum that :func:`prefetch` started in
    the background is waited for, not computed again. The returned array is read-only: it is the cached one.
    """
    W = as_matrix(W)
    key = _content_key(W)
    with _LOCK:
        ev = _SPECTRA.get(key)
        pending = _PENDING.get(key)
        if ev is not None:
            _SPECTRA.move_to_end(key)
            return ev
    if pending is not None:
        return pending.result()
    return _remember(key, eigenvalues(W, device=device))


def _remember(key: tuple, ev: np.ndarray) -> np.ndarray:
    """Keep ``ev`` as the spectrum of the matrix of content ``key`` (read-only); return the kept array."""
    ev.setflags(write=False)
    with _LOCK:
        _SPECTRA[key] = ev
        _SPECTRA.move_to_end(key)
        while len(_SPECTRA) > SPECTRA_CACHED:
            _SPECTRA.popitem(last=False)
    return ev


def _cached_spectrum(W: np.ndarray) -> np.ndarray | None:
    """The memoized spectrum of W if there is one (no decomposition; one started in the background is waited for)."""
    key = _content_key(W)
    with _LOCK:
        ev, pending = _SPECTRA.get(key), _PENDING.get(key)
    return pending.result() if ev is None and pending is not None else ev


def clear_spectra() -> None:
    """Forget the memoized spectra (:func:`spectrum`) and Gaussian references (:func:`gaussian_eigenvalues`) of this
    process; the Gaussian spectra kept on disk stay (delete :func:`gaussian_cache_dir` to forget them)."""
    with _LOCK:
        _SPECTRA.clear()
        _GAUSSIAN.clear()


# -- both cores: spectra in background threads ------------------------------------------------------------------
#
# The decompositions of different matrices are independent, and LAPACK and BLAS release the GIL, so on a machine
# with two cores the spectra of a checkpoint's layers (and of their Gaussian references) run on worker threads
# while the calling thread computes the other measures, and waits only where it needs a spectrum not yet done.
# Every thread runs its BLAS and LAPACK single-threaded inside the block: a 4096 x 4096 eigvalsh scales badly on
# two threads (MKL: 3.5 s on one thread, 2.9 s on two), two on one thread each take 4.6 s together (7.0 s one after
# the other), and OpenBLAS's spinning threads collapse when more threads than cores want them.


def spectra_workers() -> int:
    """Worker threads for :func:`background_spectra`: the cores this process may use, at most 2 (0 on one core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else 2


@contextmanager
def background_spectra(workers: int | None = None):
    """Inside the block, :func:`prefetch` and :func:`prefetch_gaussian` start spectra on ``workers`` threads
    (default :func:`spectra_workers`; 0: they do nothing and every spectrum is computed where it is needed). BLAS
    and torch run single-threaded in the block (restored after it); the block ends when every spectrum started in
    it is done. The values are those computed without it: the same solver on the same matrices. Not nested: an
    inner block runs as a plain block inside the outer one. On a GPU (torch sees CUDA) nothing runs in the
    background: the device is faster than the threads would be."""
    global _POOL
    if workers is None:
        workers = spectra_workers()
    if _POOL is not None or workers < 1 or torch.cuda.is_available():
        yield
        return
    old_torch, pool = torch.get_num_threads(), None
    with blas_threads(1):
        try:  # the threads are restored whatever fails, the pool's start included
            torch.set_num_threads(1)
            pool = ThreadPoolExecutor(workers, thread_name_prefix="spectra", initializer=torch.set_num_threads,
                                      initargs=(1,))
            _POOL = pool
            yield
        finally:
            _POOL = None
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(old_torch)


def _submit(key, compute) -> None:
    """Run ``compute()`` (which keeps its result) on the background pool unless it is kept or under way."""
    with _LOCK:
        pool = _POOL
        if pool is None or key in _PENDING or key in _SPECTRA or (key[0] == "gaussian" and key[1:] in _GAUSSIAN):
            return
        future: Future = pool.submit(compute)
        _PENDING[key] = future

    def done(_):
        with _LOCK:
            if _PENDING.get(key) is future:
                del _PENDING[key]

    future.add_done_callback(done)


def prefetch(*matrices) -> None:
    """Start the spectra of these matrices in the background (inside :func:`background_spectra`; else a no-op).
    :func:`spectrum` then waits for them instead of computing them."""
    if _POOL is None:
        return
    for W in matrices:
        W = as_matrix(W)
        if not W.size or not np.isfinite(W).all():
            continue  # left to the measures, which refuse it with their own message
        key = _content_key(W)
        _submit(key, lambda W=W, key=key: _remember(key, eigenvalues(W)))


def prefetch_gaussian(shape, seed: int = 0) -> None:
    """Start :func:`gaussian_eigenvalues` (shape, seed) in the background (inside :func:`background_spectra`)."""
    shape, seed = tuple(int(s) for s in shape), int(seed)
    if _POOL is not None and not _gaussian_on_disk(shape, seed):
        _submit(("gaussian", shape, seed), lambda: _compute_gaussian(shape, seed))


def effective_rank(W, evals: np.ndarray | None = None) -> float:
    """effective_rank = exp(-sum_k p_k log p_k), p_k = sigma_k / sum_j sigma_j (Roy & Vetterli, 2007).

    Between 1 (rank one) and min(m, n) (all singular values equal). ``evals``: precomputed
    :func:`eigenvalues` of W, to share one decomposition between measures (default: :func:`spectrum`).
    """
    sv = np.sqrt(spectrum(W) if evals is None else evals)
    if sv.sum() == 0:
        return float("nan")
    p = sv[sv > 0] / sv.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def stable_rank(W, evals: np.ndarray | None = None) -> float:
    """stable_rank = ||W||_F^2 / ||W||_2^2 = sum_k lambda_k / max_k lambda_k, as weightwatcher computes it.

    Needs only the Frobenius norm and the top singular value: without ``evals`` the latter comes from
    Lanczos iterations in float64 (``scipy.sparse.linalg.svds``, about 2 s at 4096 x 4096 against 4-5 s for
    the whole spectrum) when min(m, n) > :data:`LANCZOS_MIN`, from the memoized :func:`spectrum` otherwise or
    when it is already there. With ``evals`` (W's eigenvalues) the top one is theirs, and ||W||_F^2 is summed
    from W when W is given (``stable_rank(None, evals)``: sum_k lambda_k).
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
    cached = _cached_spectrum(W) if min(W.shape) > LANCZOS_MIN else None
    if min(W.shape) <= LANCZOS_MIN or cached is not None:
        return stable_rank(W, spectrum(W) if cached is None else cached)
    import scipy.sparse.linalg

    with blas_threads(1):
        top = scipy.sparse.linalg.svds(W, k=1, return_singular_vectors=False, v0=np.ones(min(W.shape)),
                                       solver="arpack")[0]
    return float(fro2 / top**2)


def _frobenius2(W: np.ndarray) -> float:
    """||W||_F^2 in float64 (a dot product of the flattened matrix)."""
    w = W.ravel()
    return float(w @ w)


def spectral_measures(W, evals: np.ndarray | None = None) -> dict[str, float]:
    """``effective_rank``, ``stable_rank`` and ``alpha`` of W from one spectrum (:func:`spectrum`, memoized)."""
    W = as_matrix(W)
    ev = spectrum(W) if evals is None else evals
    return {"effective_rank": effective_rank(W, ev), "stable_rank": stable_rank(W, ev), "alpha": alpha(W, ev)}


def gaussian_spectral_measures(shape, seed: int = 0) -> dict[str, float]:
    """:func:`spectral_measures` of the Gaussian reference of this shape, from :func:`gaussian_eigenvalues`.

    The reference is the first draw of ``numpy.random.default_rng(seed).standard_normal(shape)``, the matrix
    :func:`probe.metrics.references` and ``probe analyze`` draw (unscaled: the three measures are scale-free,
    so the root-mean-square they scale it by changes nothing); stable_rank's ||G||_F^2 is the sum of the eigenvalues.
    Not a Marchenko-Pastur formula: at 4096 x 4096 the top eigenvalue of a draw moves by about 0.3% between seeds
    (Tracy-Widom), which shows in the fourth digit of stable_rank, and the power-law fit of alpha has no closed form
    on that spectrum, so a formula would change the reported references beyond numerical noise.
    """
    ev = gaussian_eigenvalues(shape, seed)
    return {"effective_rank": effective_rank(None, ev), "stable_rank": stable_rank(None, ev), "alpha": alpha(None, ev)}


def gaussian_eigenvalues(shape, seed: int = 0) -> np.ndarray:
    """The :func:`eigenvalues` of ``numpy.random.default_rng(seed).standard_normal(shape)``, computed once per
    (shape, seed) and kept: in this process, and on disk under :func:`gaussian_cache_dir` for every later process
    (each analyze, ``--all-steps``, sweep and tracked run of that shape). A 4096 x 4096 reference costs 4-5 s to
    decompose and 32 KB to keep.

    The file is keyed by shape, seed, NumPy's major.minor version (the generator's stream may change between
    NumPy releases) and :data:`GAUSSIAN_CACHE_VERSION`, written atomically (a temporary file renamed into place),
    and read back only when it holds min(shape) finite, non-negative, ascending float64 values; anything else (a
    truncated or foreign file) is recomputed and rewritten. The cache is safe to delete at any time.
    """
    shape, seed = tuple(int(s) for s in shape), int(seed)
    key = ("gaussian", shape, seed)
    with _LOCK:
        ev, pending = _GAUSSIAN.get((shape, seed)), _PENDING.get(key)
    if ev is not None:
        return ev
    if pending is not None:
        return pending.result()
    return _compute_gaussian(shape, seed)


def _compute_gaussian(shape: tuple, seed: int) -> np.ndarray:
    """:func:`gaussian_eigenvalues` from disk or decomposed (and written there), kept in this process."""
    ev = _read_gaussian(shape, seed)
    if ev is None:
        G = np.random.default_rng(seed).standard_normal(shape)
        ev = _remember(_content_key(G), eigenvalues(G))  # the drawn matrix, if met again, is not decomposed again
        _write_gaussian(shape, seed, ev)
    ev.setflags(write=False)
    with _LOCK:
        _GAUSSIAN[(shape, seed)] = ev
    return ev


def gaussian_cache_dir() -> Path | None:
    """Where the Gaussian spectra are kept: ``$PROBE_CACHE_DIR/gaussian_spectra`` when that is set (set it empty to
    keep nothing on disk), else ``$XDG_CACHE_HOME/probe/gaussian_spectra`` (default ``~/.cache/probe/...``)."""
    root = os.environ.get("PROBE_CACHE_DIR")
    if root is None:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "probe")
    return Path(root) / "gaussian_spectra" if root else None


def _gaussian_path(shape: tuple, seed: int) -> Path | None:
    folder = gaussian_cache_dir()
    numpy_version = ".".join(np.__version__.split(".")[:2])
    name = f"{'x'.join(map(str, shape))}-seed{seed}-numpy{numpy_version}-v{GAUSSIAN_CACHE_VERSION}.npy"
    return folder / name if folder is not None else None


def _gaussian_on_disk(shape: tuple, seed: int) -> bool:
    path = _gaussian_path(shape, seed)
    return path is not None and path.is_file()


def _read_gaussian(shape: tuple, seed: int) -> np.ndarray | None:
    """The kept spectrum, or None when there is none or it is not a valid one."""
    path = _gaussian_path(shape, seed)
    if path is None:
        return None
    try:
        ev = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    ok = (isinstance(ev, np.ndarray) and ev.dtype == np.float64 and ev.shape == (min(shape),)
          and bool(np.isfinite(ev).all()) and bool((ev >= 0).all()) and bool((np.diff(ev) >= 0).all()))
    return np.array(ev) if ok else None


def _write_gaussian(shape: tuple, seed: int, ev: np.ndarray) -> None:
    """Keep the spectrum on disk, atomically; a cache that cannot be written (read-only, full) is skipped."""
    path = _gaussian_path(shape, seed)
    if path is None:
        return
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
            tmp = f.name
            np.save(f, np.ascontiguousarray(ev, dtype=np.float64))
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


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
    ev = spectrum(W) if evals is None else np.sort(np.asarray(evals, dtype=np.float64))
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

    with blas_threads(1):  # see blas_threads
        if B >= n:  # top eigenvectors of the n x n covariance
            _, V = scipy.linalg.eigh(X.T @ X, subset_by_index=[n - k, n - 1])
        else:  # through the smaller B x B Gram matrix: V = X^T u / sigma
            lam, Uk = scipy.linalg.eigh(X @ X.T, subset_by_index=[B - k, B - 1])
            keep = lam > 1e-12 * max(lam.max(), np.finfo(float).tiny)
            V = X.T @ Uk[:, keep] / np.sqrt(lam[keep])
    total = (W**2).sum()
    return float(((W @ V) ** 2).sum() / total) if total > 0 else float("nan")
