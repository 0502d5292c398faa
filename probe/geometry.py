"""Geometry: how a flat input vector maps onto channels x a spatial grid (docs/design.md §3).

Every task declares one, every run folder and checkpoint stores one, every geometric measure reads one.

Layouts of the flat input vector of length n = C * |S|:
- ``channels_last=False`` (images): index = c * |S| + s, as ``x.reshape(C, *S)`` (PyTorch's NCHW order).
- ``channels_last=True`` (sequences): index = s * C + c, as ``x.reshape(*S, C)``: position-major, the
  d features of a token contiguous (``S = (T,)``, ``C = d``).

``perm`` is the fixed permutation of spatial positions of a shuffled control: the model sees
``x_seen[c, s] = x[c, perm[s]]``. :meth:`Geometry.fields` with ``unpermute=True`` puts a layer's weights back
in the original pixel order so that contiguity is measured where it means something.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """The grid a flat input lives on.

    Args:
        channels: C, channels per position (features per token for sequences).
        spatial: the grid S: ``(L,)`` for 1-D signals and sequences, ``(H, W)`` for images.
        periodic: whether the grid wraps around (circular distances, windows and shifts).
        channels_last: layout of the flat vector (see module docstring).
        perm: a permutation of the ``prod(spatial)`` positions applied to inputs, or None.
        kind: ``"image"`` or ``"sequence"``; measures use it to choose what to report.
    """

    channels: int
    spatial: tuple[int, ...]
    periodic: bool = False
    channels_last: bool = False
    perm: tuple[int, ...] | None = None
    kind: str = "image"

    def __post_init__(self):
        object.__setattr__(self, "spatial", tuple(int(s) for s in self.spatial))
        if self.perm is not None:
            object.__setattr__(self, "perm", tuple(int(p) for p in self.perm))
        if self.channels < 1 or not self.spatial or any(s < 1 for s in self.spatial):
            raise ValueError(f"geometry: channels and grid sizes must be positive, "
                             f"got C={self.channels}, S={self.spatial}")
        if len(self.spatial) > 2:
            raise ValueError(f"geometry: grids are 1-D or 2-D, got {self.spatial}")
        if self.perm is not None and sorted(self.perm) != list(range(self.n_positions)):
            raise ValueError(f"geometry: perm must be a permutation of {self.n_positions} positions")
        if self.kind not in ("image", "sequence"):
            raise ValueError(f"geometry: kind must be 'image' or 'sequence', got {self.kind!r}")

    # -- sizes ---------------------------------------------------------------------------------------
    @property
    def n_positions(self) -> int:
        """|S|, the number of grid positions."""
        return prod(self.spatial)

    @property
    def n_inputs(self) -> int:
        """n = C * |S|, the length of the flat input vector."""
        return self.channels * self.n_positions

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape a model reshapes one flat input to: (C, *S), or (*S, C) if channels_last."""
        return (*self.spatial, self.channels) if self.channels_last else (self.channels, *self.spatial)

    # -- weights <-> fields --------------------------------------------------------------------------
    def fields(self, W, unpermute: bool = True) -> np.ndarray:
        """Reshape first-layer weights W (m x n) into receptive fields of shape (m, C, *S).

        With ``unpermute`` and a stored ``perm``, positions are returned in the original (unshuffled)
        order: out[i, c, perm[s]] = W-field[i, c, s].
        """
        W = np.asarray(W)
        if W.ndim != 2 or W.shape[1] != self.n_inputs:
            raise ValueError(
                f"weights of shape {tuple(W.shape)} do not fit input geometry {self.describe()} "
                f"(expected m x {self.n_inputs})"
            )
        m = W.shape[0]
        if self.channels_last:
            F = W.reshape(m, self.n_positions, self.channels).transpose(0, 2, 1)
        else:
            F = W.reshape(m, self.channels, self.n_positions)
        if unpermute and self.perm is not None:
            out = np.empty_like(F)
            out[:, :, np.asarray(self.perm)] = F
            F = out
        return np.ascontiguousarray(F.reshape(m, self.channels, *self.spatial))

    def flatten_fields(self, F) -> np.ndarray:
        """Inverse of :meth:`fields` without unpermuting: (m, C, *S) -> (m, n) in this layout."""
        F = np.asarray(F)
        m = F.shape[0]
        F = F.reshape(m, self.channels, self.n_positions)
        if self.channels_last:
            F = F.transpose(0, 2, 1)
        return np.ascontiguousarray(F.reshape(m, self.n_inputs))

    def permuted(self, perm) -> "Geometry":
        """The same geometry with a permutation of positions applied to inputs."""
        return Geometry(self.channels, self.spatial, self.periodic, self.channels_last, tuple(perm), self.kind)

    def without_perm(self) -> "Geometry":
        return Geometry(self.channels, self.spatial, self.periodic, self.channels_last, None, self.kind)

    # -- serialization -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["spatial"] = list(self.spatial)
        d["perm"] = None if self.perm is None else list(self.perm)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(
            channels=int(d["channels"]),
            spatial=tuple(d["spatial"]),
            periodic=bool(d.get("periodic", False)),
            channels_last=bool(d.get("channels_last", False)),
            perm=None if d.get("perm") is None else tuple(d["perm"]),
            kind=d.get("kind", "image"),
        )

    @classmethod
    def from_shape(cls, shape, periodic: bool = False) -> "Geometry":
        """From an input shape (C, L) or (C, H, W), as given to ``--input-shape``."""
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"input shape must be C,L or C,H,W, got {','.join(map(str, shape))}")
        return cls(channels=shape[0], spatial=shape[1:], periodic=periodic)

    def describe(self) -> str:
        grid = "x".join(map(str, self.spatial))
        if self.channels_last:  # a sequence: T positions, each a vector of C features (one-hot tokens)
            s = f"{grid} positions x {self.channels} features" + (" periodic" if self.periodic else "")
        else:
            s = f"{self.channels}x{grid}" + (" periodic" if self.periodic else "")
        if self.perm is not None:
            s += " shuffled"
        return s
