"""Translation structure of first-layer weights (docs/design.md §4.5).

Hidden units have no order, so structure is only defined up to a permutation of units: every measure
here is a function of the *set* of rows. Notation (docs/design.md §4.2): W is m x n with rows w_i, fields
F = geometry.fields(W) of shape (m, C, *S), in the original (unshuffled) position order.

- :func:`shift_match`: is the set of rows closed under a one-pixel shift (equivariance)?
- :func:`conv_distance`: how far is W from a layer a convolution with kernel k could produce (locality
  plus weight sharing)?
- :func:`circular_conv_matrix`: the dense matrix of a circular convolution, on which both are exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from probe.geometry import Geometry
from probe.metrics.locality import (
    as_matrix,
    blas_threads,
    energy_maps,
    unit_fields,
    window_sizes,
    window_sums,
)

# -- constructions and layout helpers ----------------------------------------------------------------


def circular_conv_matrix(kernel, spatial) -> np.ndarray:
    """The dense matrix of a stride-1 circular convolution over a 1-D or 2-D grid.

    Args:
        kernel: (C_out, C_in, k) or (C_out, C_in, k0, k1) array, in PyTorch's cross-correlation
            convention.
        spatial: the grid S, ``(L,)`` or ``(H, W)``.

    Returns:
        W of shape (C_out |S|, C_in |S|) in channels-first layout (row o |S| + s, column c |S| + s'), with
        (W x)[o, s] = sum_{c, a} kernel[o, c, a] x[c, (s + a - k // 2) mod S]. For odd k this is
        ``torch.nn.functional.conv1d/conv2d`` on the input padded circularly by k // 2.
    """
    K = np.asarray(kernel, dtype=np.float64)
    spatial = tuple(int(s) for s in spatial)
    nd = len(spatial)
    if K.ndim != 2 + nd:
        raise ValueError(f"kernel of shape {K.shape} does not fit a {nd}-D grid {spatial}")
    Co, Ci, *ks = K.shape
    W = np.zeros((Co, *spatial, Ci, *spatial))
    out_pos = np.indices(spatial).reshape(nd, -1)  # every output position s, as per-axis coordinates
    for a in np.ndindex(*ks):
        # input position read by offset a from every output position, per axis
        in_pos = [(out_pos[d] + a[d] - ks[d] // 2) % spatial[d] for d in range(nd)]
        # advanced indices on both grids move to the front: the target has shape (|S|, Co, Ci)
        W[(slice(None), *out_pos, slice(None), *in_pos)] += K[(slice(None), slice(None), *a)]
    P = int(np.prod(spatial))
    return W.reshape(Co * P, Ci * P)


def flat_from_fields(F: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse of ``geometry.fields`` including the permutation: (m, C, *S) -> (m, n) as the model sees it.

    ``geometry.fields`` puts position s of the seen vector at perm[s]; here seen[:, c, s] =
    F[:, c, perm[s]].
    """
    F = np.asarray(F)
    m = F.shape[0]
    F = F.reshape(m, geometry.channels, geometry.n_positions)
    if geometry.perm is not None:
        F = F[:, :, np.asarray(geometry.perm)]
    return geometry.flatten_fields(F)


def content_keys(V: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded pseudo-random uint64 key per row, computed from the row's bytes alone.

    Sorting by it gives a random-looking order that does not depend on where a row sits in V, so
    subsamples and tie-breaks chosen with it leave measures unchanged when hidden units are permuted.
    Identical rows get identical keys (and are interchangeable anyway).
    """
    V = np.ascontiguousarray(V, dtype=np.float64)
    salt = int(seed).to_bytes(8, "little", signed=True)
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest() for row in V)
    return np.frombuffer(digests, dtype=np.uint64)


def _unit_rows(V: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    return np.divide(V, norms, out=np.zeros_like(V), where=norms > 0)


# -- shift_match -------------------------------------------------------------------------------------


def shift_match(W, geometry: Geometry, max_units: int = 1024, seed: int = 0) -> dict[str, float]:
    """Mean cosine of the best one-to-one matching between shifted rows T w_i and rows w_j.

    shift_match = mean over grid axes a of max_pi mean_{i in U} cos(T_a w_i, w_pi(i)), where T_a shifts a
    field by one pixel along axis a, circularly even on non-periodic grids (so the measure is defined
    the same way on every grid; a zero-padded convolution then loses only its border units), and pi
    runs over one-to-one maps from U into the live units (Hungarian assignment,
    ``scipy.optimize.linear_sum_assignment``). Cosines are signed. All-zero rows are left out.

    1 for a circular convolution written densely (its rows are closed under shifts); near its null for
    random weights, about the largest cosines among |U| x m random pairs (0.06 for 1024 x 4096 rows of
    length 3072). Fourier-like fields score high too: read it with the locality measures.

    Args:
        max_units: when more units are live, U is a seeded random subsample of this size (chosen by
            :func:`content_keys`, so independent of unit order), and the shifted rows of U are matched
            against *all* live rows (a rectangular assignment): a unit's shifted partner need not be in
            the subsample. The null then depends on m, so compare against references of the same shape.
        seed: seeds the subsample.

    Returns:
        ``shift_match`` and ``shift_match_units`` (|U|, the number of shifted rows matched).
    """
    F = unit_fields(W, geometry)
    m = len(F)
    V = F.reshape(m, -1)
    live = np.linalg.norm(V, axis=1) > 0
    F, V = F[live], V[live]
    if not len(V):
        return {"shift_match": float("nan"), "shift_match_units": 0.0}
    U = np.arange(len(V))
    if len(V) > max_units:
        U = np.sort(np.argsort(content_keys(V, seed), kind="stable")[:max_units])
    # the |U| x m cosine matrix is the one big product here; float32 halves its cost and is exact to
    # about 1e-7, far below anything the matching resolves
    rows = _unit_rows(V).astype(np.float32)
    scores = []
    for axis in range(geometry.ndim):
        shifted = _unit_rows(np.roll(F[U], 1, axis=2 + axis).reshape(len(U), -1)).astype(np.float32)
        cos = np.clip((shifted @ rows.T).astype(np.float64), -1.0, 1.0)
        r, c = linear_sum_assignment(cos, maximize=True)
        scores.append(cos[r, c].mean())
    return {"shift_match": float(np.mean(scores)), "shift_match_units": float(len(U))}


# -- conv_distance -----------------------------------------------------------------------------------


@dataclass
class ConvFit:
    """The convolutional approximation of a layer found by :func:`conv_fit` (fields in original order).

    Attributes:
        distance: ||W - W_conv||_F / ||W||_F.
        n_filters: number of shared filters (clusters with at least two units).
        labels: (m,) filter index of each unit, -1 for units rebuilt as zero.
        windows: per grid axis, (m, k_a) positions of each unit's window.
        crops: (m, C, *k) rebuilt crops W_conv restricted to the windows.
    """

    distance: float
    n_filters: int
    labels: np.ndarray
    windows: list[np.ndarray]
    crops: np.ndarray


def _best_windows(E: np.ndarray, geometry: Geometry, k: int) -> list[np.ndarray]:
    """Per axis, the (m, k_a) positions of each unit's window of maximal energy (E: energy maps)."""
    sums = window_sums(E, geometry, k)
    starts = np.unravel_index(sums.reshape(len(E), -1).argmax(axis=1), sums.shape[1:])
    return [
        (start[:, None] + np.arange(kk)) % L
        for start, kk, L in zip(starts, window_sizes(geometry, k), geometry.spatial)
    ]


def _crop_index(shape, windows: list[np.ndarray]) -> tuple:
    """Index tuple selecting [i, c, windows[0][i], windows[1][i]] from an (m, C, *S) array."""
    m, C = shape[:2]
    nd = len(windows)
    idx = [np.arange(m).reshape(-1, *[1] * (nd + 1)), np.arange(C).reshape(1, -1, *[1] * nd)]
    for a, w in enumerate(windows):
        idx.append(w.reshape([len(w), 1] + [w.shape[1] if b == a else 1 for b in range(nd)]))
    return tuple(idx)


def _centre_supports(crops: np.ndarray, rel_tol: float = 1e-12) -> np.ndarray:
    """Roll each crop so that its support sits in the middle of the window; returns the (m, nd) rolls.

    A field whose support is narrower than k fits in several windows with the same (maximal) energy,
    and which one argmax picks varies between copies of one filter; without this step identical
    filters would be cropped at different offsets. Only exactly-zero margins (below rel_tol of the crop
    energy) count as outside the support, so dense trained fields are left as they are.
    """
    m, nd = len(crops), crops.ndim - 2
    rolls = np.zeros((m, nd), dtype=int)
    sq = crops**2
    for a in range(nd):
        ax = 2 + a
        k = crops.shape[ax]
        marg = sq.sum(axis=tuple(b for b in range(1, crops.ndim) if b != ax))
        inside = marg > rel_tol * marg.sum(axis=1, keepdims=True)
        has = inside.any(axis=1)
        first = inside.argmax(axis=1)
        last = k - 1 - inside[:, ::-1].argmax(axis=1)
        roll = np.where(has, (k - (last - first + 1)) // 2 - first, 0)
        for r in np.unique(roll):
            if r:
                sel = roll == r
                crops[sel] = np.roll(crops[sel], r, axis=ax)
        rolls[:, a] = roll
    return rolls


def _leader_clusters(X: np.ndarray, order: np.ndarray, similarity: float, block: int = 512) -> np.ndarray:
    """Greedy (leader) clustering of the rows of X by |cosine|; returns (m,) labels, -1 for zero rows.

    Rows are taken in ``order``; each joins the existing leader with the largest |cos| if that is at
    least ``similarity``, else becomes a new leader. |cos| rather than cos: a unit equal to -1 times
    another's crop uses the same filter with a negative scale. Processed in blocks so that comparisons
    with earlier leaders are one matrix product; the sequential part only runs inside a block.
    """
    U = _unit_rows(X)
    labels = np.full(len(X), -1)
    leaders: list[int] = []  # row index of each cluster's leader
    for b0 in range(0, len(order), block):
        idx = order[b0 : b0 + block]
        idx = idx[np.linalg.norm(X[idx], axis=1) > 0]
        if not len(idx):
            continue
        best_val = np.full(len(idx), -1.0)
        best_lab = np.full(len(idx), -1)
        if leaders:
            sims = np.abs(U[idx] @ U[leaders].T)
            best_lab = sims.argmax(axis=1)
            best_val = sims[np.arange(len(idx)), best_lab]
        G = np.abs(U[idx] @ U[idx].T)
        np.fill_diagonal(G, 0.0)
        # a row with no in-block partner is settled by the earlier leaders alone: it joins the best
        # of them or leads a cluster no other row of the block can join (G is symmetric)
        alone = G.max(axis=1) < similarity
        joined = alone & (best_val >= similarity)
        labels[idx[joined]] = best_lab[joined]
        solo = idx[alone & ~joined]
        labels[solo] = len(leaders) + np.arange(len(solo))
        leaders.extend(int(i) for i in solo)
        # the rest in order: each may also join a leader made earlier in this block
        new: list[int] = []  # positions in idx of the leaders made among them
        new_lab: list[int] = []
        for j in np.flatnonzero(~alone):
            val, lab = best_val[j], best_lab[j]
            if new:
                sims = G[j, new]
                t = int(sims.argmax())
                if sims[t] > val:
                    val, lab = sims[t], new_lab[t]
            if val >= similarity:
                labels[idx[j]] = lab
            else:
                new.append(j)
                new_lab.append(len(leaders))
                labels[idx[j]] = len(leaders)
                leaders.append(int(idx[j]))
    return labels


def conv_fit(W, geometry: Geometry, k: int, similarity: float = 0.95) -> ConvFit:
    """Fit W with a layer a stride-1 convolution of kernel k could produce (see :func:`conv_distance`)."""
    F = unit_fields(W, geometry)
    E = energy_maps(F)
    windows = _best_windows(E, geometry, k)
    crops = F[_crop_index(F.shape, windows)]
    rolls = _centre_supports(crops)
    m = len(F)
    X = crops.reshape(m, -1)
    crop_energy = (X**2).sum(axis=1)
    unit_energy = E.reshape(m, -1).sum(axis=1)
    total_energy = float(unit_energy.sum())
    if total_energy == 0:
        return ConvFit(float("nan"), 0, np.full(m, -1), windows, np.zeros_like(crops))
    share = crop_energy / np.maximum(unit_energy, np.finfo(float).tiny)
    # most local units lead (cleanest filters); ties broken by content, not by unit index. Both keys are read to 9
    # decimals of scale-free quantities (share, unit-norm crops), so that rounding cannot reorder tied units and
    # the value does not depend on the weights' scale
    order = np.lexsort((content_keys(np.round(_unit_rows(X), 9) + 0.0), -np.round(share, 9)))
    labels = _leader_clusters(X, order, similarity)

    rebuilt = np.zeros_like(X)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    shared = ids[sizes >= 2]
    # a filter used by a single unit is no weight sharing: such units keep label -1 and are rebuilt as 0
    filters = np.full(m, -1)
    with blas_threads(1):  # many small eigh calls: see blas_threads
        for f, lab in enumerate(shared):
            members = np.flatnonzero(labels == lab)
            # best rank-1 fit of the members' crops: shared filter v (top right singular vector, from
            # the small d x d Gram matrix: an SVD of the tall crop stack is much slower) times a
            # least-squares scale per unit
            Xc = X[members]
            v = np.linalg.eigh(Xc.T @ Xc)[1][:, -1]
            rebuilt[members] = np.outer(Xc @ v, v)
            filters[members] = f
    rebuilt = rebuilt.reshape(crops.shape)
    residual = total_energy - crop_energy.sum() + ((X - rebuilt.reshape(m, -1)) ** 2).sum()
    # undo the support-centring rolls so that the crops line up with their windows again
    for a in range(rolls.shape[1]):
        for r in np.unique(rolls[:, a]):
            if r:
                sel = rolls[:, a] == r
                rebuilt[sel] = np.roll(rebuilt[sel], -r, axis=2 + a)
    distance = float(np.sqrt(max(residual, 0.0) / total_energy))
    return ConvFit(distance, len(shared), filters, windows, rebuilt)


def conv_distance(W, geometry: Geometry, k: int, similarity: float = 0.95) -> float:
    """conv_distance_k = ||W - W_conv||_F / ||W||_F for the convolution-like layer W_conv fitted below.

    1. Crop each unit to its k (1-D) or k x k (2-D) window of largest energy (circular windows on
       periodic grids, inside the grid otherwise; see :func:`probe.metrics.locality.window_sums`).
    2. Align the crops: a field narrower than k is rolled so that its support is centred in the window.
    3. Cluster the crops, taken from the most local unit down: a crop joins the leader with the
       largest |cosine| if it is at least ``similarity`` (default 0.95, within about 18 degrees), else
       starts a new cluster. Sign is ignored: -1 times a filter is the same filter.
    4. Each cluster with at least two units is one shared filter: its members are rebuilt as their
       least-squares multiple of the cluster's best rank-1 fit (top singular vector of the stacked
       crops), placed at their windows, zero elsewhere. Units in singleton clusters share nothing and are
       rebuilt as zero, so a locally connected layer without weight sharing scores 1, not 0.

    0 for an exact convolution with kernel <= k (each filter used by at least two units); 1 for random
    weights (no two crops within 18 degrees) unless the crops are very short (C k^d of a few
    entries), where random crops start to fall into clusters and the value drops below 1 by at most
    the crops' share of the energy.
    Since members are within arccos(similarity) of their leader, merging costs at most
    1 - similarity^2 of their crop energy: values below about 0.3 mean "convolutional up to that noise".
    On non-periodic grids a zero-padded convolution's border units are truncated filters and count as
    misfit.

    Args:
        k: kernel size (window length per axis).
        similarity: |cosine| at which a crop joins a cluster.
    """
    return conv_fit(W, geometry, k, similarity).distance


def conv_reconstruction(W, geometry: Geometry, k: int, similarity: float = 0.95) -> np.ndarray:
    """W_conv of :func:`conv_distance` as a dense (m, n) matrix in W's own layout (perm included)."""
    W = as_matrix(W)
    fit = conv_fit(W, geometry, k, similarity)
    F = np.zeros((W.shape[0], geometry.channels, *geometry.spatial))
    F[_crop_index(F.shape, fit.windows)] = fit.crops
    return flat_from_fields(F, geometry)

