"""The training loss a task declares (``Task.loss``), as the trainer and the measures of the pull both compute it.

It sits at the bottom of the layers (docs/design.md §2.3): the trainer (:mod:`probe.run.loop`) minimizes it and
the pull (:mod:`probe.metrics.pull`) differentiates it, so neither has to import the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss_fn(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean loss of outputs ``out`` against targets ``y``: ``kind`` "mse", the mean squared error; otherwise
    cross-entropy over classes, with per-position logits (B, T, K) against targets (B, T), where -100 marks a
    position that asks nothing (left out of the mean). Computed in float32 whatever the outputs' dtype."""
    if kind == "mse":
        return F.mse_loss(out.float(), y.float())
    if out.dim() == 3:  # per-position logits (B, T, K) with targets (B, T), -100 = not asked
        return F.cross_entropy(out.float().flatten(0, 1), y.flatten(), ignore_index=-100)
    return F.cross_entropy(out.float(), y)
