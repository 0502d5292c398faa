"""``imp``: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020)."""

from __future__ import annotations

from pathlib import Path

import torch

from probe.config import ConfigError, RunConfig
from probe.run.checkpoint import atomic_write, list_checkpoints, load_checkpoint
from probe.run.loop import train_or_resume
from probe.run.procedures.common import STAGES, last_state_dict
from probe.seeding import PRUNE, stream


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

    ``criterion = "random"`` is the random-pruning control: each round removes a uniformly random fraction
    ``prune`` of the survivors (stream ``PRUNE + round`` of the run's seed, :mod:`probe.seeding`), rewinds and
    trains the same way. One round of ``prune = 1 - (1 - p)^R`` reaches the sparsity of R magnitude rounds of p
    (to within the rounding of each round's count) at the cost of two trainings, not R + 1.
    ``rewind`` must be 0 or a multiple of ``log_every`` (weights are saved at logged steps).
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

