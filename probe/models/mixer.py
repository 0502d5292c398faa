"""MLP-Mixer on sequences (Tolstikhin et al. 2021): positions are mixed by an MLP over the position axis (one
per channel, shared across channels), channels by an MLP over features (shared across positions).

h_0 = x E (one token table (C x d) at every position; token mixing is position-specific, so no position table);
per block, with H = LN(h) (B, T, d):
    h <- h + (W_2 act(W_1 H^T))^T      token mixing, W_1: T -> token_mult * T
    h <- h + act(LN(h) U_1) U_2         channel mixing, U_1: d -> channel_mult * d
logits = LN(h) W_out at every position when the task asks at every position, else of the mean over positions.
Unlike attention, the token mixing weights are fixed after training: the mixer routes statically.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from probe.models.registry import register
from probe.models.blocks import make_activation
from probe.models.tokens import embed, layout, shared_table_dense


class MixerBlock(nn.Module):
    def __init__(self, T: int, d: int, token_mult: int, channel_mult: int, activation: str):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.tok1, self.tok2 = nn.Linear(T, token_mult * T), nn.Linear(token_mult * T, T)
        self.ch1, self.ch2 = nn.Linear(d, channel_mult * d), nn.Linear(channel_mult * d, d)
        self.act = make_activation(activation)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        t = self.ln1(h).transpose(1, 2)  # (B, d, T): mix along positions
        h = h + self.tok2(self.act(self.tok1(t))).transpose(1, 2)
        return h + self.ch2(self.act(self.ch1(self.ln2(h))))

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        t = self.ln1(h).transpose(1, 2)
        h = h + self.tok2(self.act(self.tok1(t))).transpose(1, 2)
        return self.act(self.ch1(self.ln2(h)))


class Mixer(nn.Module):
    """x (B, T) ids, (B, T, C) or (B, T*C) floats -> logits (B, T, K) or (B, K)."""

    def __init__(self, T: int, C: int, n_out: int, per_position: bool, width: int, depth: int, token_mult: int = 4,
                 channel_mult: int = 4, activation: str = "gelu", tokens: bool = True):
        super().__init__()
        self.T, self.C, self.per_position = T, C, per_position
        # N(0, 1) for token tables as nn.Embedding; Linear's 1/sqrt(fan_in) scale for real-valued inputs
        self.embed = nn.Parameter(torch.randn(C, width) * (1.0 if tokens else 1 / math.sqrt(C)))
        self.blocks = nn.ModuleList(MixerBlock(T, width, token_mult, channel_mult, activation) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = embed(x, self.embed, self.T)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return self.head(h if self.per_position else h.mean(dim=1))

    @torch.no_grad()
    def first_hidden(self, x: torch.Tensor) -> torch.Tensor | None:
        """The first block's channel-mixing neurons averaged over positions, (B, channel_mult * d)."""
        if not self.blocks:
            return None
        return self.blocks[0].hidden(embed(x, self.embed, self.T)).mean(dim=1)

    def first_layer_dense(self) -> torch.Tensor:
        """The token table applied at every position, (T*d) x (T*C), block diagonal."""
        return shared_table_dense(self.embed, self.T)


@register("mixer", "MLP-Mixer: --depth blocks of token mixing and channel mixing, --width channels",
          kinds=("sequence",), uses=("width", "depth"))
def mixer(task, width, depth, param, token_mult: int = 4, channel_mult: int = 4, activation: str = "gelu"):
    if param != "standard":
        raise ValueError("the mixer supports --param standard only")
    if token_mult < 1 or channel_mult < 1:
        raise ValueError(f"token_mult and channel_mult must be >= 1, got {token_mult}, {channel_mult}")
    T, C, per_position = layout(task)
    return Mixer(T, C, task.n_outputs, per_position, width, depth, token_mult, channel_mult, activation,
                 tokens=task.vocab is not None)
