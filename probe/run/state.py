"""What a training run holds in memory (:class:`Run`): built by :func:`probe.run.loop.setup`, advanced by
:func:`probe.run.loop.train`, written to its run folder as checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from probe.config import RunConfig
from probe.run.checkpoint import rng_state, save_checkpoint, step_path
from probe.tasks import Task


@dataclass
class Run:
    """Everything a training run holds; built by :func:`setup`, advanced by :func:`train`."""

    cfg: RunConfig
    out: Path
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    step: int = 0
    ckpt_steps: list = field(default_factory=list)
    # training loss summed since the last logged row (on the device), and how many steps it holds; stored in
    # checkpoints so that a resumed run logs exactly the rows an uninterrupted one would
    loss_sum: torch.Tensor | None = None
    n_loss: int = 0
    resumed: bool = False  # restored from a checkpoint (its metrics rows up to ``step`` are already written)

    def checkpoint(self, step: int) -> Path:
        path = step_path(self.out, step)
        save_checkpoint(
            path,
            config=self.cfg.to_dict(),
            geometry=self.task.geometry.to_dict(),
            task_info=self.task.info,
            model=self.cfg.model,
            state_dict={k: v.detach().cpu() for k, v in raw_model(self.model).state_dict().items()},
            step=step,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng_state(),
            loss_accum={"sum": self.loss_sum.detach().cpu(), "n": self.n_loss},
        )
        return path



def raw_model(model):
    return getattr(model, "_orig_mod", model)

