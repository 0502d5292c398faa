"""Functional translation measures of a model (docs/design.md §4.5, functional).

A model is any callable f mapping a batch of flat inputs x (B, n), in the geometry's layout, to outputs
(B, K) (logits). Translations act on the image, not on the vector the model sees: inputs are taken
back to the original grid order (undoing a shuffled control's perm), moved, and flattened again.
Put the model in eval mode first; nothing here changes it.
"""

from __future__ import annotations

import numpy as np
import torch

from probe.geometry import Geometry
from probe.metrics.equivariance import flat_from_fields


def _grid(x, geometry: Geometry) -> np.ndarray:
    """Flat inputs (B, n) -> float64 array (B, C, *S) in original position order."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return geometry.fields(np.asarray(x, dtype=np.float64))


def _as_input(f, x) -> torch.Tensor:
    """x as a tensor for f: tensors as they are; arrays in the dtype and device of f's parameters if
    it has any, else in their own dtype."""
    if isinstance(x, torch.Tensor):
        return x
    params = next(iter(f.parameters()), None) if isinstance(f, torch.nn.Module) else None
    if params is not None:
        return torch.as_tensor(np.asarray(x), dtype=params.dtype, device=params.device)
    return torch.as_tensor(np.asarray(x))


def _like(a: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """A numpy array as a tensor with the dtype and device of x."""
    return torch.as_tensor(a, dtype=x.dtype, device=x.device)


def translate(x, geometry: Geometry, t: float, axis: int = 0) -> np.ndarray:
    """T_t x: the inputs translated by t pixels (sub-pixel allowed) along grid axis ``axis``.

    (T_t x)(s) = x(s - t). Periodic grids use Fourier (sinc) interpolation: the rfft along the axis is
    multiplied by exp(-2 pi i f t / L), the Nyquist bin (even L) keeping only its real part: an integer
    t is exactly a circular shift, and shifts compose exactly for inputs without Nyquist content.
    Other grids use linear interpolation with the edge values repeated beyond the border.

    Returns a float64 array of flat inputs (B, n) in the geometry's layout.
    """
    G = _grid(x, geometry)
    ax = 2 + axis
    L = geometry.spatial[axis]
    if geometry.periodic:
        f = np.arange(L // 2 + 1).reshape([-1 if d == ax else 1 for d in range(G.ndim)])
        Z = np.fft.rfft(G, axis=ax) * np.exp(-2j * np.pi * f * t / L)
        G = np.fft.irfft(Z, n=L, axis=ax)
    else:
        src = np.clip(np.arange(L) - t, 0, L - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, L - 1)
        w = (src - lo).reshape([-1 if d == ax else 1 for d in range(G.ndim)])
        G = np.take(G, lo, axis=ax) * (1 - w) + np.take(G, hi, axis=ax) * w
    return flat_from_fields(G, geometry)


def translation_generator(x, geometry: Geometry, axis: int = 0) -> np.ndarray:
    """d/dt T_t x at t = 0 along grid axis ``axis``, as flat inputs (B, n).

    Periodic grids: the spectral derivative -dx/ds (the derivative of :func:`translate`'s Fourier
    shift). Other grids: the symmetric derivative of linear interpolation, -(x(s+1) - x(s-1)) / 2 with
    the edge value repeated (x(-1) = x(0), x(L) = x(L-1)); it equals the limit of
    (T_h x - T_{-h} x) / 2h, so that finite differences of :func:`translate` check it.
    """
    G = _grid(x, geometry)
    ax = 2 + axis
    L = geometry.spatial[axis]
    if geometry.periodic:
        f = np.arange(L // 2 + 1).reshape([-1 if d == ax else 1 for d in range(G.ndim)])
        D = np.fft.irfft(np.fft.rfft(G, axis=ax) * (-2j * np.pi * f / L), n=L, axis=ax)
    else:
        nxt = np.take(G, np.minimum(np.arange(L) + 1, L - 1), axis=ax)
        prv = np.take(G, np.maximum(np.arange(L) - 1, 0), axis=ax)
        D = -(nxt - prv) / 2
    return flat_from_fields(D, geometry)


def lie_derivative(f, x, geometry: Geometry, batch_size: int = 256) -> float:
    """lie_derivative = mean over grid axes of E_x ||d/dt f(T_t x)|_{t=0}||^2 / dim f.

    T_t is :func:`translate` (Fourier shift on periodic grids, linear interpolation otherwise);
    d/dt f(T_t x) = J_f(x) v with v = :func:`translation_generator`, computed as one forward-mode
    product (``torch.func.jvp``) per axis and batch. dim f is the number of outputs per input. 0 for a
    translation-invariant f (e.g. a linear circular convolution followed by global average pooling).

    Args:
        f: the model, (B, n) -> (B, K) tensors.
        x: flat inputs (B, n), a tensor, or an array (converted to the dtype of f's parameters).
        batch_size: inputs per jvp call.
    """
    x = _as_input(f, x)
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        for axis in range(geometry.ndim):
            v = _like(translation_generator(xb, geometry, axis), xb)
            _, dout = torch.func.jvp(f, (xb,), (v,))
            dout = dout.detach().reshape(len(xb), -1).double()
            total += float((dout**2).sum() / dout.shape[1])
            count += len(xb)
    return total / count if count else float("nan")


def lie_ratio(f, x, geometry: Geometry, batch_size: int = 256, seed: int = 0) -> float:
    """lie_ratio = sum_{x, a} ||J_f(x) v_a(x)||^2 / sum_{x, a} ||J_f(x) u_a(x)||^2: the Lie derivative against the
    same quantity for random input directions of equal norm.

    v_a(x) = :func:`translation_generator` (x, a) is the direction in which a sub-pixel translation along axis a
    moves x; u_a(x) = g ||v_a(x)|| / ||g|| with g ~ N(0, I_n) drawn per input and axis (seeded ``seed``): a
    random direction of the same length. Both products are forward-mode (``torch.func.jvp``).

    0 for a translation-invariant f; about 1 when f is no less sensitive to a translation than to a random
    perturbation of the same size; above 1 when translations move it more. Unlike :func:`lie_derivative`, which
    grows with the square of the logits' scale (seeds of one model differed 3-fold, and an untrained net scores
    near 0 only because its logits are small), the ratio does not change when f is multiplied by a constant, so
    it can be compared across seeds, training and models.
    """
    x = _as_input(f, x)
    rng = np.random.default_rng(seed)
    along, random = 0.0, 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        for axis in range(geometry.ndim):
            v = _like(translation_generator(xb, geometry, axis), xb)
            u = _like(_random_directions(rng, len(xb), geometry), xb)
            u = u * (v.norm(dim=1, keepdim=True) / u.norm(dim=1, keepdim=True).clamp_min(1e-30))
            for direction, acc in ((v, "along"), (u, "random")):
                _, dout = torch.func.jvp(f, (xb,), (direction,))
                sq = float(dout.detach().double().pow(2).sum())
                if acc == "along":
                    along += sq
                else:
                    random += sq
    return along / random if random > 0 else float("nan")


def _random_directions(rng, B: int, geometry: Geometry) -> np.ndarray:
    """B standard Gaussian inputs, drawn over the grid in original order and flattened to the geometry's layout, so
    that a shuffled control sees the same perturbations of the same images as its unshuffled twin."""
    return flat_from_fields(rng.standard_normal((B, geometry.channels, *geometry.spatial)), geometry)


def _roll(x, geometry: Geometry, shift: int, axis: int) -> np.ndarray:
    """Inputs circularly shifted by ``shift`` pixels along grid axis ``axis``, flat (B, n)."""
    return flat_from_fields(np.roll(_grid(x, geometry), shift, axis=2 + axis), geometry)


@torch.no_grad()
def shift_consistency(f, x, geometry: Geometry, shifts=(1, 2, 3), batch_size: int = 1024,
                      seed: int = 0) -> dict[str, float]:
    """Share of inputs whose argmax prediction survives a circular shift, per shift size, beside the share that
    survives a random perturbation of the same norm.

    shift_consistency_d = mean over grid axes a and directions +-d of
    mean_x [argmax f(x) == argmax f(roll(x, +-d, a))]. Shifts are circular on every grid (the image is
    rolled in its original order, then re-shuffled for a shuffled control). 1 for a model that is
    invariant to circular shifts, such as a circular convolution followed by global average pooling.

    noise_consistency_d: the same with x + u in place of the shifted input, u = g ||roll(x, +-d, a) - x|| / ||g||,
    g ~ N(0, I_n) drawn per input, axis and direction over the grid (seeded ``seed``): a random move of the same size.
    It is the null of shift_consistency_d. A model that predicts almost one class for every input (an untrained net)
    scores near 1 on both; a model invariant to shifts but not to noise scores higher on the first.

    Returns:
        ``shift_consistency_1``, ``shift_consistency_2``, ... one key per shift, then ``noise_consistency_1``, ...
    """
    x = _as_input(f, x)
    rng = np.random.default_rng(seed)
    agree = {d: 0.0 for d in shifts}
    noise = {d: 0.0 for d in shifts}
    n_cases = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        pred = f(xb).argmax(dim=-1)
        n_cases += len(xb)
        for d in shifts:
            for axis in range(geometry.ndim):
                for s in (d, -d):
                    rolled = _like(_roll(xb, geometry, s, axis), xb)
                    moved = f(rolled).argmax(dim=-1)
                    agree[d] += float((moved == pred).double().sum()) / (2 * geometry.ndim)
                    u = _like(_random_directions(rng, len(xb), geometry), xb)
                    size = (rolled - xb).flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1).clamp_min(1e-30)
                    jittered = f(xb + u * size.reshape(-1, *[1] * (xb.dim() - 1))).argmax(dim=-1)
                    noise[d] += float((jittered == pred).double().sum()) / (2 * geometry.ndim)
    out = {f"shift_consistency_{d}": (agree[d] / n_cases if n_cases else float("nan")) for d in shifts}
    out.update({f"noise_consistency_{d}": (noise[d] / n_cases if n_cases else float("nan")) for d in shifts})
    return out
