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

from probe.geometry import Geometry
from probe.metrics.locality import (
    as_matrix,
    energy_maps,
    unit_fields,
    window_sizes,
    window_sums,
)
from probe.threads import limit_threads

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
    # each row hashed where it lies (a contiguous row is a buffer): no copy of V's bytes
    digests = b"".join(hashlib.blake2b(row, digest_size=8, key=salt).digest() for row in V)
    return np.frombuffer(digests, dtype=np.uint64)


def _unit_rows(V: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    return np.divide(V, norms, out=np.zeros_like(V), where=norms > 0)


# -- shift_match -------------------------------------------------------------------------------------


def shift_match(W, geometry: Geometry, max_units: int = 1024, seed: int = 0) -> dict[str, float]:
    """Mean cosine of the best one-to-one matching between shifted rows T w_i and *other* rows w_j.

    shift_match = mean over grid axes a of max_pi mean_{i in U} cos(T_a w_i, w_pi(i)), pi(i) != i, where T_a
    shifts a field by one pixel along axis a, circularly even on non-periodic grids (so the measure is defined
    the same way on every grid; a zero-padded convolution then loses only its border units), and pi runs over
    one-to-one maps from U into the live units that send no unit to itself (Hungarian assignment,
    ``scipy.optimize.linear_sum_assignment``, with the diagonal forbidden). Cosines are signed. All-zero rows
    are left out; with fewer than two live units the measure is undefined (NaN, left out by the callers).

    Why no self-matches: a smooth field barely changes under a one-pixel shift, so cos(T w_i, w_i) is close to
    1 for any smooth unit, and with the diagonal allowed smooth random fields without any translation
    structure scored 0.78-0.98. Without it a unit must find its shifted copy among the others, which a
    convolution has (every filter at every position) and smooth random fields do not. What is left of
    smoothness (smooth fields are closer to each other than white ones) is what the ``phase`` reference
    (:func:`probe.metrics.nulls.phase_randomize`: the same power spectrum per unit) scores: read the value
    against it.

    1 for a circular convolution written densely (its rows are closed under shifts); near its null for
    random weights, about the largest cosines among |U| x m random pairs (0.06 for 1024 x 4096 rows of
    length 3072). Fourier-like fields score high too: read it with the locality measures. A convolution of
    stride s is closed under shifts by s, not 1, and scores lower. Identical units (copies) are each other's
    partners.

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
    norms = np.sqrt(np.einsum("ij,ij->i", V, V))
    live = norms > 0
    if not live.all():  # (indexing copies: skip it in the common case)
        F, V, norms = F[live], V[live], norms[live]
    if len(V) < 2:
        return {"shift_match": float("nan"), "shift_match_units": float(len(V))}
    U = np.arange(len(V))
    if len(V) > max_units:
        U = np.sort(np.argsort(content_keys(V, seed), kind="stable")[:max_units])
    # the |U| x m cosine matrix is the one big product here; float32 halves its cost and is exact to
    # about 1e-7, far below anything the matching resolves
    # imported here: scipy.optimize takes ~0.3 CPU-s to import, paid by every `probe train` that tracks
    from scipy.optimize import linear_sum_assignment

    rows = (V / norms[:, None]).astype(np.float32)  # normalized first: the same cosines for W and c W
    scores = []
    for axis in range(geometry.ndim):
        # a circular shift keeps a row's norm: shift the unit rows themselves
        shifted = np.roll(rows[U].reshape(len(U), *F.shape[1:]), 1, axis=2 + axis).reshape(len(U), -1)
        cos = np.clip((shifted @ rows.T).astype(np.float64), -1.0, 1.0)
        cos[np.arange(len(U)), U] = -3.0  # no unit is its own partner (below any cosine: never chosen)
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


def chance_similarity(d: int, m: int, alpha: float = 0.01) -> float:
    """The |cosine| that a random direction in R^d reaches with one given direction with probability alpha / m.

    For u uniform on the sphere S^(d-1) and a fixed v, P(|cos(u, v)| >= s) = I_{1 - s^2}((d - 1) / 2, 1 / 2)
    (I the regularized incomplete beta function; 1 - s for d = 3). Solving it for alpha / m gives the s above
    which m random crops of length d expect about alpha chance partners each: 0.99998 for d = 3 and m = 640,
    0.995 for d = 5 and m = 320, below 0.95 from about d = 10 on. 1.0 for d = 1 (every pair of 1-vectors is
    parallel; nothing can be told apart).
    """
    from scipy.special import betaincinv

    if d <= 1 or m < 1:
        return 1.0
    return float(np.sqrt(max(0.0, 1.0 - betaincinv((d - 1) / 2, 0.5, min(alpha / m, 1.0)))))


def conv_fit(W, geometry: Geometry, k: int, similarity: float = 0.95, alpha: float = 0.01,
             energy: np.ndarray | None = None) -> ConvFit:
    """Fit W with a layer a stride-1 convolution of kernel k could produce (see :func:`conv_distance`); ``energy``:
    the energy maps of W (:func:`probe.metrics.locality.energy_maps`), when already computed."""
    F = unit_fields(W, geometry)
    E = energy_maps(F) if energy is None else energy
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
    # short crops cluster by chance: demand what m random crops of this length would rarely reach
    threshold = max(similarity, chance_similarity(X.shape[1], int((unit_energy > 0).sum()), alpha))
    labels = _leader_clusters(X, order, threshold)
    # where each unit's filter sits: its window's start, less the roll that centred its support
    position = np.stack([w[:, 0] - rolls[:, a] for a, w in enumerate(windows)], axis=1)
    if geometry.periodic:
        position %= np.array(geometry.spatial)

    rebuilt = np.zeros_like(X)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    # a filter is shared when it is used at two or more distinct positions: a cluster of copies at one place
    # (or a single unit) is no weight sharing, and its units keep label -1 and are rebuilt as 0
    shared = [lab for lab in ids[sizes >= 2] if len(np.unique(position[labels == lab], axis=0)) >= 2]
    filters = np.full(m, -1)
    with limit_threads(1):  # many small eigh calls: see probe.threads
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


def conv_distance(W, geometry: Geometry, k: int, similarity: float = 0.95, alpha: float = 0.01,
                  energy: np.ndarray | None = None) -> float:
    """conv_distance_k = ||W - W_conv||_F / ||W||_F for the convolution-like layer W_conv fitted below.

    1. Crop each unit to its k (1-D) or k x k (2-D) window of largest energy (circular windows on
       periodic grids, inside the grid otherwise; see :func:`probe.metrics.locality.window_sums`).
    2. Align the crops: a field narrower than k is rolled so that its support is centred in the window.
       The unit's *position* is its window's start less that roll.
    3. Cluster the crops, taken from the most local unit down: a crop joins the leader with the
       largest |cosine| if it is at least s, else starts a new cluster. Sign is ignored: -1 times a filter
       is the same filter. s = max(``similarity``, :func:`chance_similarity` (d, m, alpha)), with d = C k^D
       the crop length and m the live units: 0.95 (within about 18 degrees) for crops long enough, and for
       short crops (1-D, C = 1, k <= 5) the |cosine| that m random crops of length d reach with only about
       ``alpha`` chance partners each (0.99998 for d = 3 and m = 640, 0.995 for d = 5 and m = 320). With
       s = 0.95 alone, 640 random 3-tap fields fall into about 20 clusters and score 0.17.
    4. A cluster is one *shared* filter when its units sit at two or more distinct positions: weight
       sharing is a filter used at several places (translation). Its members are rebuilt as their
       least-squares multiple of the cluster's best rank-1 fit (top singular vector of the stacked crops),
       placed at their windows, zero elsewhere. Units of other clusters (one unit, or copies of one filter
       at one position) share nothing and are rebuilt as zero.

    Calibration (tests/test_equivariance.py): 0 for an exact convolution with kernel <= k (each filter at two
    or more positions); >= 0.9 for unshared random local fields of the layer's own windows (the ``lcn``
    reference, :func:`probe.metrics.nulls.lcn_fields`), short crops included; 1 for copies of one filter at one
    position; 1 for random weights. Members are within arccos(s) of their leader, so merging costs at most
    1 - s^2 of their crop energy: where s = 0.95, values below about 0.3 mean "convolutional up to that
    noise"; where s is near 1 (short crops), only nearly exact sharing counts, since looser agreement is what
    chance gives. On non-periodic grids a zero-padded convolution's border units are truncated filters and
    count as misfit. With C = 1, crops that hold a single nonzero tap all look alike after centring, so fields
    scattered over single pixels (a shuffled convolution read in pixel order) count as shared and score about
    sqrt(1 - window_mass_k), not 1.

    Args:
        k: kernel size (window length per axis).
        similarity: the least |cosine| at which a crop joins a cluster.
        alpha: chance partners per unit allowed for short crops (see step 3).
        energy: the energy maps of W, when already computed (:func:`probe.metrics.first_layer_measures` computes
            them once for every measure that reads them).
    """
    return conv_fit(W, geometry, k, similarity, alpha, energy).distance


def conv_reconstruction(W, geometry: Geometry, k: int, similarity: float = 0.95) -> np.ndarray:
    """W_conv of :func:`conv_distance` as a dense (m, n) matrix in W's own layout (perm included)."""
    W = as_matrix(W)
    fit = conv_fit(W, geometry, k, similarity)
    F = np.zeros((W.shape[0], geometry.channels, *geometry.spatial))
    F[_crop_index(F.shape, fit.windows)] = fit.crops
    return flat_from_fields(F, geometry)



# -- the convolutional subspace of a known unit layout -------------------------------------------------


def conv_layout(geometry: Geometry, out_channels: int, kernel: int, stride: int = 1, pad: int | None = None,
                circular: bool | None = None) -> np.ndarray:
    """Which kernel tap every entry of a convolution's dense matrix holds, for a known layout of its units.

    The layout is that of :func:`probe.models.conv.local_dense` (the eCNN's embedding): unit (o, p), o the
    output channel and p the output position (row-major over the output grid), is row o P + p; column
    c |S| + s in the channels-first layout of the positions the model sees; unit (o, p) reads input position
    s = p stride - pad + a per axis (mod the grid when ``circular``), a = 0 .. kernel - 1, through tap
    (o, c, a). Returns an int array (O P, C |S|) holding the flat index of (o, c, a) in an (O, C, *k) kernel,
    -1 where no tap lands (outside the kernel's support, or in the zero padding of an open grid).

    Args:
        pad: default kernel // 2 (probe's cnn and lcn).
        circular: default ``geometry.periodic``.
    """
    if geometry.channels_last:
        raise ValueError("conv_layout needs a channels-first (image) geometry")
    pad = kernel // 2 if pad is None else pad
    circular = geometry.periodic if circular is None else circular
    S, C, d = geometry.spatial, geometry.channels, geometry.ndim
    outs = tuple((n + 2 * pad - kernel) // stride + 1 for n in S)
    P, n_pos = int(np.prod(outs)), geometry.n_positions
    taps = kernel**d
    index = np.full((out_channels * P, C * n_pos), -1, dtype=np.int64)
    out_coords = np.indices(outs).reshape(d, -1)  # (d, P)
    for t, a in enumerate(np.ndindex(*([kernel] * d))):
        coord = [out_coords[ax] * stride - pad + a[ax] for ax in range(d)]
        if circular:
            coord = [c % n for c, n in zip(coord, S)]
            valid = np.ones(P, dtype=bool)
        else:
            valid = np.all([(c >= 0) & (c < n) for c, n in zip(coord, S)], axis=0)
        p = np.flatnonzero(valid)
        flat = np.ravel_multi_index(tuple(c[valid] for c in coord), S)
        rows = np.arange(out_channels)[:, None, None] * P + p[None, None, :]  # (O, 1, Pv)
        cols = np.arange(C)[None, :, None] * n_pos + flat[None, None, :]  # (1, C, Pv)
        tap = (np.arange(out_channels)[:, None, None] * C + np.arange(C)[None, :, None]) * taps + t  # (O, C, 1)
        rows, cols, tap = np.broadcast_arrays(rows, cols, tap)
        index[rows.ravel(), cols.ravel()] = tap.ravel()
    return index


def conv_subspace_projection(W, index: np.ndarray) -> np.ndarray:
    """The orthogonal projection of W onto the convolutions of a known layout (:func:`conv_layout`'s ``index``).

    Those convolutions form a linear subspace: every tap's weight is one number, shared by every entry that
    holds it. The nearest point in Frobenius norm gives each tap the mean of W over its entries and zero to
    the entries no tap holds. W is the dense matrix in the layout's own rows and columns (the model's
    seen inputs).
    """
    W = as_matrix(W)
    if W.shape != index.shape:
        raise ValueError(f"weights of shape {W.shape} do not fit a layout of shape {index.shape}")
    held = index >= 0
    n_taps = int(index.max()) + 1 if held.any() else 0
    sums = np.bincount(index[held], weights=W[held], minlength=n_taps)
    counts = np.bincount(index[held], minlength=n_taps)
    theta = sums / np.maximum(counts, 1)
    out = np.zeros_like(W)
    out[held] = theta[index[held]]
    return out


def conv_subspace_distance(W, index: np.ndarray) -> float:
    """||W - Proj(W)||_F / ||W||_F, Proj the projection onto the convolutions of a known unit layout
    (:func:`conv_subspace_projection`): 0 for such a convolution; for i.i.d. random weights about
    sqrt(1 - T / (m n)) with T the number of taps (nearly 1); for a locally connected layer of the same
    layout (local, unshared) the share of its energy that differs between positions. Unlike
    :func:`conv_distance` it needs the layout (which unit is which filter at which position), known for an
    embedded network (the eCNN) and its plain-MLP null of the same shape."""
    W = as_matrix(W)
    norm = np.linalg.norm(W)
    return float(np.linalg.norm(W - conv_subspace_projection(W, index)) / norm) if norm > 0 else float("nan")
