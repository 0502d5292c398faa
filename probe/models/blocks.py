"""The MLP's building blocks (plain, or residual bottleneck blocks as in "Scaling MLPs"), registry-free so that every
model can use them.

Parametrizations of the plain MLP:
- ``standard``: PyTorch's defaults (weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
- ``mean-field``: the readout is scaled by 1/width, f(x) = (1/N) sum_i a_i phi(h_i(x)), with readout weights
  a_i ~ N(0, 1), as in the two-layer mean-field literature (Mei, Montanari & Nguyen; Chizat & Bach). With SGD
  every layer's learning rate is multiplied by the width, so that each unit moves O(1) however wide the
  net is. Adam and AdamW normalize the gradient's scale themselves, so there the learning rate is left as is.
"""

from __future__ import annotations

import torch
import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
               "identity": nn.Identity}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """x (B, n) -> depth hidden layers of ``width`` units -> readout (B, n_out). depth=0 is a linear model."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, activation: str = "relu", bias: bool = True,
                 param: str = "standard"):
        super().__init__()
        dims = [n_in] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:]))
        self.act = make_activation(activation)
        self.readout = nn.Linear(dims[-1], n_out, bias=bias)
        self.param, self.width = param, width
        if param == "mean-field" and depth > 0:
            nn.init.normal_(self.readout.weight, std=1.0)
            if bias:
                nn.init.zeros_(self.readout.bias)

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        out = self.readout(x)
        if self.param == "mean-field" and self.layers:
            out = out / self.width
        return out

    def first_layer_dense(self) -> torch.Tensor:
        return (self.layers[0] if self.layers else self.readout).weight.detach()

    def first_layer_module(self) -> nn.Module:
        """The module whose weight is :meth:`first_layer_dense`, linear in the input (the pull differentiates it)."""
        return self.layers[0] if self.layers else self.readout

    def lr_multipliers(self, optimizer: str) -> dict[str, float]:
        if self.param == "mean-field" and optimizer == "sgd" and self.layers:
            return {name: float(self.width) for name, _ in self.named_parameters()}
        return {}


class BottleneckMLP(nn.Module):
    """Residual MLP of "Scaling MLPs" (Bachmann, Anagnostidis & Hofmann 2023): an embedding to ``width``, then
    ``depth`` blocks x + W2 act(W1 LayerNorm(x)) with W1: width -> expansion*width, then LayerNorm and readout."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, expansion: int = 4, activation: str = "gelu"):
        super().__init__()
        self.embed = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, expansion * width), make_activation(activation),
                          nn.Linear(expansion * width, width))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, n_out)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = x + block(x)
        return self.readout(self.norm(x))

    def first_layer_dense(self) -> torch.Tensor:
        return self.embed.weight.detach()

    def first_layer_module(self) -> nn.Module:
        """The module whose weight is :meth:`first_layer_dense`, linear in the input (the pull differentiates it)."""
        return self.embed
