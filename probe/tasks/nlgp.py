"""Non-linear Gaussian process (NLGP) inputs and their Gaussian clone (Ingrosso & Goldt 2022).

z is a Gaussian process on a 1-D or 2-D grid with covariance C_xi(d) = exp(-d^2 / xi^2) (d the grid
distance, circular when periodic), normalized to unit variance. The NLGP pixel is x = erf(g z) / Z(g) with
Z(g)^2 = E[erf(g z)^2] = (2/pi) arcsin(2g^2 / (1 + 2g^2)), so every pixel has unit variance. For unit-variance
z with correlation rho, E[erf(g z1) erf(g z2)] = (2/pi) arcsin(2 g^2 rho / (1 + 2 g^2)), hence

    Cov(x)(s, t) = arcsin(2g^2 C(s,t) / (1 + 2g^2)) / arcsin(2g^2 / (1 + 2g^2)).

The Gaussian clone (``nlgp-gauss``) draws x ~ N(0, Cov(x)) with exactly that covariance: the two tasks
differ only in higher-order statistics. Class 0 has correlation length xi0, class 1 has xi1.

Controls of the higher-order statistics (Lufkin, Saxe & Grant: the localizing term of the
single-neuron dynamics is proportional to (3 - kurtosis) of the marginal): ``nlgp --task-opt kurtosis=K`` keeps
the reference covariance R = Cov(x) above (at the task's gain) and changes only what lies beyond it:

- ``negative`` (default): the erf field itself, excess kurtosis E[x^4] - 3 < 0 (about -1.44 at g = 1, -1.83 at
  g = 3, -> -2 as g grows; 0 at g = 0, where x = z);
- ``zero``: x ~ N(0, R), the Gaussian clone (the same draws as ``nlgp-gauss``);
- ``positive``: a heavy-tailed monotone transform of another Gaussian field, x = sinh(b u) / sqrt(e^{b^2}
  sinh(b^2)), b = :data:`SINH_B`. For unit-variance u with correlation rho, E[sinh(b u1) sinh(b u2)] = e^{b^2}
  sinh(b^2 rho), so Cov(x) = sinh(b^2 C_u) / sinh(b^2) elementwise, and u is drawn with C_u = asinh(R sinh(b^2)) /
  b^2, which gives Cov(x) = R exactly wherever that C_u is positive semi-definite (it is, for every setting we
  tried but gain 0 with xi = 3, where the clipped eigenvalues leave |Cov(x) - R| <= 5e-4; ``info
  ["covariance_error"]`` holds the exact max |Cov(x) - R| of the task). Excess kurtosis (e^{8b^2} - 4 e^{2b^2} + 3)
  / (2 (e^{2b^2} - 1)^2) - 3 = +1.51 at b = 0.5;
- ``elliptical``: x = r g, g ~ N(0, R), r = sqrt((nu - 2) / chi^2_nu) independent of g, one radius per example
  (a multivariate t with nu = :data:`T_DOF` degrees of freedom): E[r^2] = 1, so Cov(x) = R; the direction x/|x| is
  distributed as the Gaussian's, yet x is not Gaussian (marginal excess kurtosis 6 / (nu - 4) = +1 at nu = 10,
  and all pixels share one radius).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.seeding import NLGP_SEED_STRIDE, SAMPLER, stream
from probe.tasks.registry import Task, register


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


SINH_B = 0.5  # the positive control's b: excess kurtosis +1.51, about the mirror of erf's -1.83 at gain 3
T_DOF = 10  # the elliptical control's degrees of freedom: excess kurtosis +1; its 8th moment exists (nu > 8), so
# the measured kurtosis has a finite variance
KURTOSIS = ("negative", "zero", "positive", "elliptical")


def sinh_input_covariance(R: np.ndarray, b: float = SINH_B) -> np.ndarray:
    """C_u = asinh(R sinh(b^2)) / b^2 (elementwise), the covariance of u for which sinh(b u) / sqrt(e^{b^2}
    sinh(b^2)) has covariance R (module docstring), projected onto the PSD cone and rescaled to unit diagonal."""
    Cu = np.arcsinh(R * np.sinh(b * b)) / (b * b)
    lam, V = np.linalg.eigh(Cu)
    Cu = (V * np.clip(lam, 0, None)) @ V.T
    d = np.sqrt(np.diag(Cu))
    return Cu / np.outer(d, d)


def sinh_covariance(Cu: np.ndarray, b: float = SINH_B) -> np.ndarray:
    """Cov(x) = sinh(b^2 C_u) / sinh(b^2) of x = sinh(b u) / sqrt(e^{b^2} sinh(b^2)), u ~ N(0, C_u), unit diagonal."""
    return np.sinh(b * b * Cu) / np.sinh(b * b)


def _sqrt_psd(C: np.ndarray) -> np.ndarray:
    lam, V = np.linalg.eigh(C)
    return V * np.sqrt(np.clip(lam, 0, None))


class _Sampler:
    """Draws (x, y) as a pure function of (seed, step): the same batch on every rerun and after a resume."""

    def __init__(self, factors: list[np.ndarray], gain: float, gaussian: bool, kurtosis: str = "negative"):
        self.factors = [torch.as_tensor(f, dtype=torch.float32) for f in factors]
        self.gain, self.gaussian, self.kurtosis = gain, gaussian, kurtosis
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
        if self.kurtosis == "positive":
            b = SINH_B
            x = torch.sinh(b * x) / math.sqrt(math.exp(b * b) * math.sinh(b * b))
        elif self.kurtosis == "elliptical":  # drawn after eps: the Gaussian part is the zero control's
            chi2 = torch.randn(batch, T_DOF, generator=g).pow(2).sum(1, keepdim=True)
            x = x * torch.sqrt((T_DOF - 2) / chi2).to(device)
        elif not self.gaussian and self.gain > 0:
            a = 2 * self.gain**2 / (1 + 2 * self.gain**2)
            x = torch.erf(self.gain * x) / math.sqrt(2 / math.pi * math.asin(a))
        return x, y


def reference_covariances(dim: int, size: int, xi0: float, xi1: float, gain: float, periodic: bool) -> list[np.ndarray]:
    """The two classes' reference covariances R = Cov(x) of the NLGP at ``gain`` (module docstring), which every
    ``kurtosis`` control keeps."""
    spatial = (int(size),) * int(dim)
    return [nlgp_covariance(gp_covariance(spatial, xi, periodic), gain) for xi in (xi0, xi1)]


def _nlgp_task(name, gaussian, seed, dim, size, xi0, xi1, gain, periodic, n_train, n_test, fresh, kurtosis="negative"):
    if dim not in (1, 2):
        raise ConfigError(f"task {name}: dim must be 1 or 2, got {dim}")
    if size < 2 or xi0 <= 0 or xi1 <= 0 or gain < 0 or n_train < 1 or n_test < 1:
        raise ConfigError(f"task {name}: size >= 2, xi0 > 0, xi1 > 0, gain >= 0, n_train and n_test >= 1 required")
    if kurtosis not in KURTOSIS:
        raise ConfigError(f"task {name}: kurtosis must be one of {', '.join(KURTOSIS)}, got {kurtosis!r}")
    spatial = (int(size),) * int(dim)
    factors, cov_error = [], 0.0
    for xi in (xi0, xi1):
        Cz = gp_covariance(spatial, xi, periodic)
        R = nlgp_covariance(Cz, gain)
        if kurtosis == "positive":
            Cu = sinh_input_covariance(R)
            cov_error = max(cov_error, float(np.abs(sinh_covariance(Cu) - R).max()))
            factors.append(_sqrt_psd(Cu))
        else:
            factors.append(_sqrt_psd(R) if gaussian or kurtosis in ("zero", "elliptical") else _sqrt_psd(Cz))
    sampler = _Sampler(factors, float(gain), gaussian or kurtosis == "zero", kurtosis)
    # fixed sets: train from stream seed+1, test from an independent stream
    x_tr, y_tr = sampler(seed, -1, int(n_train), generator=torch.Generator().manual_seed(NLGP_SEED_STRIDE * seed + 1))
    x_te, y_te = sampler(seed, -2, int(n_test), generator=torch.Generator().manual_seed(NLGP_SEED_STRIDE * seed + 2))
    geo = Geometry(channels=1, spatial=spatial, periodic=bool(periodic))
    info = {"gain": gain, "xi": [xi0, xi1], "gaussian_clone": gaussian}
    if kurtosis != "negative":
        info.update(kurtosis=kurtosis, covariance_error=cov_error)
    return Task(name, x_tr, y_tr, x_te, y_te, geometry=geo, n_outputs=2, info=info, sampler=sampler if fresh else None)


@register("nlgp", "non-linear Gaussian process inputs (erf of a GP), two classes by correlation length")
def nlgp(seed: int = 0, dim: int = 1, size: int = 40, xi0: float = 1.0, xi1: float = 3.0, gain: float = 3.0,
         periodic: bool = True, n_train: int = 10000, n_test: int = 2000, fresh: bool = False,
         kurtosis: str = "negative") -> Task:
    """``kurtosis``: the control of the higher-order statistics at the covariance of this gain (module
    docstring): negative (erf, the NLGP), zero (Gaussian), positive (sinh), elliptical (a random radius)."""
    return _nlgp_task("nlgp", False, seed, dim, size, xi0, xi1, gain, periodic, n_train, n_test, fresh,
                      str(kurtosis).lower())


@register("nlgp-gauss", "Gaussian clone of nlgp: exactly the NLGP covariance, no higher-order statistics")
def nlgp_gauss(seed: int = 0, dim: int = 1, size: int = 40, xi0: float = 1.0, xi1: float = 3.0, gain: float = 3.0,
               periodic: bool = True, n_train: int = 10000, n_test: int = 2000, fresh: bool = False) -> Task:
    return _nlgp_task("nlgp-gauss", True, seed, dim, size, xi0, xi1, gain, periodic, n_train, n_test, fresh)
