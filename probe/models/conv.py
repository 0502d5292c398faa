"""Controls with built-in locality: a CNN (local + shared weights) and a locally connected net (local, not
shared); and the dense embedding of either layer over the input grid (as in the eCNN of d'Ascoli et al.).

Both are stacks of ``layers`` local layers (``channels`` each, kernel ``kernel``, the first with stride
``stride``), ReLU, then a linear readout of the flattened feature map (``pool``: of each channel's mean over
positions, a readout invariant to circular shifts). Padding is k//2 on each side, zeros on open grids and circular
on periodic ones (``padding`` = zeros or circular chooses). Circular padding, on a grid the stride divides and with
an odd kernel, makes every layer exactly equivariant to circular shifts of the input (the ``stability`` procedure
of :mod:`probe.run.procedures` needs it). The dense embedding writes a local layer with weights
w[o, p, c, offset] (o output channel, p output position) as a matrix M with
M[(o, p), (c, s)] = w[o, p, c, offset] where s = p*stride - pad + offset (mod the grid size when periodic);
hidden unit (o, p) is row o*P + p, the channel-major order of PyTorch's feature maps.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.models.registry import register


def out_size(n: int, kernel: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - kernel) // stride + 1


def local_dense(weight: torch.Tensor, in_spatial: tuple[int, ...], stride: int, pad: int,
                circular: bool) -> torch.Tensor:
    """Dense matrix of a local layer. weight: (O, P, C, *k) with P the number of output positions
    (a convolution passes its (O, C, *k) kernel expanded over P). Returns (O*P, C*|S|)."""
    O, P, C = weight.shape[:3]
    ks = weight.shape[3:]
    d = len(in_spatial)
    outs = [out_size(n, k, stride, pad) for n, k in zip(in_spatial, ks)]
    if math.prod(outs) != P:
        raise ValueError(f"weight has {P} output positions, the grid gives {outs}")
    n_pos = math.prod(in_spatial)
    M = torch.zeros(O * P, C * n_pos, dtype=weight.dtype, device=weight.device)
    out_coords = list(itertools.product(*[range(o) for o in outs]))
    for offset in itertools.product(*[range(k) for k in ks]):
        rows, cols, keep = [], [], []
        for p, oc in enumerate(out_coords):
            coord = [oc[a] * stride - pad + offset[a] for a in range(d)]
            if circular:
                coord = [c % n for c, n in zip(coord, in_spatial)]
            elif any(c < 0 or c >= n for c, n in zip(coord, in_spatial)):
                continue
            flat = 0
            for c, n in zip(coord, in_spatial):
                flat = flat * n + c
            rows.append(p)
            cols.append(flat)
            keep.append(p)
        if not rows:
            continue
        rows_t = torch.tensor(rows, device=weight.device)
        cols_t = torch.tensor(cols, device=weight.device)
        w = weight[(slice(None), rows_t, slice(None)) + tuple(offset)]  # (O, R, C)
        r = (torch.arange(O, device=weight.device)[:, None] * P + rows_t[None, :])  # (O, R)
        for c in range(C):
            # accumulate: on a small periodic grid two offsets can wrap onto the same pixel
            M.index_put_((r.reshape(-1), (c * n_pos + cols_t).repeat(O)), w[:, :, c].reshape(-1), accumulate=True)
    return M


class LocallyConnected(nn.Module):
    """A convolution's local support without weight sharing: weight (O, P, C, *k), bias (O, P)."""

    def __init__(self, in_channels, out_channels, in_spatial, kernel, stride=1, circular=False):
        super().__init__()
        self.d = len(in_spatial)
        self.kernel, self.stride, self.pad, self.circular = kernel, stride, kernel // 2, circular
        self.in_spatial = tuple(in_spatial)
        self.out_spatial = tuple(out_size(n, kernel, stride, self.pad) for n in in_spatial)
        P = math.prod(self.out_spatial)
        fan_in = in_channels * kernel**self.d
        bound = 1 / math.sqrt(fan_in)  # PyTorch's conv default scale
        self.weight = nn.Parameter(torch.empty(out_channels, P, in_channels, *([kernel] * self.d))
                                   .uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels, P).uniform_(-bound, bound))

    def patches(self, x):
        """The input each output position reads: (B, C, *S) -> (B, P, C k^d), in the weight's (C, *k) order."""
        B = x.shape[0]
        if self.circular:
            x = F.pad(x, [self.pad] * (2 * self.d), mode="circular")
            pad = 0
        else:
            pad = self.pad
        if self.d == 1:
            x = F.pad(x, (pad, pad)).unfold(2, self.kernel, self.stride)  # (B, C, P, k)
            return x.permute(0, 2, 1, 3).reshape(B, x.shape[2], -1)  # (B, P, C*k)
        return F.unfold(x, self.kernel, padding=pad, stride=self.stride).transpose(1, 2)  # (B, P, C*k*k)

    def forward(self, x):  # x (B, C, *S)
        w = self.weight.reshape(self.weight.shape[0], self.weight.shape[1], -1)  # (O, P, C*k^d)
        out = torch.einsum("bpj,opj->bop", self.patches(x), w) + self.bias
        return out.reshape(x.shape[0], -1, *self.out_spatial)

    def dense(self) -> torch.Tensor:
        return local_dense(self.weight.detach(), self.in_spatial, self.stride, self.pad, self.circular)


class LocalNet(nn.Module):
    """Stack of local layers (conv or locally connected) + ReLU, flattened into a linear readout."""

    def __init__(self, geometry, n_out, channels, kernel, layers, stride, shared: bool, circular: bool | None = None,
                 pool: bool = False):
        super().__init__()
        if geometry.channels_last:
            raise ValueError("convolutional controls need an image geometry")
        if layers < 1:
            raise ValueError("layers must be >= 1")
        if stride < 1 or channels < 1:
            raise ValueError(f"stride and channels must be >= 1, got stride={stride}, channels={channels}")
        if not 1 <= kernel <= 2 * max(geometry.spatial) + 1:
            raise ValueError(f"kernel must be in [1, {2 * max(geometry.spatial) + 1}] on this grid "
                             f"{tuple(geometry.spatial)}, got {kernel}")
        if layers > 1000:
            raise ValueError(f"layers must be <= 1000, got {layers}")
        self.geometry = geometry
        self.circular = geometry.periodic if circular is None else bool(circular)
        self.pool = bool(pool)
        conv = nn.Conv1d if geometry.ndim == 1 else nn.Conv2d
        spatial, c_in = geometry.spatial, geometry.channels
        mods = []
        for i in range(layers):
            s = stride if i == 0 else 1
            if shared:
                mods.append(conv(c_in, channels, kernel, stride=s, padding=kernel // 2,
                                 padding_mode="circular" if self.circular else "zeros"))
            else:
                mods.append(LocallyConnected(c_in, channels, spatial, kernel, s, self.circular))
            spatial = tuple(out_size(n, kernel, s, kernel // 2) for n in spatial)
            c_in = channels
        self.layers = nn.ModuleList(mods)
        self.out_spatial = spatial
        self.readout = nn.Linear(channels * (1 if self.pool else math.prod(spatial)), n_out)
        self.shared = shared

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.geometry.input_shape)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.readout(x.flatten(2).mean(2) if self.pool else x.flatten(1))

    def first_layer_module(self) -> nn.Module:
        """The first local layer, whose dense matrix is :meth:`first_layer_dense` (the pull differentiates it)."""
        return self.layers[0]

    def first_layer_dense(self) -> torch.Tensor:
        first = self.layers[0]
        if not self.shared:
            return first.dense()
        w = first.weight.detach()
        P = math.prod(out_size(n, first.kernel_size[0], first.stride[0], first.padding[0])
                      for n in self.geometry.spatial)
        return local_dense(w.unsqueeze(1).expand(w.shape[0], P, *w.shape[1:]), self.geometry.spatial,
                           first.stride[0], first.padding[0], self.circular)


def conv_layouts(model) -> list[tuple]:
    """Per local layer of ``model`` (a cnn or lcn LocalNet), what :func:`probe.metrics.equivariance.conv_layout`
    needs to write the convolutions of its embedded dense layer: (input geometry, output channels, kernel, stride,
    padding, circular). Hidden layers' inputs are the previous layer's channels over its output grid."""
    out, geo = [], model.geometry
    for layer in model.layers:
        if isinstance(layer, LocallyConnected):
            O, k, s, pad = layer.weight.shape[0], layer.kernel, layer.stride, layer.pad
        else:
            O, k, s, pad = layer.weight.shape[0], layer.kernel_size[0], layer.stride[0], layer.padding[0]
        out.append((geo, O, k, s, pad, model.circular))
        geo = Geometry(channels=O, spatial=tuple(out_size(n, k, s, pad) for n in geo.spatial), periodic=geo.periodic)
    return out


def _circular(padding: str, geometry) -> bool | None:
    if padding not in ("auto", "zeros", "circular"):
        raise ConfigError(f"model option padding must be auto, zeros or circular, got {padding!r}")
    return None if padding == "auto" else padding == "circular"


@register("cnn", "convolutional reference: `layers` conv layers of `channels`, kernel `kernel`, flattened readout",
          uses=())
def cnn(task, width, depth, param, channels: int = 32, kernel: int = 5, layers: int = 3, stride: int = 2,
        padding: str = "auto", pool: bool = False):
    """``padding``: auto (circular on periodic grids, zeros otherwise), zeros or circular; ``pool``: the readout reads
    each channel's mean over positions instead of the flattened map."""
    return LocalNet(task.geometry, task.n_outputs, channels, kernel, layers, stride, shared=True,
                    circular=_circular(padding, task.geometry), pool=pool)


@register("lcn", "locally connected control: the CNN's local support without weight sharing", uses=())
def lcn(task, width, depth, param, channels: int = 32, kernel: int = 5, layers: int = 3, stride: int = 2,
        padding: str = "auto", pool: bool = False):
    """``padding`` and ``pool``: as :func:`cnn`'s."""
    return LocalNet(task.geometry, task.n_outputs, channels, kernel, layers, stride, shared=False,
                    circular=_circular(padding, task.geometry), pool=pool)
