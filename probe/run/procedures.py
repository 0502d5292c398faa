"""Multi-stage training procedures that a sweep run can use instead of one plain training run.

A procedure is a function ``fn(cfg, out, **opts) -> (last_row, results)`` registered in :data:`PROCEDURES`; its
keyword arguments are its options (``procedure_opts`` in a sweep spec). It writes its final model as an ordinary
run folder ``out`` (so every tool reads it like any run), keeps earlier stages as run folders under
``out/stages/``, and returns the final metrics row and a flat dict of scalar results (written by the sweep to
``out/procedure.json``; the sweep summary shows them as columns).

Every stage is restartable: a finished stage (last checkpoint at ``steps``) is not trained again, an interrupted
one is resumed from its last checkpoint.

- ``imp``: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).
- ``ecnn``: a CNN trained for ``cnn_steps``, embedded exactly into an MLP (d'Ascoli et al. 2019), trained on as
  an MLP; then the loss along the straight line from it to a plain MLP of the same shape and the same step budget,
  after aligning the plain MLP's hidden units to it (weight matching), and the distance of its layers to the
  convolutions of its known unit layout.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from probe.config import ConfigError, RunConfig
from probe.run.checkpoint import atomic_write, list_checkpoints, load_checkpoint
from probe.run.folder import read_metrics
from probe.run.loop import evaluate, setup, train_or_resume

STAGES = "stages"


def last_state_dict(out: Path) -> dict:
    ckpts = list_checkpoints(out)
    if not ckpts:
        raise ConfigError(f"{out}: no checkpoint")
    return load_checkpoint(ckpts[-1][1])["state_dict"]


def _save_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


# -- iterative magnitude pruning ------------------------------------------------------------------------------
def prunable(state: dict, scope: str, readout: bool) -> list[str]:
    """Names of the weight matrices that are pruned: ``first`` (the first layer), ``layer`` or ``global`` (every
    weight matrix, the readout only with ``readout``)."""
    names = [k for k, v in state.items() if k.endswith("weight") and v.dim() >= 2
             and (readout or not k.startswith("readout"))]
    return names[:1] if scope == "first" else names


def prune_masks(state: dict, masks: dict, frac: float, scope: str) -> dict:
    """Remove the fraction ``frac`` of the surviving weights with the smallest magnitude: per matrix (``layer``,
    ``first``) or over all pruned matrices at once (``global``). Returns new boolean masks."""
    groups = [[k] for k in masks] if scope != "global" else [list(masks)]
    new = {}
    for names in groups:
        scores = torch.cat([torch.where(masks[k], state[k].abs().float(), torch.tensor(-1.0)).flatten() for k in names])
        alive = int(sum(int(masks[k].sum()) for k in names))
        keep = alive - int(round(frac * alive))
        flat = torch.zeros_like(scores, dtype=torch.bool)
        flat[torch.topk(scores, keep).indices] = True  # topk breaks ties by index: exactly `keep` survive
        i = 0
        for k in names:
            n = masks[k].numel()
            new[k] = flat[i : i + n].reshape(masks[k].shape)
            i += n
    return new


class _SaveAt:
    """Training hook that saves the model's weights once, at step ``step`` (the rewind point)."""

    def __init__(self, step: int, path: Path):
        self.step, self.path = step, path

    def __call__(self, step, model):
        if step == self.step and not self.path.exists():
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            atomic_write(self.path, lambda f: torch.save(state, f))
        return {}


def _masked(masks: dict, rewind_state: dict):
    """``prepare`` for a pruned round: on a fresh start the weights go back to the rewind point times the mask;
    after every optimizer step the pruned weights are set back to zero (momentum and Adam would move them)."""

    def prepare(run, fresh):
        params = dict(run.model.named_parameters())
        dev = {k: m.to(run.device) for k, m in masks.items()}
        if fresh:
            run.model.load_state_dict(rewind_state)
        with torch.no_grad():
            for k, m in dev.items():
                params[k].mul_(m)

        def apply_mask(optimizer, args, kwargs):
            with torch.no_grad():
                for k, m in dev.items():
                    params[k].mul_(m)

        run.optimizer.register_step_post_hook(apply_mask)

    return prepare


def imp(cfg: RunConfig, out: Path, rounds: int = 3, prune: float = 0.45, rewind: int = 0, scope: str = "layer",
        readout: bool = False):
    """Iterative magnitude pruning with rewinding.

    Round 0 trains the dense net (``stages/round_0``) and saves its weights at step ``rewind``. Each following
    round removes the fraction ``prune`` of the surviving weights with the smallest final magnitude (see
    :func:`prune_masks`; ``scope`` = layer, global or first), resets the survivors to their values at step
    ``rewind`` and trains again for ``cfg.steps`` steps with the mask fixed. Round ``rounds`` is the run
    folder ``out`` itself; its sparsity is 1 - (1 - prune)^rounds of the pruned matrices.

    Rewinding here restarts the optimizer and the schedule at step 0 (Frankle et al. 2020 continue the schedule
    from the rewind step); with the constant schedule the two differ only in the optimizer's state.
    ``rewind`` must be 0 or a multiple of ``log_every`` (weights are saved at logged steps).
    """
    if rounds < 1 or not 0 < prune < 1 or scope not in ("layer", "global", "first"):
        raise ConfigError(f"procedure imp: rounds >= 1, 0 < prune < 1 and scope layer/global/first required; "
                          f"got rounds={rounds}, prune={prune}, scope={scope!r}")
    if rewind < 0 or rewind >= cfg.steps or (rewind and rewind % cfg.log_every):
        raise ConfigError(f"procedure imp: rewind must be 0 or a multiple of log_every ({cfg.log_every}) below steps "
                          f"({cfg.steps}); got {rewind}")
    out = Path(out)
    folders = [out / STAGES / f"round_{r}" for r in range(rounds)] + [out]
    rewind_file = folders[0] / "rewind.pt"
    rows = [train_or_resume(cfg, folders[0], hooks=(_SaveAt(rewind, rewind_file),))]
    rewind_state = _rewind_state(folders[0], rewind)
    state = last_state_dict(folders[0])
    masks = {k: torch.ones_like(state[k], dtype=torch.bool) for k in prunable(state, scope, readout)}
    for r in range(1, rounds + 1):
        masks = prune_masks(state, masks, prune, scope)
        folders[r].mkdir(parents=True, exist_ok=True)
        atomic_write(folders[r] / "mask.pt", lambda f: torch.save(masks, f))  # for analysis; recomputed on restart
        rows.append(train_or_resume(cfg, folders[r], prepare=_masked(masks, rewind_state)))
        state = last_state_dict(folders[r])
    pruned = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    first = next(iter(masks))
    results = {"sparsity": pruned / total, "first_layer_sparsity": float((~masks[first]).float().mean()),
               "dense_test_acc": rows[0].get("test_acc"), "round_test_acc": [r.get("test_acc") for r in rows]}
    return rows[-1], results


def _rewind_state(round0: Path, rewind: int) -> dict:
    """The weights saved at the rewind step, or that step's checkpoint (a round 0 trained with another rewind)."""
    saved = round0 / "rewind.pt"
    if saved.exists():
        return load_checkpoint(saved)
    ckpts = dict(list_checkpoints(round0))
    if rewind in ckpts:
        return load_checkpoint(ckpts[rewind])["state_dict"]
    raise ConfigError(f"procedure imp: {round0} holds no weights at step {rewind} (rewind changed after round 0 "
                      "was trained); delete that folder to train round 0 again")


# -- eCNN: a CNN written into an MLP's weights ---------------------------------------------------------------
def embed_local_net(model) -> tuple[int, int, dict]:
    """(width, depth, MLP state_dict) of the MLP that computes exactly what ``model`` (a cnn or lcn LocalNet)
    computes: each local layer becomes its dense matrix (:func:`probe.models.conv.local_dense`), hidden unit
    (o, p) = row o*P + p, the bias of channel o repeated over positions; the readout is copied."""
    from probe.models.conv import LocallyConnected, local_dense, out_size

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
        raise ConfigError(f"procedure ecnn: the CNN's layers have widths {widths} (channels x positions); an MLP has "
                          "one width, so give the CNN stride 1 after its first layer and equal channels")
    state["readout.weight"] = model.readout.weight.detach().clone()
    state["readout.bias"] = model.readout.bias.detach().clone()
    return widths[0], len(widths), state


def _load_weights(state: dict):
    def prepare(run, fresh):
        if fresh:
            run.model.load_state_dict(state)

    return prepare


def conv_layouts(model) -> list[tuple]:
    """Per local layer of ``model`` (a cnn or lcn LocalNet), what :func:`probe.metrics.equivariance.conv_layout`
    needs to write the convolutions of its embedded dense layer: (input geometry, output channels, kernel, stride,
    padding, circular). Hidden layers' inputs are the previous layer's channels over its output grid."""
    from probe.geometry import Geometry
    from probe.models.conv import LocallyConnected, out_size

    out, geo = [], model.geometry
    for layer in model.layers:
        if isinstance(layer, LocallyConnected):
            O, k, s, pad = layer.weight.shape[0], layer.kernel, layer.stride, layer.pad
        else:
            O, k, s, pad = layer.weight.shape[0], layer.kernel_size[0], layer.stride[0], layer.padding[0]
        out.append((geo, O, k, s, pad, model.circular))
        geo = Geometry(channels=O, spatial=tuple(out_size(n, k, s, pad) for n in geo.spatial), periodic=geo.periodic)
    return out


def conv_subspace_distances(state: dict, layouts: list[tuple]) -> dict[str, float]:
    """The distance of an embedded MLP's layers (state ``layers.i.weight``) to the convolutions of their known unit
    layouts (:func:`probe.metrics.equivariance.conv_subspace_distance`): ``conv_subspace_distance`` of the first
    layer, and ``conv_subspace_distance_all`` over all embedded layers together (sqrt of the summed squared
    residuals over the summed squared norms)."""
    from probe.metrics.equivariance import conv_layout, conv_subspace_projection

    res, tot, first = 0.0, 0.0, None
    for i, (geo, O, k, s, pad, circ) in enumerate(layouts):
        W = state[f"layers.{i}.weight"].detach().double().cpu().numpy()
        P = conv_subspace_projection(W, conv_layout(geo, O, k, s, pad, circ))
        r, n = float(((W - P) ** 2).sum()), float((W**2).sum())
        first = first if first is not None else float(np.sqrt(r / n))
        res, tot = res + r, tot + n
    return {"conv_subspace_distance": first, "conv_subspace_distance_all": float(np.sqrt(res / tot))}


def match_hidden_units(ref: dict, state: dict, max_iter: int = 50, seed: int = 0) -> dict:
    """``state`` (a plain MLP: ``layers.i.weight``/``bias``, ``readout``) with its hidden units permuted to line up
    with ``ref``'s, by weight matching (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin", their algorithm 1).

    A permutation P_l of each hidden layer l leaves the function unchanged (the next layer's inputs are permuted
    alike); the P_l maximize sum_l <W_ref^l, P_l W^l P_{l-1}^T> + <b_ref^l, P_l b^l>, the readout's inputs included.
    Coordinate ascent: each P_l in turn is the linear assignment (``scipy.optimize.linear_sum_assignment``) with
    the others fixed, layers in a seeded random order, until no P_l changes (or ``max_iter`` sweeps). Without it,
    two solutions of one network are compared with their hidden units in unrelated orders, and the loss on the
    straight line between them rises for that reason alone.
    """
    L = sum(1 for k in state if k.startswith("layers.") and k.endswith(".weight"))
    num = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    names = [f"layers.{i}" for i in range(L)] + ["readout"]
    Wa, Wb = [num(ref[f"{n}.weight"]) for n in names], [num(state[f"{n}.weight"]) for n in names]
    ba = [num(ref[f"{n}.bias"]) if f"{n}.bias" in ref else None for n in names]
    bb = [num(state[f"{n}.bias"]) if f"{n}.bias" in state else None for n in names]
    perms = [np.arange(len(Wb[i])) for i in range(L)]
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for l in rng.permutation(L):
            incoming = Wb[l][:, perms[l - 1]] if l > 0 else Wb[l]
            S = Wa[l] @ incoming.T
            if ba[l] is not None and bb[l] is not None:
                S += np.outer(ba[l], bb[l])
            outgoing = Wb[l + 1][perms[l + 1]] if l + 1 < L else Wb[l + 1]
            S += Wa[l + 1].T @ outgoing
            col = linear_sum_assignment(S, maximize=True)[1]
            if not np.array_equal(col, perms[l]):
                changed, perms[l] = True, col
        if not changed:
            break
    out = {k: v.clone() for k, v in state.items()}
    for l in range(L + 1):
        p_out = torch.as_tensor(perms[l]) if l < L else None
        p_in = torch.as_tensor(perms[l - 1]) if l > 0 else None
        w = state[f"{names[l]}.weight"]
        w = w[p_out] if p_out is not None else w
        out[f"{names[l]}.weight"] = (w[:, p_in] if p_in is not None else w).clone()
        if p_out is not None and f"{names[l]}.bias" in state:
            out[f"{names[l]}.bias"] = state[f"{names[l]}.bias"][p_out].clone()
    return out


def ecnn(cfg: RunConfig, out: Path, cnn_steps: int = 1000, source: str = "cnn", source_opts: dict | None = None,
         interpolate: bool = True, points: int = 11, equal_budget: bool = True, align: bool = True):
    """Train a CNN (``source`` = cnn or lcn with ``source_opts``, otherwise ``cfg``'s settings) for ``cnn_steps``
    steps (0: its initialization) in ``stages/cnn``; embed it into an MLP (:func:`embed_local_net`: width and depth
    come from the CNN, whatever ``cfg`` says) and train that MLP with ``cfg`` into ``out``. With ``interpolate``,
    also train a plain MLP of the same shape and seed (``stages/mlp``), for ``cnn_steps + cfg.steps`` steps with
    ``equal_budget`` (the eCNN's whole budget: its CNN's steps and its own), else ``cfg.steps``; align its hidden
    units to the eCNN's (:func:`match_hidden_units`, with ``align``) and evaluate the loss at ``points`` points on
    the straight line theta(a) = (1 - a) theta_eCNN + a theta_MLP (``out/interpolation.json``). The null of that
    line is the same line between two plain MLPs that differ only in their seed (``stages/mlp`` and
    ``stages/mlp_null``, seed + NULL_SEED_OFFSET, the same budget), the second aligned to the first: independent
    solutions of one network are separated by a barrier too, so a barrier says "another basin" only where it
    exceeds it.

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
    cnn_cfg = cfg.replace(model=source, model_opts=dict(source_opts or {}), steps=max(cnn_steps, 1))
    if cnn_steps:
        train_or_resume(cnn_cfg, out / STAGES / "cnn")
    cnn = setup(cnn_cfg, out / STAGES / "cnn").model.cpu()  # the seeded initialization (nothing is written)
    if cnn_steps:
        cnn.load_state_dict(last_state_dict(out / STAGES / "cnn"))
    width, depth, state = embed_local_net(cnn)
    layouts = conv_layouts(cnn)
    from probe.run.tracking import write_layout  # the MLPs' unit layout, for --track conv_share, local_share

    for folder in (out, *((out / STAGES / "mlp", out / STAGES / "mlp_null") if interpolate else ())):
        write_layout(folder, layouts[0])
    mlp_cfg = cfg.replace(width=width, depth=depth)
    row = train_or_resume(mlp_cfg, out, prepare=_load_weights(state))
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
                results[f"{key}{tag}"] = _barrier(line[losses], line["alpha"])
                results[f"{key}{tag}@mlps"] = _barrier(null[losses], null["alpha"])
            if None not in line["test_acc"] + null["test_acc"]:  # the test error's barrier (classification)
                results[f"line_error_barrier{tag}"] = _barrier([1 - a for a in line["test_acc"]], line["alpha"])
                results[f"line_error_barrier{tag}@mlps"] = _barrier([1 - a for a in null["test_acc"]], null["alpha"])
            if not align:
                break
        _save_json(out / "interpolation.json", {**lines[""], "aligned": align,
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


def _barrier(losses, alphas) -> float:
    ends = [(1 - t) * losses[0] + t * losses[-1] for t in alphas]
    return float(max(l - e for l, e in zip(losses, ends)))


# -- registry --------------------------------------------------------------------------------------------------
PROCEDURES = {"imp": imp, "ecnn": ecnn}


def procedure_options(name: str) -> dict:
    """The options of procedure ``name`` with their defaults (its keyword arguments)."""
    if name not in PROCEDURES:
        raise ConfigError(f"unknown procedure {name!r}; valid: train, {', '.join(PROCEDURES)}")
    sig = inspect.signature(PROCEDURES[name])
    return {k: p.default for k, p in list(sig.parameters.items())[2:]}


def run_procedure(name: str, cfg: RunConfig, out: Path, opts: dict) -> tuple[dict, dict]:
    valid = procedure_options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ConfigError(f"procedure {name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return PROCEDURES[name](cfg, Path(out), **opts)
