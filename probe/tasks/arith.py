"""The "add two numbers" end of the spectrum: a rule an engineer would write down at once.

``add``: D real inputs, each uniform on [low, high]; the target is y = op(x_a, x_b) + noise * eps (eps ~ N(0, 1)),
trained with MSE, where a, b are the two ``positions`` (default the first two) and op is ``add`` (x_a + x_b),
``mul`` (x_a * x_b) or ``max``. The other D - 2 inputs are irrelevant: a network that reads only x_a and x_b has
every other first-layer weight at zero, which is what ``relevant_weight_mass`` measures
(:mod:`probe.metrics.arith`).

Splits: ``n_train`` and ``n_test`` examples from the training range, and an extrapolation split of ``n_test``
examples (``extras["x_extrap"]``, ``extras["y_extrap"]``) whose every input lies outside it, uniform on
[low - w, low) or (high, high + w] with w = high - low (either side with probability 1/2). Every split's labels
carry the same noise, so the exact rule's error is the noise variance, the least any learner can reach.
``info``: ``relevant`` (the positions), ``op``, the variance of each split's targets (``var_test``,
``var_extrap``: errors are read relative to them) and ``family = "arith"`` (which functional measures apply).

The geometry is 1 x D (kind ``image``: the plain MLP reads it as it is, and the first-layer measures apply).
"""

from __future__ import annotations

import re

import torch

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.seeding import TEST_SET, TRAIN_SET, stream
from probe.tasks.registry import Task, register

OPS = {"add": torch.add, "mul": torch.mul, "max": torch.maximum}
EXTRAP_SET = TEST_SET + 2000  # the extrapolation split's stream


def parse_positions(positions, D: int) -> list[int]:
    """``"0,1"`` (or ``[0, 1]``, or its string) as two distinct positions in [0, D)."""
    found = [int(p) for p in re.findall(r"-?\d+", str(positions))]
    if len(found) != 2 or found[0] == found[1] or not all(0 <= p < D for p in found):
        raise ConfigError(f"task add: positions must be two distinct positions in [0, {D}), e.g. 0,1; "
                          f"got {positions!r}")
    return found


def gen_arith(g, n, D, relevant, low, high, noise, op, outside=False):
    """(x (n, D), y (n, 1)): inputs uniform on [low, high], or outside it (module docstring)."""
    w = high - low
    u = torch.rand(n, D, generator=g, dtype=torch.float64) * w
    if outside:
        # [low - w, low) or [high, high + w)
        x = torch.where(torch.rand(n, D, generator=g) < 0.5, low - w + u, high + u)
    else:
        x = low + u
    y = OPS[op](x[:, relevant[0]], x[:, relevant[1]]) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x.float(), y[:, None].float()


@register("add", "add two numbers: y = op(x_a, x_b) of D uniform inputs (op add, mul or max), MSE; an "
          "extrapolation split outside the training range")
def add(seed: int = 0, D: int = 16, positions: str = "0,1", low: float = -1.0, high: float = 1.0, noise: float = 0.0,
        op: str = "add", n_train: int = 1000, n_test: int = 2000) -> Task:
    if op not in OPS:
        raise ConfigError(f"task add: op must be one of {', '.join(OPS)}, got {op!r}")
    if D < 2 or n_train < 1 or n_test < 1:
        raise ConfigError(f"task add: need D >= 2, n_train >= 1 and n_test >= 1, got {D}, {n_train}, {n_test}")
    if not high > low or noise < 0:
        raise ConfigError(f"task add: need high > low and noise >= 0, got low={low}, high={high}, noise={noise}")
    rel = parse_positions(positions, D)
    params = dict(D=D, relevant=rel, low=low, high=high, noise=noise, op=op)
    x_tr, y_tr = gen_arith(stream(seed, TRAIN_SET), n_train, **params)
    x_te, y_te = gen_arith(stream(seed, TEST_SET), n_test, **params)
    x_ex, y_ex = gen_arith(stream(seed, EXTRAP_SET), n_test, **params, outside=True)
    info = {"family": "arith", "op": op, "D": D, "relevant": rel, "low": low, "high": high, "noise": noise,
            "var_test": float(y_te.var()), "var_extrap": float(y_ex.var())}
    return Task("add", x_tr, y_tr, x_te, y_te, geometry=Geometry(1, (D,)), n_outputs=1, loss="mse", info=info,
                extras={"x_extrap": x_ex, "y_extrap": y_ex})
