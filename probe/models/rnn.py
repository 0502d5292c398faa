"""A recurrent network, the recurrence control for the sequence tasks.

h_t = cell(x_t, h_{t-1}) for t = 0 .. L-1 from h_{-1} = 0, with ``cell`` one of torch.nn's ``elman`` (nn.RNN:
h_t = act(W_ih x_t + W_hh h_{t-1} + b)), ``gru`` (nn.GRU) or ``lstm`` (nn.LSTM); ``--depth`` stacked layers of
``--width`` units. x_t is the token's one-hot vector (or the real features of icl-regression); logits = W_out h_t
at every position when the task asks at every position, else at the last one.

The input-to-hidden weights W_ih (gates x width rows, C columns) are shared across time: every position is read
through the same matrix, the recurrent analogue of a convolution's shared kernel. :meth:`RNN.first_layer_dense`
writes them as the dense first layer over the geometry, the same block at every position (block diagonal), as
the transformer's token table is. The network reads sequences of any length (``max_length`` is infinite), which
is what the length-generalization tests of the recurrence tasks need.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from probe.models.registry import register
from probe.models.tokens import layout, shared_table_dense

CELLS = {"elman": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RNN(nn.Module):
    """x (B, L) ids, (B, L, C) or (B, L*C) floats -> logits (B, L, K) or (B, K), for any length L."""

    max_length = math.inf

    def __init__(self, T: int, C: int, n_out: int, per_position: bool, width: int, depth: int, cell: str = "gru",
                 activation: str = "tanh"):
        super().__init__()
        self.T, self.C, self.per_position, self.cell = T, C, per_position, cell
        kw = {"nonlinearity": activation} if cell == "elman" else {}
        self.rnn = CELLS[cell](C, width, num_layers=depth, batch_first=True, **kw)
        self.head = nn.Linear(width, n_out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return F.one_hot(x, self.C).float()
        return x if x.dim() == 3 else x.reshape(len(x), -1, self.C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # cuDNN's RNN has no backward in eval mode; the routing and recurrence measures differentiate the
        # eval-mode model with respect to its inputs, so they get the native kernel (the same function)
        native = torch.is_grad_enabled() and not self.training and h.is_cuda
        with torch.backends.cudnn.flags(enabled=not native):
            out, _ = self.rnn(h)
        return self.head(out if self.per_position else out[:, -1])

    def first_layer_dense(self) -> torch.Tensor:
        """W_ih of the first layer at every position, (T * gates * width) x (T * C), block diagonal."""
        return shared_table_dense(self.rnn.weight_ih_l0.T, self.T)


@register("rnn", "recurrent network (cell elman, gru or lstm): --depth layers of --width units, read token by "
          "token; any sequence length", kinds=("sequence",))
def rnn(task, width, depth, param, cell: str = "gru", activation: str = "tanh"):
    if param != "standard":
        raise ValueError("the rnn supports --param standard only")
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    if activation not in ("tanh", "relu"):
        raise ValueError(f"activation (elman cells) must be tanh or relu, got {activation!r}")
    if activation != "tanh" and cell != "elman":
        raise ValueError(f"activation applies to elman cells only ({cell} has its own gates)")
    if depth < 1:
        raise ValueError(f"the rnn needs --depth >= 1 (recurrent layers), got {depth}")
    T, C, per_position = layout(task)
    return RNN(T, C, task.n_outputs, per_position, width, depth, cell, activation)
