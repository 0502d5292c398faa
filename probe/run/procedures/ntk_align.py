"""``ntk_align``: a reference CNN trained first, then the run's model with the centred alignment of its empirical
NTK with the CNN's, and with the labels, in its metrics rows. The alignments are
:func:`probe.metrics.kernels.ntk_alignment`; :class:`NTKAlignment` only decides at which steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from probe.config import ConfigError, RunConfig
from probe.metrics.kernels import cka, empirical_ntk, label_kernel, ntk_alignment
from probe.models import model_specs
from probe.run.metrics_file import read_metrics
from probe.run.loop import evaluate, setup, train_or_resume
from probe.run.procedures.common import STAGES, last_state_dict
from probe.tasks import make_task


NTK_SUBSET_SEED = 0  # one fixed subset for every run, seed and model: their kernels are compared on the same inputs


def ntk_subset(task, n: int) -> torch.Tensor:
    """Indices of the fixed ``n`` training examples the kernels are computed on (all when there are fewer): the first
    n of a permutation seeded by :data:`NTK_SUBSET_SEED`, whatever the run's seed, sorted."""
    N = len(task.x_train)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(NTK_SUBSET_SEED))
    return perm[: min(n, N)].sort().values


class NTKAlignment:
    """Training hook: on the fixed inputs ``x`` (labels ``y``), the model's empirical NTK K_t read against a
    reference kernel (:func:`probe.metrics.kernels.ntk_alignment`: ``ntk_cka`` = CKA(K_t, K_ref), ``ntk_kta`` =
    KTA(K_t, y), ``ntk_input_cka`` = CKA(K_t, X X^T)), at steps that are multiples of ``every``, at step 0 and at
    ``last``. The label kernel and the Gram matrix are made once, here (``labels``, ``gram``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, ref_kernel: np.ndarray, every: int,
                 last: int):
        self.x, self.labels, self.ref = x, label_kernel(y.cpu().numpy(), n_classes), ref_kernel
        X = x.double().cpu().numpy()
        self.gram = X @ X.T
        self.every, self.last = every, last

    def __call__(self, step, model):
        if step % self.every and step not in (0, self.last):
            return {}
        return ntk_alignment(model, self.x.to(next(model.parameters()).device), self.ref, self.labels, self.gram)


def ntk_align(cfg: RunConfig, out: Path, ref: str = "cnn", ref_opts: dict | None = None, ref_steps: int | None = None,
              ref_seed: int | None = None, examples: int = 512, every: int = 0):
    """Kernel alignment with a trained reference network. A ``ref`` model (cnn by default, ``ref_opts``; for mlp,
    cfg's width and depth) is trained with ``cfg``'s settings for ``ref_steps`` steps (default ``cfg.steps``; 0: its
    initialization) at seed ``ref_seed`` (default the run's) into ``stages/ref``; its empirical NTK K_ref on a fixed
    subset of ``examples`` training inputs (:func:`ntk_subset`: the same inputs for every run) is the reference.
    Then ``cfg``'s model (an MLP, an LCN, a CNN ...) trains into ``out`` with :class:`NTKAlignment` writing
    ``ntk_cka`` (CKA of its NTK with K_ref), ``ntk_kta`` (its kernel-target alignment) and ``ntk_input_cka`` into
    the metrics rows at multiples of ``every`` (0: every evaluation, ``eval_every``), step 0 and the last step. On
    one loaded CPU core, on 512 MNIST-1D inputs: an MLP 40-100-100-10 0.2 s, an LCN of 16 channels 1.4 s, a CNN of
    16 (32) channels 0.9 (3.8) s (its kernels by per-example Jacobians), so a CNN subject wants a sparse ``every``.
    The null of ``ntk_cka``: the same run against a reference of the subject's own kind at another seed (``ref=mlp``,
    ``ref_seed``): how alike two independently trained kernels of one architecture are.

    Results: ``ntk_cka``, ``ntk_kta`` at the end and at step 0 (``@init``), ``ntk_input_cka`` at the end; the
    reference's ``ref_kta`` and ``ref_test_acc``; two references without learning: ``input_kta`` (KTA of the input
    Gram matrix X X^T) and ``ref_input_cka`` (CKA of K_ref with X X^T); ``examples`` (how many inputs).
    """
    every = every or cfg.eval_every
    if examples < 2 or every < 0 or (every % cfg.log_every and every % cfg.eval_every):
        raise ConfigError(f"procedure ntk_align: examples >= 2 and every a multiple of log_every ({cfg.log_every}) or "
                          f"eval_every ({cfg.eval_every}) required; got examples={examples}, every={every}")
    if ref not in model_specs():
        raise ConfigError(f"procedure ntk_align: unknown ref model {ref!r}; valid: {', '.join(sorted(model_specs()))}")
    if (ref_steps is not None and ref_steps < 0) or (ref_seed is not None and ref_seed < 0):
        raise ConfigError(f"procedure ntk_align: ref_steps and ref_seed must be >= 0, got {ref_steps}, {ref_seed}")
    task = make_task(cfg.task, cfg.task_opts, seed=cfg.seed)
    if task.geometry.kind != "image" or task.loss != "ce" or task.y_train.dim() != 1:
        raise ConfigError(f"procedure ntk_align: task {cfg.task} is not an image classification task (one class per "
                          "example): the kernel-target alignment needs class labels, the reference a grid")
    out = Path(out)
    ref_cfg = cfg.replace(model=ref, model_opts=dict(ref_opts or {}), steps=max(ref_steps or cfg.steps, 1),
                          seed=cfg.seed if ref_seed is None else ref_seed)
    ref_dir = out / STAGES / "ref"
    if ref_steps != 0:
        ref_row = train_or_resume(ref_cfg, ref_dir)
    ref_run = setup(ref_cfg, ref_dir)  # the seeded initialization (nothing is written)
    if ref_steps != 0:
        ref_run.model.load_state_dict(last_state_dict(ref_dir))
    else:
        ref_row = evaluate(ref_run.model, ref_run.task.x_test, ref_run.task.y_test, ref_run.task.loss)
        ref_row = {"test_acc": ref_row.get("acc")}
    idx = ntk_subset(task, examples)
    x, y = task.x_train[idx], task.y_train[idx]
    K_ref = empirical_ntk(ref_run.model, x.to(ref_run.device))
    hook = NTKAlignment(x, y, task.n_outputs, K_ref, every, cfg.steps)
    row = train_or_resume(cfg, out, hooks=(hook,), task=task)
    rows = [r for r in read_metrics(out) if "ntk_cka" in r]
    results = {"ntk_cka": rows[-1]["ntk_cka"], "ntk_kta": rows[-1]["ntk_kta"], "ntk_cka@init": rows[0]["ntk_cka"],
               "ntk_kta@init": rows[0]["ntk_kta"], "ntk_input_cka": rows[-1]["ntk_input_cka"],
               "ref_kta": cka(K_ref, hook.labels), "ref_test_acc": ref_row.get("test_acc"),
               "input_kta": cka(hook.gram, hook.labels), "ref_input_cka": cka(K_ref, hook.gram),
               "examples": len(idx)}
    return row, results

