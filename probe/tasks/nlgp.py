"""Non-linear Gaussian process (NLGP) inputs and their Gaussian clone (Ingrosso & Goldt 2022).

z is a Gaussian process on a 1-D or 2-D grid with covariance C_xi(d) = exp(-d^2 / xi^2) (d the grid
distance, circular when periodic), normalized to unit variance. The NLGP pixel is x = erf(g z) / Z(g) with
Z(g)^2 = E[erf(g z)^2] = (2/pi) arcsin(2g^2 / (1 + 2g^2)), so every pixel has unit variance. For unit-variance
z with correlation rho, E[erf(g z1) erf(g z2)] = (2/pi) arcsin(2 g^2 rho / (1 + 2 g^2)), hence

    Cov(x)(s, t) = arcsin(2g^2 C(s,t) / (1 + 2g^2)) / arcsin(2g^2 / (1 + 2g^2)).

The Gaussian clone (``nlgp-gauss``) draws x ~ N(0, Cov(x)) with exactly that covariance: the two tasks
differ only in higher-order statistics. Class 0 has correlation length xi0, class 1 has xi1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.seeding import SAMPLER, stream
from probe.tasks import Task, register


def grid_sq_distances(spatial: tuple[int, ...], periodic: bool) -> np.ndarray:
    """|S| x |S| matrix of squared distances between grid positions (circular per axis when periodic)."""
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij"), -1).reshape(-1, len(spatial))
    diff = np.abs(coords[:, None, :] - coords[None, :, :]).astype(np.float64)
    if periodic:
        sizes = np.asarray(spatial, dtype=np.float64)
        diff = np.minimum(diff, sizes - diff)
    return (diff**2).sum(-1)


def gp_covariance(spatial, xi: float, periodic: bool) -> np.ndarray:
    """Covariance of z: exp(-d^2/xi^2), projected onto the PSD cone and rescaled to unit diagonal.

    On a periodic grid the squared-exponential kernel is not exactly PSD; clipping its negative eigenvalues
    gives the covariance the samples really have, which is what the Gaussian clone must match."""
    C = np.exp(-grid_sq_distances(spatial, periodic) / float(xi) ** 2)
    lam, V = np.linalg.eigh(C)
    C = (V * np.clip(lam, 0, None)) @ V.T
    d = np.sqrt(np.diag(C))
    return C / np.outer(d, d)


def nlgp_covariance(Cz: np.ndarray, gain: float) -> np.ndarray:
    """Cov(x) of x = erf(g z)/Z(g) for unit-variance z with covariance Cz (module docstring)."""
    if gain == 0:
        return Cz.copy()
    a = 2 * gain**2 / (1 + 2 * gain**2)
    return np.arcsin(np.clip(a * Cz, -1, 1)) / np.arcsin(a)


def _sqrt_psd(C: np.ndarray) -> np.ndarray:
    lam, V = np.linalg.eigh(C)
    return V * np.sqrt(np.clip(lam, 0, None))


class _Sampler:
    """Draws (x, y) as a pure function of (seed, step): the same batch on every rerun and after a resume."""

    def __init__(self, factors: list[np.ndarray], gain: float, gaussian: bool):
        self.factors = [torch.as_tensor(f, dtype=torch.float32) for f in factors]
        self.gain, self.gaussian = gain, gaussian
        self._on: dict = {}

    def _factors(self, device):
        key = str(device)
        if key not in self._on:
            self._on[key] = [f.to(device) for f in self.factors]
        return self._on[key]

    def __call__(self, seed: int, step: int, batch: int, device="cpu", generator: torch.Generator | None = None):
        g = generator or stream(seed, SAMPLER + int(step))
        y = torch.randint(0, 2, (batch,), generator=g)
        eps = torch.randn(batch, self.factors[0].shape[0], generator=g)
        facs = self._factors(device)
        y, eps = y.to(device), eps.to(device)
        x = torch.where(y[:, None] == 0, eps @ facs[0].T, eps @ facs[1].T)
        if not self.gaussian and self.gain > 0:
            a = 2 * self.gain**2 / (1 + 2 * self.gain**2)
            x = torch.erf(self.gain * x) / math.sqrt(2 / math.pi * math.asin(a))
        return x, y


def _nlgp_task(name, gaussian, seed, dim, size, xi0, xi1, gain, periodic, n_train, n_test, fresh):
    if dim not in (1, 2):
        raise ConfigError(f"task {name}: dim must be 1 or 2, got {dim}")
    if size < 2 or xi0 <= 0 or xi1 <= 0 or gain < 0 or n_train < 1 or n_test < 1:
        raise ConfigError(f"task {name}: size >= 2, xi0 > 0, xi1 > 0, gain >= 0, n_train and n_test >= 1 required")
    spatial = (int(size),) * int(dim)
    factors = []
    for xi in (xi0, xi1):
        Cz = gp_covariance(spatial, xi, periodic)
        factors.append(_sqrt_psd(nlgp_covariance(Cz, gain)) if gaussian else _sqrt_psd(Cz))
    sampler = _Sampler(factors, float(gain), gaussian)
    # fixed sets: train from stream seed+1, test from an independent stream
    x_tr, y_tr = sampler(seed, -1, int(n_train), generator=torch.Generator().manual_seed(10_007 * seed + 1))
    x_te, y_te = sampler(seed, -2, int(n_test), generator=torch.Generator().manual_seed(10_007 * seed + 2))
    geo = Geometry(channels=1, spatial=spatial, periodic=bool(periodic))
    info = {"gain": gain, "xi": [xi0, xi1], "gaussian_clone": gaussian}
    return Task(name, x_tr, y_tr, x_te, y_te, geometry=geo, n_outputs=2, info=info, sampler=sampler if fresh else None)


@register("nlgp", "non-linear Gaussian process inputs (erf of a GP), two classes by correlation length")
def nlgp(seed: int = 0, dim: int = 1, size: int = 40, xi0: float = 1.0, xi1: float = 3.0, gain: float = 3.0,
         periodic: bool = True, n_train: int = 10000, n_test: int = 2000, fresh: bool = False) -> Task:
    return _nlgp_task("nlgp", False, seed, dim, size, xi0, xi1, gain, periodic, n_train, n_test, fresh)


@register("nlgp-gauss", "Gaussian clone of nlgp: exactly the NLGP covariance, no higher-order statistics")
def nlgp_gauss(seed: int = 0, dim: int = 1, size: int = 40, xi0: float = 1.0, xi1: float = 3.0, gain: float = 3.0,
               periodic: bool = True, n_train: int = 10000, n_test: int = 2000, fresh: bool = False) -> Task:
    return _nlgp_task("nlgp-gauss", True, seed, dim, size, xi0, xi1, gain, periodic, n_train, n_test, fresh)
