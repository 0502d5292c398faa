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
- ``stability``: the embedded CNN perturbed off its convolutional subspace by a relative norm eps and trained on
  the data or on whole orbits of circular shifts: does the complement grow or decay? (issue 14, item 5)
- ``ntk_align``: a reference CNN trained first, then the run's model with the centred alignment of its empirical
  NTK with the CNN's, and with the labels, in its metrics rows (issue 14, item 6).
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from probe.config import ConfigError, RunConfig, coerce_opts
from probe.run.checkpoint import atomic_write, list_checkpoints, load_checkpoint
from probe.run.folder import read_metrics
from probe.run.loop import evaluate, resolve_device, setup, train_or_resume
from probe.geometry import Geometry
from probe.metrics.equivariance import conv_layout, conv_subspace_projection
from probe.metrics.kernels import cka, empirical_ntk, kta, label_kernel
from probe.metrics.symmetry import complement_norm, complement_share, invariant_readout_layout, orbit, shift_layout
from probe.models import model_specs
from probe.models.conv import LocallyConnected, conv_layouts, local_dense, out_size
from probe.run.tracking import write_layout
from probe.seeding import PRUNE, EpochOrder, stream
from probe.tasks import make_task

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


def prune_masks(state: dict, masks: dict, frac: float, scope: str, generator: torch.Generator | None = None) -> dict:
    """Remove the fraction ``frac`` of the surviving weights with the smallest magnitude: per matrix (``layer``,
    ``first``) or over all pruned matrices at once (``global``). Returns new boolean masks.

    With ``generator``, the survivors' scores are uniform random draws instead of magnitudes: random pruning, the
    control that removes as many weights from the same matrices (so at the same per-layer sparsity) while knowing
    nothing about the trained weights."""
    groups = [[k] for k in masks] if scope != "global" else [list(masks)]
    new = {}
    for names in groups:
        def score(k):
            if generator is None:
                return state[k].abs().float()
            return torch.rand(state[k].shape, generator=generator)

        scores = torch.cat([torch.where(masks[k], score(k), torch.tensor(-1.0)).flatten() for k in names])
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
        readout: bool = False, criterion: str = "magnitude"):
    """Iterative magnitude pruning with rewinding.

    Round 0 trains the dense net (``stages/round_0``) and saves its weights at step ``rewind``. Each following
    round removes the fraction ``prune`` of the surviving weights with the smallest final magnitude (see
    :func:`prune_masks`; ``scope`` = layer, global or first), resets the survivors to their values at step
    ``rewind`` and trains again for ``cfg.steps`` steps with the mask fixed. Round ``rounds`` is the run
    folder ``out`` itself; its sparsity is 1 - (1 - prune)^rounds of the pruned matrices.

    Rewinding here restarts the optimizer and the schedule at step 0 (Frankle et al. 2020 continue the schedule
    from the rewind step); with the constant schedule the two differ only in the optimizer's state.
    ``rewind`` must be 0 or a multiple of ``log_every`` (weights are saved at logged steps).

    ``criterion = "random"`` is the random-pruning control: each round removes a uniformly random fraction
    ``prune`` of the survivors (stream ``PRUNE + round`` of the run's seed, :mod:`probe.seeding`), rewinds and
    trains the same way. One round of ``prune = 1 - (1 - p)^R`` reaches the sparsity of R magnitude rounds of p
    (to within the rounding of each round's count) at the cost of two trainings, not R + 1.
    """
    if rounds < 1 or not 0 < prune < 1 or scope not in ("layer", "global", "first") \
            or criterion not in ("magnitude", "random"):
        raise ConfigError(f"procedure imp: rounds >= 1, 0 < prune < 1, scope layer/global/first and criterion "
                          f"magnitude/random required; got rounds={rounds}, prune={prune}, scope={scope!r}, "
                          f"criterion={criterion!r}")
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
        generator = stream(cfg.seed, PRUNE + r) if criterion == "random" else None
        masks = prune_masks(state, masks, prune, scope, generator)
        folders[r].mkdir(parents=True, exist_ok=True)
        # for analysis; recomputed on restart
        atomic_write(folders[r] / "mask.pt", lambda f, masks=masks: torch.save(masks, f))
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


def _load_weights(state: dict):
    def prepare(run, fresh):
        if fresh:
            run.model.load_state_dict(state)

    return prepare


def conv_subspace_distances(state: dict, layouts: list[tuple]) -> dict[str, float]:
    """The distance of an embedded MLP's layers (state ``layers.i.weight``) to the convolutions of their known unit
    layouts (:func:`probe.metrics.equivariance.conv_subspace_distance`): ``conv_subspace_distance`` of the first
    layer, and ``conv_subspace_distance_all`` over all embedded layers together (sqrt of the summed squared
    residuals over the summed squared norms)."""
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
    _, width, depth, state, layouts = embedded_cnn(cfg, out, cnn_steps, source, source_opts)
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


# -- stability of the symmetric solution (issue 14, item 5) ---------------------------------------------------
class OrbitAugment:
    """Training batches of whole orbits: the trainer's epoch order (the batches of :class:`probe.run.loop.Batches`),
    each example with every circular shift of it (:func:`probe.metrics.symmetry.orbit`), so the loss of each step is
    the mean over the batch's orbits and its gradient the orbit average, exactly, at every step (random shifts would
    give it only in expectation). A batch of B examples is B |S| rows."""

    draws_from_train_set = True  # batches come from x_train: a batch larger than it is the whole set

    def __init__(self, task):
        self.task, self.order = task, EpochOrder()

    def __call__(self, seed: int, step: int, batch: int, device="cpu"):
        x, y = self.task.x_train, self.task.y_train  # read now: the task may have moved to the device
        idx = self.order(seed, step, len(x), batch).to(x.device)  # the batches of probe.run.loop.Batches
        xo = orbit(x[idx], self.task.geometry)
        return xo.to(device), y[idx].repeat_interleave(len(xo) // len(idx)).to(device)


def symmetry_layouts(model) -> list[dict]:
    """Per embedded local layer of ``model`` (a cnn LocalNet), the index arrays of its two subspaces: ``conv`` (the
    convolutions of its layout, :func:`probe.metrics.equivariance.conv_layout`) and ``equiv`` (the shift-equivariant
    layers, :func:`probe.metrics.symmetry.shift_layout`; None where no shift of the input is a shift of the output:
    a stride that does not divide the grid, or an even kernel under circular padding)."""
    out = []
    for geo, O, k, s, pad, circ in conv_layouts(model):
        outs = tuple(out_size(n, k, s, pad) for n in geo.spatial)
        try:
            equiv = shift_layout(Geometry(geo.channels, geo.spatial), O, s, outs)
        except ValueError:
            equiv = None
        out.append({"conv": conv_layout(geo, O, k, s, pad, circ), "equiv": equiv})
    return out


def perturb_off_convolutions(state: dict, layouts: list[dict], eps: float, which: str, seed: int) -> dict:
    """``state`` (an embedded CNN) with a random perturbation D_l added to each embedded local layer l (``which`` =
    all, or first: layer 0 only), D_l Gaussian projected onto the orthogonal complement of the layer's convolutional
    subspace and scaled so that the perturbed layer's complement share ||W - P(W)||_F / ||W||_F is ``eps``:
    ||D_l||_F = eps ||W_l||_F / sqrt(1 - eps^2) (W_l lies in the subspace, so P(W_l + D_l) = W_l). Seeded by
    ``seed`` and the layer; the readout and biases are kept."""
    out = {k: v.clone() for k, v in state.items()}
    if eps == 0:
        return out
    for l, lay in enumerate(layouts[:1] if which == "first" else layouts):
        key = f"layers.{l}.weight"
        W = state[key].double().cpu().numpy()
        Z = np.random.default_rng([seed, l, 14]).normal(size=W.shape)
        D = Z - conv_subspace_projection(Z, lay["conv"])
        D *= eps * np.linalg.norm(W) / np.sqrt(1 - eps**2) / np.linalg.norm(D)
        out[key] = torch.as_tensor(W + D, dtype=state[key].dtype)
    return out


class ComplementTracker:
    """Training hook: the share of each embedded layer outside its convolutional and its shift-equivariant
    subspace, at every logged row. Keys (first layer; ``_l<i>`` for deeper layer i; ``_all`` pooled over the
    layers, sqrt(sum of squared complements / sum of squared norms)):

    - ``conv_subspace_distance``: ||W - P_conv(W)||_F / ||W||_F (the key ecnn's results use for the same quantity);
    - ``equiv_subspace_distance``: ||W - P_equiv(W)||_F / ||W||_F, outside the weight-shared layers (local or not);
    - ``conv_complement_growth``, ``equiv_complement_growth``: ||W_t - P(W_t)||_F / ||W_0 - P(W_0)||_F, the
      complement's norm against its start (only where the start is a perturbation, eps > 0);
    - ``readout_shift_distance``: the readout's share outside the readouts invariant to shifts
      (:func:`probe.metrics.symmetry.invariant_readout_layout`).
    """

    def __init__(self, layouts: list[dict], readout_index: np.ndarray, state0: dict, perturbed: bool):
        self.layouts, self.readout_index = layouts, readout_index
        self.start = self.norms(state0) if perturbed else None

    def norms(self, state: dict) -> dict:
        out = {}
        for l, lay in enumerate(self.layouts):
            W = state[f"layers.{l}.weight"].detach().double().cpu().numpy()
            for name in ("conv", "equiv"):
                if lay[name] is not None:
                    out[(name, l)] = complement_norm(W, lay[name])
        return out

    def measures(self, state: dict) -> dict:
        norms, row = self.norms(state), {}
        for name in ("conv", "equiv"):
            layers = sorted(l for (n, l) in norms if n == name)
            if not layers:
                continue
            for l in layers:
                r, w = norms[(name, l)]
                row[f"{name}_subspace_distance{f'_l{l}' if l else ''}"] = r / w if w > 0 else float("nan")
            res = sum(norms[(name, l)][0] ** 2 for l in layers)
            tot = sum(norms[(name, l)][1] ** 2 for l in layers)
            row[f"{name}_subspace_distance_all"] = float(np.sqrt(res / tot)) if tot > 0 else float("nan")
            if self.start is not None and self.start[(name, layers[0])][0] > 0:
                row[f"{name}_complement_growth"] = norms[(name, layers[0])][0] / self.start[(name, layers[0])][0]
                start = sum(self.start[(name, l)][0] ** 2 for l in layers)
                row[f"{name}_complement_growth_all"] = float(np.sqrt(res / start))
        row["readout_shift_distance"] = complement_share(state["readout.weight"].detach().double().cpu().numpy(),
                                                         self.readout_index)
        return row

    def __call__(self, step, model):
        return self.measures(model.state_dict())


AUGMENTS = ("none", "orbit")


def _double(state: dict):
    """``prepare`` for a float64 run: the model, and the task's inputs, in double precision (the optimizer holds the
    same parameter objects, its state is made on the first step); on a fresh start the weights are ``state``."""

    def prepare(run, fresh):
        run.model.double()
        for k in ("x_train", "x_test"):
            setattr(run.task, k, getattr(run.task, k).double())
        if fresh:
            run.model.load_state_dict(state)

    return prepare


def stability(cfg: RunConfig, out: Path, cnn_steps: int = 1000, source_opts: dict | None = None, eps: float = 0.1,
              augment: str = "none", perturb: str = "all", precision: str = "float32"):
    """Is the symmetric solution stable once reached? A CNN (``source_opts``; by default circular padding and a
    pooled readout, so that it is a fixed point of the circular shifts) trained for ``cnn_steps`` steps
    (``stages/cnn``) is embedded exactly into an MLP (:func:`embedded_cnn`, as in ``ecnn``); each embedded local
    layer (``perturb`` = all; first: the first layer only) gets a random perturbation in the orthogonal complement
    of its convolutional subspace, of relative norm ``eps`` (:func:`perturb_off_convolutions`: the perturbed
    layer's complement share is eps); the MLP trains with ``cfg`` into ``out`` on the data (``augment`` = none) or
    on whole orbits (orbit: every circular shift of every example in each batch, :class:`OrbitAugment`), and
    :class:`ComplementTracker` writes the complements into every metrics row.

    Why every layer by default: the symmetric solution is the whole network's; a perturbation of the first layer
    alone leaves the deeper layers exactly symmetric and asks a narrower question (``perturb=first``).

    With ``augment=orbit`` the shift-equivariant subspace is invariant under training (module docstring of
    :mod:`probe.metrics.symmetry`): an unperturbed layer stays equivariant to rounding error, and the equivariant
    complement of a perturbation grows or decays by the dynamics alone. This needs the embedded net to be a fixed
    point (circular padding, strides dividing the grid, an odd kernel, a pooled readout); otherwise a ConfigError.
    Orbit augmentation keeps weight sharing, not locality: read ``conv_*`` (local and shared) and ``equiv_*``
    (shared) side by side.

    ``precision`` = float64 trains the MLP stage (weights, optimizer state and data) in double precision, and so
    without bfloat16 autocast on a GPU. It matters for orbits: in float32 rounding error breaks the symmetry a
    little at every step, and Adam, which divides each coordinate's gradient by its own scale, blows the rounding
    of near-zero gradients up to steps of the learning rate's size. Measured (MNIST-1D, 16-channel CNN, width 320,
    depth 3, batch 100, eps 0, 200 orbit steps): equiv_subspace_distance_all 8.5e-4 with Adam lr 1e-3 in float32,
    2.0e-5 with SGD lr 0.05 in float32, 2.7e-16 with Adam in float64.

    Results: ``width``, ``depth``, ``cnn_test_acc``, ``perturbed_test_acc`` (step 0), ``test_acc`` (final);
    ``conv_complement_ratio`` and ``equiv_complement_ratio`` (first layer), with ``_all`` (every local layer), the
    final over the initial norm of the complement (> 1: it grew; None for eps = 0); the final
    ``conv_subspace_distance``, ``equiv_subspace_distance`` (and ``_all``) with their step-0 values (``@init``), and
    ``readout_shift_distance``.
    """
    if cfg.model != "mlp" or cfg.param != "standard" or cfg.model_opts:
        raise ConfigError("procedure stability: the run must be a plain model=mlp, param=standard, without model_opts "
                          "(the CNN goes in procedure_opts.source_opts)")
    if (cnn_steps < 0 or not 0 <= eps < 1 or augment not in AUGMENTS or perturb not in ("all", "first")
            or precision not in ("float32", "float64")):
        raise ConfigError(f"procedure stability: cnn_steps >= 0, 0 <= eps < 1, augment none or orbit, perturb all or "
                          f"first and precision float32 or float64 required; got cnn_steps={cnn_steps}, eps={eps}, "
                          f"augment={augment!r}, perturb={perturb!r}, precision={precision!r}")
    task = make_task(cfg.task, cfg.task_opts, seed=cfg.seed)
    if task.geometry.kind != "image" or task.geometry.channels_last:
        raise ConfigError(f"procedure stability: task {cfg.task} is not an image task; the embedded CNN needs a grid")
    if task.sampler is not None:
        raise ConfigError(f"procedure stability: task {cfg.task} draws its own batches (online sampling or "
                          "augmentation); the procedure's augment option is the only augmentation it takes")
    out = Path(out)
    opts = {"padding": "circular", "pool": True, **(source_opts or {})}
    cnn, width, depth, state, _ = embedded_cnn(cfg, out, cnn_steps, "cnn", opts)
    layouts = symmetry_layouts(cnn)
    positions = state["readout.weight"].shape[1] // cnn.layers[-1].weight.shape[0]
    readout_index = invariant_readout_layout(task.n_outputs, cnn.layers[-1].weight.shape[0], positions)
    tracker = ComplementTracker(layouts, readout_index, state, perturbed=False)
    if augment == "orbit":
        at_start = tracker.measures(state)
        if any(lay["equiv"] is None for lay in layouts) or max(
                at_start["equiv_subspace_distance_all"], at_start["readout_shift_distance"]) > 1e-5:
            raise ConfigError(f"procedure stability: augment=orbit keeps the layers equivariant only when the embedded "
                              f"CNN is a fixed point of circular shifts (padding=circular, strides dividing the grid "
                              f"{tuple(task.geometry.spatial)}, an odd kernel, pool=true); source_opts {opts} is not")
        task.sampler = OrbitAugment(task)
    state0 = perturb_off_convolutions(state, layouts, eps, perturb, cfg.seed)
    tracker = ComplementTracker(layouts, readout_index, state0, perturbed=eps > 0)
    mlp_cfg = cfg.replace(width=width, depth=depth)
    task.to(resolve_device(cfg.device))
    cnn_acc = evaluate(cnn.to(task.x_test.device), task.x_test, task.y_test, task.loss).get("acc")
    prepare = _load_weights(state0) if precision == "float32" else _double(state0)
    row = train_or_resume(mlp_cfg, out, prepare=prepare, hooks=(tracker,), task=task)
    first, last = tracker.measures(state0), tracker.measures(last_state_dict(out))
    results = {"width": width, "depth": depth, "eps": eps, "cnn_test_acc": cnn_acc,
               "perturbed_test_acc": read_metrics(out)[0].get("test_acc"), "test_acc": row.get("test_acc")}
    for name in ("conv", "equiv"):
        for suffix in ("", "_all"):
            key = f"{name}_subspace_distance{suffix}"
            if key in last:
                results[key], results[f"{key}@init"] = last[key], first[key]
            growth = last.get(f"{name}_complement_growth{suffix}")
            results[f"{name}_complement_ratio{suffix}"] = growth
    results["readout_shift_distance"] = last["readout_shift_distance"]
    return row, results


# -- kernel alignment with a reference network (issue 14, item 6) ---------------------------------------------
NTK_SUBSET_SEED = 0  # one fixed subset for every run, seed and model: their kernels are compared on the same inputs


def ntk_subset(task, n: int) -> torch.Tensor:
    """Indices of the fixed ``n`` training examples the kernels are computed on (all when there are fewer): the first
    n of a permutation seeded by :data:`NTK_SUBSET_SEED`, whatever the run's seed, sorted."""
    N = len(task.x_train)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(NTK_SUBSET_SEED))
    return perm[: min(n, N)].sort().values


class NTKAlignment:
    """Training hook: on the fixed inputs ``x`` (labels ``y``), the model's empirical NTK K_t
    (:func:`probe.metrics.kernels.empirical_ntk`) read against a reference kernel: ``ntk_cka`` = CKA(K_t, K_ref),
    ``ntk_kta`` = KTA(K_t, y) (:mod:`probe.metrics.kernels`) and ``ntk_input_cka`` = CKA(K_t, X X^T) (how much of
    the kernel is the inputs' own Gram matrix), at steps that are multiples of ``every``, at step 0 and at
    ``last``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, ref_kernel: np.ndarray, every: int,
                 last: int):
        self.x, self.labels, self.ref = x, label_kernel(y.cpu().numpy(), n_classes), ref_kernel
        X = x.double().cpu().numpy()
        self.gram = X @ X.T
        self.every, self.last = every, last

    def __call__(self, step, model):
        if step % self.every and step not in (0, self.last):
            return {}
        K = empirical_ntk(model, self.x.to(next(model.parameters()).device))
        return {"ntk_cka": cka(K, self.ref), "ntk_kta": cka(K, self.labels), "ntk_input_cka": cka(K, self.gram)}


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
    X = x.double().cpu().numpy()
    hook = NTKAlignment(x, y, task.n_outputs, K_ref, every, cfg.steps)
    row = train_or_resume(cfg, out, hooks=(hook,), task=task)
    rows = [r for r in read_metrics(out) if "ntk_cka" in r]
    labels = y.cpu().numpy()
    results = {"ntk_cka": rows[-1]["ntk_cka"], "ntk_kta": rows[-1]["ntk_kta"], "ntk_cka@init": rows[0]["ntk_cka"],
               "ntk_kta@init": rows[0]["ntk_kta"], "ntk_input_cka": rows[-1]["ntk_input_cka"],
               "ref_kta": kta(K_ref, labels, task.n_outputs), "ref_test_acc": ref_row.get("test_acc"),
               "input_kta": kta(X @ X.T, labels, task.n_outputs), "ref_input_cka": cka(K_ref, X @ X.T),
               "examples": len(idx)}
    return row, results


# -- registry --------------------------------------------------------------------------------------------------
PROCEDURES = {"imp": imp, "ecnn": ecnn, "stability": stability, "ntk_align": ntk_align}


def procedure_options(name: str) -> dict:
    """The options of procedure ``name`` with their defaults (its keyword arguments)."""
    if name not in PROCEDURES:
        raise ConfigError(f"unknown procedure {name!r}; valid: train, {', '.join(PROCEDURES)}")
    sig = inspect.signature(PROCEDURES[name])
    return {k: p.default for k, p in list(sig.parameters.items())[2:]}


def check_procedure_options(name: str, opts: dict) -> dict:
    """``opts`` checked against procedure ``name``'s options: unknown names, and values of the wrong type (against
    the type of the default, :func:`probe.config.coerce_opts`; an option whose default is None against its
    annotation, ``int | None`` or ``dict | None``), each a ConfigError; returns the options coerced."""
    import typing

    valid = procedure_options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ConfigError(f"procedure {name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    out = coerce_opts(opts, valid, f"procedure {name}")
    hints = typing.get_type_hints(PROCEDURES[name])
    for k, v in out.items():
        if valid[k] is not None or v is None:
            continue
        want = [t for t in typing.get_args(hints.get(k)) if t is not type(None)] or [hints.get(k)]
        if want[0] is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"procedure {name}: option {k} must be an integer or left out, got {v!r}")
        if want[0] is dict and not isinstance(v, dict):
            raise ConfigError(f"procedure {name}: option {k} must be a table of options or left out, got {v!r}")
    return out


def run_procedure(name: str, cfg: RunConfig, out: Path, opts: dict) -> tuple[dict, dict]:
    return PROCEDURES[name](cfg, Path(out), **check_procedure_options(name, opts))
