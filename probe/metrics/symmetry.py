"""Circular-shift symmetry of embedded local layers, and the full orbit of an input.

A dense layer whose units have a known layout (hidden unit (o, p) = row o P + p: output channel o at output
position p, the eCNN's embedding, :func:`probe.models.conv.local_dense`) can lie in two nested linear subspaces:

- the *convolutions* of that layout (local and weight-shared; :func:`probe.metrics.equivariance.conv_layout`);
- the *shift-equivariant* layers (weight-shared, not necessarily local; :func:`shift_layout`): the matrices M with
  M[(o, p), (c, s)] = theta[o, c, (s - p stride) mod S], which commute with circular shifts (shifting the input by
  ``stride`` shifts the output by one position).

Both projections are :func:`probe.metrics.equivariance.conv_subspace_projection` with the layout's index; the
share of a layer outside a subspace is :func:`complement_share`. Training on whole orbits (:func:`orbit`: every
circular shift of every example) keeps a layer shift-equivariant exactly when the whole network is a fixed point
of the shifts (every layer equivariant, the readout invariant: :func:`invariant_readout_layout`), because the
orbit-averaged loss is then invariant under the shifts of the parameters, so its gradient at a fixed point is
fixed too. It keeps weight sharing, not locality: the gradient of an equivariant layer has taps at every offset.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from probe.geometry import Geometry
from probe.metrics.equivariance import conv_subspace_projection
from probe.metrics.locality import as_matrix


def shift_layout(geometry: Geometry, out_channels: int, stride: int, out_spatial) -> np.ndarray:
    """The index of the shift-equivariant layers of a unit layout, in :func:`~probe.metrics.equivariance.conv_layout`'s
    form: an int array (O P, C |S|) whose entry at row o P + p, column c |S| + s is the flat index of the tap
    (o, c, (s - p stride) mod S) (per grid axis) in an (O, C, *S) kernel. Every entry holds a tap: the subspace is
    that of circular convolutions with a kernel as large as the grid, read at stride ``stride``.

    Raises ValueError unless ``stride`` times the output grid is the input grid on every axis (else no shift of the
    input is a shift of the output, and the subspace would not be that of an equivariant layer)."""
    if geometry.channels_last:
        raise ValueError("shift_layout needs a channels-first (image) geometry")
    S, C, d = tuple(geometry.spatial), geometry.channels, geometry.ndim
    outs = tuple(int(n) for n in out_spatial)
    if len(outs) != d or any(o * stride != n for o, n in zip(outs, S)):
        raise ValueError(f"an output grid {outs} at stride {stride} is not an equivariant image of the grid {S}")
    n_pos, P = int(np.prod(S)), int(np.prod(outs))
    out_coords = np.indices(outs).reshape(d, -1)  # (d, P)
    in_coords = np.indices(S).reshape(d, -1)  # (d, |S|)
    rel = [(in_coords[a][None, :] - stride * out_coords[a][:, None]) % S[a] for a in range(d)]  # per axis (P, |S|)
    offset = np.ravel_multi_index(tuple(rel), S)  # (P, |S|)
    oc = np.arange(out_channels)[:, None, None, None] * C + np.arange(C)[None, None, :, None]  # (O, 1, C, 1)
    index = oc * n_pos + offset[None, :, None, :]  # (O, P, C, |S|)
    return index.reshape(out_channels * P, C * n_pos)


def invariant_readout_layout(n_out: int, channels: int, positions: int) -> np.ndarray:
    """The index of the readouts that are invariant to circular shifts of a feature map of ``channels`` channels at
    ``positions`` positions (column o P + p): the entry (k, o P + p) holds tap k C + o, whatever p. Their projection
    (:func:`~probe.metrics.equivariance.conv_subspace_projection`) averages each class's weights on a channel over
    the positions: a readout of the channels' means, as a CNN with ``pool`` has."""
    k = np.arange(n_out)[:, None, None] * channels + np.arange(channels)[None, :, None]  # (K, C, 1)
    return np.broadcast_to(k, (n_out, channels, positions)).reshape(n_out, channels * positions).copy()


def complement_norm(W, index: np.ndarray) -> tuple[float, float]:
    """(||W - Proj(W)||_F, ||W||_F), Proj the orthogonal projection onto the layout's subspace (``index``: from
    :func:`shift_layout`, :func:`invariant_readout_layout` or :func:`~probe.metrics.equivariance.conv_layout`)."""
    W = as_matrix(W)
    return float(np.linalg.norm(W - conv_subspace_projection(W, index))), float(np.linalg.norm(W))


def complement_share(W, index: np.ndarray) -> float:
    """||W - Proj(W)||_F / ||W||_F: the share of W's norm outside the layout's subspace (0 inside it; for i.i.d.
    random weights sqrt(1 - T / (m n)), T the subspace's dimension; NaN for W = 0)."""
    r, n = complement_norm(W, index)
    return r / n if n > 0 else float("nan")


def subspace_distances(norms) -> tuple[list[float], float]:
    """From the complement norms (r_l, n_l) = (||W_l - Proj_l(W_l)||_F, ||W_l||_F) of layers l
    (:func:`complement_norm`): each layer's share r_l / n_l outside its subspace, and the share of the layers
    together, sqrt(sum_l r_l^2 / sum_l n_l^2) (the complement share of all their weights as one vector). NaN where a
    norm is 0."""
    shares = [r / n if n > 0 else float("nan") for r, n in norms]
    total = sum(n**2 for _, n in norms)
    pooled = float(np.sqrt(sum(r**2 for r, _ in norms) / total)) if total > 0 else float("nan")
    return shares, pooled


def complement_growth(norms, start) -> tuple[float | None, float | None]:
    """How the complements have grown from ``start`` to ``norms`` (both lists of (r_l, n_l) from
    :func:`complement_norm`, layer by layer): the first layer's r_0 / r_0(start), and the layers' together,
    sqrt(sum_l r_l^2 / sum_l r_l(start)^2); (None, None) when the first layer started inside its subspace."""
    if start[0][0] <= 0:
        return None, None
    return norms[0][0] / start[0][0], float(np.sqrt(sum(r**2 for r, _ in norms) / sum(r**2 for r, _ in start)))


def orbit(x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Every circular shift of every input: (N, n) flat inputs in the order the model sees them, read as
    ``geometry.input_shape`` (C, *S), to (N G, n) with G = |S| shifts, example-major (rows i G .. i G + G - 1 are
    example i shifted by each g in row-major order of the grid; g = 0 first). Shifts act on the grid the model
    convolves over, the seen order (a shuffled task's CNN convolves over its shuffled positions too)."""
    if geometry.channels_last:
        raise ValueError("orbit needs a channels-first (image) geometry")
    N = len(x)
    xs = x.reshape(N, *geometry.input_shape)
    dims = tuple(range(2, 2 + geometry.ndim))
    shifted = [torch.roll(xs, shifts=g, dims=dims) if any(g) else xs
               for g in itertools.product(*(range(n) for n in geometry.spatial))]
    return torch.stack(shifted, 1).reshape(N * len(shifted), -1)
