"""Two solutions of one network side by side: their hidden units lined up (weight matching), and the barrier of a
loss on the straight line between them.

- :func:`match_hidden_units`: the permutation of a plain MLP's hidden units that best lines them up with another's
  (Ainsworth, Hayase & Srinivasa 2023), leaving its function unchanged;
- :func:`line_barrier`: the largest excess of a loss on the line theta(a) = (1 - a) theta_A + a theta_B over the
  straight interpolation of its end values, from the losses at the points a.

The ``ecnn`` procedure (:mod:`probe.run.procedures.ecnn`) evaluates the losses on the line; these are the parts
that are functions of weights and numbers alone.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


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



def line_barrier(losses, alphas) -> float:
    """max_a [L(a) - ((1 - a) L(0) + a L(1))] over the points ``alphas`` (in [0, 1], first 0, last 1) with the
    losses ``losses`` there: 0 for a loss linear (or convex) along the line, > 0 where the line climbs over a ridge;
    never below 0, since the ends give 0."""
    ends = [(1 - t) * losses[0] + t * losses[-1] for t in alphas]
    return float(max(l - e for l, e in zip(losses, ends)))
