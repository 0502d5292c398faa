"""Inputs and outputs of the sequence models, and the MLP on a flattened sequence.

A sequence task's input is T positions x C features (geometry ``channels_last``): token ids (B, T) when the task
has a vocabulary (C = vocab; a token is read as its one-hot vector), or real features (B, T*C)
(icl-regression). Every sequence model also accepts a float tensor (B, T, C), a one-hot or any soft input,
so that the routing measures can differentiate the output with respect to the input at each position.

Outputs: (B, T, K) logits when the task asks something at every position (targets (N, T)), otherwise (B, K).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from probe.models.blocks import MLP


def layout(task) -> tuple[int, int, bool]:
    """(T, C, per_position) of a sequence task."""
    geo = task.geometry
    if geo.ndim != 1 or not geo.channels_last:
        raise ValueError(f"sequence models need a 1-D positions x features geometry, got {geo.describe()}")
    per_position = task.loss == "ce" and task.y_train.dim() == 2
    return geo.spatial[0], geo.channels, per_position


def as_features(x: torch.Tensor, T: int, C: int) -> torch.Tensor:
    """Any accepted input as float (B, T, C): token ids become one-hot vectors."""
    if not x.is_floating_point():
        return F.one_hot(x, C).float()
    return x.reshape(len(x), T, C)


def seq_length(x: torch.Tensor, C: int) -> int:
    """The number of positions L of any accepted input: ids (B, L), floats (B, L, C) or (B, L*C)."""
    if not x.is_floating_point() or x.dim() == 3:
        return x.shape[1]
    return x.shape[1] // C


def embed(x: torch.Tensor, table: torch.Tensor, T: int) -> torch.Tensor:
    """x (B, T) ids or float (B, T, C) / (B, T*C) times a table (C, d) shared across positions -> (B, T, d).
    A lookup for ids (the same numbers as one-hot @ table, without building the one-hot)."""
    if not x.is_floating_point():
        return F.embedding(x, table)
    return x.reshape(len(x), T, table.shape[0]) @ table


def shared_table_dense(table: torch.Tensor, T: int) -> torch.Tensor:
    """A table (C, d) applied at every position as one dense (T*d) x (T*C) matrix: block diagonal, unit (t, j)
    reads only position t, through the same projection at every t."""
    return torch.block_diag(*[table.detach().T] * T)


class TokenMLP(nn.Module):
    """The MLP under study on a whole sequence: f(x) = MLP(flatten(e(x))), outputs reshaped to (B, T, K) when
    the task asks at every position.

    ``embed_dim = 0``: e(x) is the one-hot (or real) input itself, so the first Linear layer W (m x T*C) is the
    dense first layer over the geometry. ``embed_dim = e > 0``: a learned linear embedding E_t (C x e) per
    position, not shared across positions unless ``share_embed`` (then one E at every position); the dense
    first layer is then the exact composition W_1 blockdiag(E_1 .. E_T) (m x T*C), a linear map of the input.
    """

    def __init__(self, T: int, C: int, n_out: int, per_position: bool, width: int, depth: int,
                 activation: str = "relu", bias: bool = True, param: str = "standard", embed_dim: int = 0,
                 share_embed: bool = False):
        super().__init__()
        if embed_dim < 0:
            raise ValueError(f"embed_dim must be >= 0, got {embed_dim}")
        self.T, self.C, self.K, self.per_position = T, C, n_out, per_position
        self.tables = None
        if embed_dim:
            # N(0, 1) like nn.Embedding: a one-hot input then gives unit-scale features
            self.tables = nn.Parameter(torch.randn(1 if share_embed else T, C, embed_dim))
        n_in = T * (embed_dim or C)
        self.mlp = MLP(n_in, T * n_out if per_position else n_out, width, depth, activation, bias, param)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = as_features(x, self.T, self.C)
        if self.tables is not None:
            h = torch.einsum("btc,tce->bte", h, self.tables.expand(self.T, -1, -1))
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.features(x))
        return out.reshape(len(out), self.T, self.K) if self.per_position else out

    def first_layer_dense(self) -> torch.Tensor:
        W = self.mlp.first_layer_dense()
        if self.tables is None:
            return W
        m = W.shape[0]
        E = self.tables.detach().expand(self.T, -1, -1)  # (T, C, e)
        return torch.einsum("mte,tce->mtc", W.reshape(m, self.T, -1), E).reshape(m, self.T * self.C)

    @torch.no_grad()
    def first_hidden(self, x: torch.Tensor) -> torch.Tensor | None:
        """Activations of the first hidden layer's units, (B, m); None for a linear model."""
        if not self.mlp.layers:
            return None
        return self.mlp.act(self.mlp.layers[0](self.features(x)))

    def lr_multipliers(self, optimizer: str) -> dict[str, float]:
        return {f"mlp.{k}": v for k, v in self.mlp.lr_multipliers(optimizer).items()}


def token_mlp(task, width, depth, param, activation, bias, arch, embed_dim, share_embed) -> TokenMLP:
    if arch != "plain":
        raise ValueError("sequence tasks take arch=plain only")
    T, C, per_position = layout(task)
    return TokenMLP(T, C, task.n_outputs, per_position, width, depth, activation, bias, param, embed_dim, share_embed)
