"""``ecnn``: a CNN trained first, embedded exactly into an MLP (d'Ascoli et al. 2019) and trained on as an MLP; then
the loss along the straight line from it to a plain MLP of the same shape and the same step budget, after aligning
the plain MLP's hidden units to it (weight matching), and the distance of its layers to the convolutions of its
known unit layout. The embedding (:func:`embed_local_net`, :func:`embedded_cnn`) is the first stage of
``stability`` too."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from probe.config import ConfigError, RunConfig
from probe.metrics.equivariance import conv_layout
from probe.metrics.interpolation import line_barrier, match_hidden_units
from probe.metrics.symmetry import complement_norm, subspace_distances
from probe.models.conv import LocallyConnected, conv_layouts, local_dense, out_size
from probe.run.metrics_file import read_metrics
from probe.run.loop import evaluate, setup, train_or_resume
from probe.run.procedures.common import STAGES, last_state_dict, load_weights, save_json
from probe.run.tracking import write_layout


def embed_local_net(model) -> tuple[int, int, dict]:
    """(width, depth, MLP state_dict) of the MLP that computes exactly what ``model`` (a cnn or lcn LocalNet)
    computes: each local layer becomes its dense matrix (:func:`probe.models.conv.local_dense`), hidden unit
    (o, p) = row o*P + p, the bias of channel o repeated over positions; the readout is copied (a pooled readout,
    of the channels' means over P positions, becomes each channel's weight / P at every position)."""
    state, widths = {}, []
    spatial = model.geometry.spatial
    for i, layer in enumerate(model.layers):
        if isinstance(layer, LocallyConnected):
            M, b = layer.dense(), layer.bias.detach().reshape(-1)
            spatial = layer.out_spatial
        else:
            k, s, pad = layer.kernel_size[0], layer.stride[0], layer.padding[0]
            outs = tuple(out_size(n, k, s, pad) for n in spatial)
            P = math.prod(outs)
            w = layer.weight.detach()
            M = local_dense(w.unsqueeze(1).expand(w.shape[0], P, *w.shape[1:]), spatial, s, pad, model.circular)
            b = layer.bias.detach().repeat_interleave(P)
            spatial = outs
        state[f"layers.{i}.weight"], state[f"layers.{i}.bias"] = M.clone(), b.clone()
        widths.append(M.shape[0])
    if len(set(widths)) != 1:
        raise ConfigError(f"embedding the CNN into an MLP: its layers have widths {widths} (channels x positions); an "
                          "MLP has one width, so give the CNN stride 1 after its first layer and equal channels")
    R = model.readout.weight.detach()
    if getattr(model, "pool", False):  # a readout of the channels' means: each channel's weight over its positions
        P = math.prod(spatial)
        R = R.repeat_interleave(P, dim=1) / P
    state["readout.weight"] = R.clone()
    state["readout.bias"] = model.readout.bias.detach().clone()
    return widths[0], len(widths), state




def conv_subspace_distances(state: dict, layouts: list[tuple]) -> dict[str, float]:
    """The distance of an embedded MLP's layers (state ``layers.i.weight``) to the convolutions of their known unit
    layouts (``layouts``: :func:`probe.models.conv.conv_layouts`), by :func:`probe.metrics.symmetry.subspace_distances`:
    ``conv_subspace_distance`` of the first layer, and ``conv_subspace_distance_all`` over all embedded layers
    together (sqrt of the summed squared residuals over the summed squared norms)."""
    norms = [complement_norm(state[f"layers.{i}.weight"].detach().double().cpu().numpy(), conv_layout(*layout))
             for i, layout in enumerate(layouts)]
    shares, pooled = subspace_distances(norms)
    return {"conv_subspace_distance": shares[0], "conv_subspace_distance_all": pooled}


def embedded_cnn(cfg: RunConfig, out: Path, cnn_steps: int, source: str = "cnn", source_opts: dict | None = None):
    """The first stage of ``ecnn`` and ``stability``: a ``source`` net (cnn or lcn, ``source_opts``) with ``cfg``'s
    training settings, trained for ``cnn_steps`` steps into ``out/stages/cnn`` (0: its seeded initialization, nothing
    written), and its exact MLP embedding. Returns (the net on the CPU, width, depth, MLP state_dict, layouts of
    :func:`conv_layouts`)."""
    cnn_cfg = cfg.replace(model=source, model_opts=dict(source_opts or {}), steps=max(cnn_steps, 1))
    if cnn_steps:
        train_or_resume(cnn_cfg, out / STAGES / "cnn")
    cnn = setup(cnn_cfg, out / STAGES / "cnn").model.cpu()  # the seeded initialization (nothing is written)
    if cnn_steps:
        cnn.load_state_dict(last_state_dict(out / STAGES / "cnn"))
    width, depth, state = embed_local_net(cnn)
    return cnn, width, depth, state, conv_layouts(cnn)


def ecnn(cfg: RunConfig, out: Path, cnn_steps: int = 1000, source: str = "cnn", source_opts: dict | None = None,
         interpolate: bool = True, points: int = 11, equal_budget: bool = True, align: bool = True):
    """Train a CNN (``source`` = cnn or lcn with ``source_opts``, otherwise ``cfg``'s settings) for ``cnn_steps`` steps
    (0: its initialization) in ``stages/cnn``; embed it into an MLP (:func:`embed_local_net`: width and depth come
    from the CNN, whatever ``cfg`` says) and train that MLP with ``cfg`` into ``out``. With ``interpolate``, also
    train a plain MLP of the same shape and seed (``stages/mlp``), for ``cnn_steps + cfg.steps`` steps with
    ``equal_budget`` (the eCNN's whole budget: its CNN's steps and its own), else ``cfg.steps``; align its hidden
    units to the eCNN's (:func:`~probe.metrics.interpolation.match_hidden_units`, with ``align``) and evaluate the
    loss at ``points`` points on the straight line theta(a) = (1 - a) theta_eCNN + a theta_MLP
    (``out/interpolation.json``). The null of that line is the same line between two plain MLPs that differ only in
    their seed (``stages/mlp`` and ``stages/mlp_null``, seed + NULL_SEED_OFFSET, the same budget), the second
    aligned to the first: independent solutions of one network are separated by a barrier too, so a barrier says
    "another basin" only where it exceeds it.

    Results: ``width``, ``depth``, ``cnn_test_acc``, ``mlp_test_acc``, ``mlp_steps``; ``line_barrier`` (the largest
    excess of the test loss on the line over the straight interpolation of its end values), ``line_barrier_train``
    and ``line_error_barrier`` (the same for the test error, 1 - accuracy: unlike the loss it does not grow with the
    confidence of wrong answers, and aligned midpoints are confident), after alignment, with their nulls
    ``line_barrier@mlps``, ``line_barrier_train@mlps`` and ``line_error_barrier@mlps``, and the same without
    alignment (``*_unaligned``); ``conv_subspace_distance`` and
    ``conv_subspace_distance_all`` (:func:`conv_subspace_distances`: the distance of the final eCNN's embedded
    layers to the convolutions of their known unit layout) with their values at the eCNN's step 0 (``@init``: 0
    for a cnn source, the unshared part for an lcn source) and for the plain MLP read in the same layout
    (``@mlp``)."""
    if cfg.model != "mlp" or cfg.param != "standard" or cfg.model_opts:
        raise ConfigError("procedure ecnn: the run must be a plain model=mlp, param=standard, without model_opts "
                          "(the CNN goes in procedure_opts.source and source_opts)")
    if cnn_steps < 0 or source not in ("cnn", "lcn") or points < 2:
        raise ConfigError(f"procedure ecnn: cnn_steps >= 0, source cnn or lcn, points >= 2 required; got "
                          f"cnn_steps={cnn_steps}, source={source!r}, points={points}")
    out = Path(out)
    _, width, depth, state, layouts = embedded_cnn(cfg, out, cnn_steps, source, source_opts)
    for folder in (out, *((out / STAGES / "mlp", out / STAGES / "mlp_null") if interpolate else ())):
        write_layout(folder, layouts[0])
    mlp_cfg = cfg.replace(width=width, depth=depth)
    row = train_or_resume(mlp_cfg, out, prepare=load_weights(state))
    # step 0 of the eCNN computes the CNN's function: its first row holds the CNN's accuracy after cnn_steps
    first = read_metrics(out)[0]
    final = last_state_dict(out)
    results = {"width": width, "depth": depth, "cnn_test_acc": first.get("test_acc"),
               **conv_subspace_distances(final, layouts),
               **{f"{k}@init": v for k, v in conv_subspace_distances(state, layouts).items()}}
    if interpolate:
        plain_cfg = mlp_cfg.replace(steps=cfg.steps + cnn_steps) if equal_budget else mlp_cfg
        results["mlp_steps"] = plain_cfg.steps
        results["mlp_test_acc"] = train_or_resume(plain_cfg, out / STAGES / "mlp").get("test_acc")
        task_model = setup(mlp_cfg, out)  # task and an MLP of the right shape, on cfg's device
        train_or_resume(plain_cfg.replace(seed=cfg.seed + NULL_SEED_OFFSET), out / STAGES / "mlp_null")
        plain = last_state_dict(out / STAGES / "mlp")
        other = last_state_dict(out / STAGES / "mlp_null")
        results.update({f"{k}@mlp": v for k, v in conv_subspace_distances(plain, layouts).items()})
        lines = {}
        for tag, aligned in (("", align), ("_unaligned", False)):
            b = match_hidden_units(final, plain) if aligned else plain
            b_null = match_hidden_units(plain, other) if aligned else other
            line = loss_on_line(task_model.model, task_model.task, final, b, points)
            null = loss_on_line(task_model.model, task_model.task, plain, b_null, points)
            lines[tag] = {**line, "null": null}
            for key, losses in (("line_barrier", "test_loss"), ("line_barrier_train", "train_loss")):
                results[f"{key}{tag}"] = line_barrier(line[losses], line["alpha"])
                results[f"{key}{tag}@mlps"] = line_barrier(null[losses], null["alpha"])
            if None not in line["test_acc"] + null["test_acc"]:  # the test error's barrier (classification)
                for suffix, ln in (("", line), ("@mlps", null)):
                    results[f"line_error_barrier{tag}{suffix}"] = line_barrier([1 - a for a in ln["test_acc"]],
                                                                               ln["alpha"])
            if not align:
                break
        save_json(out / "interpolation.json", {**lines[""], "aligned": align,
                                                **({"unaligned": lines["_unaligned"]} if align else {})})
    return row, results


NULL_SEED_OFFSET = 10_000  # the second plain MLP of ecnn's null line: a seed no preset's grid uses


def loss_on_line(model, task, a: dict, b: dict, points: int = 11) -> dict:
    """Train and test loss (and accuracy) of ``model`` with weights (1 - alpha) a + alpha b, alpha in [0, 1]."""
    alphas = np.linspace(0, 1, points)
    line = {"alpha": alphas.tolist(), "train_loss": [], "test_loss": [], "test_acc": []}
    dev = next(model.parameters()).device
    for t in alphas:
        model.load_state_dict({k: ((1 - t) * a[k].float() + t * b[k].float()).to(dev) for k in a})
        te = evaluate(model, task.x_test, task.y_test, task.loss)
        tr = evaluate(model, task.x_train[:5000], task.y_train[:5000], task.loss)
        line["train_loss"].append(tr["loss"])
        line["test_loss"].append(te["loss"])
        line["test_acc"].append(te.get("acc"))
    return line
