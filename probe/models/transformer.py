"""A small pre-LayerNorm transformer, the attention control for the sequence tasks.

h_0 = x E + P (token table E (C x d) shared by all positions, positions P: learned (one row per position, as
many rows as the longest sequence the task asks, ``info["max_length"]``, else T), sinusoidal (fixed), or none);
h <- h + Attn(LN(h)); h <- h + MLP(LN(h)) per block; logits = LN(h) W_out, at every position when the task asks
at every position, else at the last position (which sees everything, causal or not).

Attention is written out, softmax(Q K^T / sqrt(d_head) + mask) V, rather than through a fused kernel, so that
its maps are there to read: ``model(x, return_attn=True)`` and :meth:`Transformer.attention_maps` give one
(B, heads, T, T) tensor per layer (row = reading position, column = read position).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from probe.models.registry import register
from probe.models.blocks import make_activation
from probe.models.tokens import embed, layout, seq_length, shared_table_dense

POSITIONS = ("learned", "sinusoidal", "none")


def sinusoids(L: int, d: int) -> torch.Tensor:
    """Vaswani et al.'s fixed positions: P[t, 2i] = sin(t / 10000^(2i/d)), P[t, 2i+1] = cos(same), (L, d)."""
    t = torch.arange(L, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    P = torch.zeros(L, d)
    P[:, 0::2], P[:, 1::2] = torch.sin(t * freq), torch.cos(t * freq)[:, : d // 2]
    return P


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool):
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} must be divisible by heads={heads}")
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, d = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        if self.causal:
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        attn = scores.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, T, d)
        return self.proj(out), attn


class Block(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool, mlp_ratio: int, norm: bool, activation: str):
        super().__init__()
        self.ln1 = nn.LayerNorm(d) if norm else nn.Identity()
        self.attn = Attention(d, heads, causal)
        self.ln2 = nn.LayerNorm(d) if norm else nn.Identity()
        self.fc1, self.act, self.fc2 = (nn.Linear(d, mlp_ratio * d), make_activation(activation),
                                        nn.Linear(mlp_ratio * d, d))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, attn = self.attn(self.ln1(h))
        h = h + a
        return h + self.fc2(self.act(self.fc1(self.ln2(h)))), attn


class Transformer(nn.Module):
    """x (B, T) ids, (B, T, C) or (B, T*C) floats -> logits (B, T, K) or (B, K). See the module docstring."""

    def __init__(self, T: int, C: int, n_out: int, per_position: bool, width: int, depth: int, heads: int = 2,
                 causal: bool = True, mlp_ratio: int = 4, norm: bool = True, activation: str = "gelu",
                 tokens: bool = True, positions: str = "learned", max_length: int | None = None):
        super().__init__()
        self.T, self.C, self.per_position, self.positions = T, C, per_position, positions
        # the longest sequence it reads: the position table's rows (positions beyond T are never trained, so a
        # learned table does not generalize to them; sinusoidal and no positions have no such limit)
        self.max_length = max(T, max_length or T) if positions == "learned" else math.inf
        # N(0, 1) tables as nn.Embedding: with GPT-2's std 0.02 the positional heads that mqar needs formed
        # only after thousands of steps (measured: stuck at 25% after 1000 steps, 100% by step 200 with N(0, 1)).
        # A real-valued input (icl) gets Linear's 1/sqrt(fan_in) scale, so features stay of unit scale.
        self.embed = nn.Parameter(torch.randn(C, width) * (1.0 if tokens else 1 / math.sqrt(C)))
        if positions == "learned":
            self.pos = nn.Parameter(torch.randn(self.max_length, width))
        self.blocks = nn.ModuleList(Block(width, heads, causal, mlp_ratio, norm, activation) for _ in range(depth))
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.head = nn.Linear(width, n_out)

    def position_table(self, L: int, device) -> torch.Tensor | float:
        if self.positions == "learned":
            return self.pos[:L]
        if self.positions == "sinusoidal":
            return sinusoids(L, self.embed.shape[1]).to(device)
        return 0.0

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        L = seq_length(x, self.C)
        h = embed(x, self.embed, L) + self.position_table(L, x.device)
        maps = []
        for block in self.blocks:
            h, attn = block(h)
            maps.append(attn)
        h = self.norm(h)
        out = self.head(h if self.per_position else h[:, -1])
        return (out, maps) if return_attn else out

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (B, heads, T, T) map per layer: attention of each reading position (row) over positions."""
        return self(x, return_attn=True)[1]

    @torch.no_grad()
    def first_hidden(self, x: torch.Tensor) -> torch.Tensor | None:
        """The first block's MLP neurons (after the activation) at the last position, (B, mlp_ratio * d)."""
        if not self.blocks:
            return None
        b = self.blocks[0]
        L = seq_length(x, self.C)
        h = embed(x, self.embed, L) + self.position_table(L, x.device)
        h = h + b.attn(b.ln1(h))[0]
        return b.act(b.fc1(b.ln2(h)))[:, -1]

    def first_layer_dense(self) -> torch.Tensor:
        """The token table applied at every position, (T*d) x (T*C), block diagonal (positions add a bias)."""
        return shared_table_dense(self.embed, self.T)


@register("transformer", "pre-LN transformer: --depth layers of --width (d_model), learned positions",
          kinds=("sequence",), uses=("width", "depth"))
def transformer(task, width, depth, param, heads: int = 2, causal: bool = True, mlp_ratio: int = 4, norm: bool = True,
                activation: str = "gelu", positions: str = "learned"):
    if param != "standard":
        raise ValueError("the transformer supports --param standard only")
    if heads < 1 or mlp_ratio < 1:
        raise ValueError(f"heads and mlp_ratio must be >= 1, got {heads}, {mlp_ratio}")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
    T, C, per_position = layout(task)
    return Transformer(T, C, task.n_outputs, per_position, width, depth, heads, causal, mlp_ratio, norm, activation,
                       tokens=task.vocab is not None, positions=positions, max_length=task.info.get("max_length"))
