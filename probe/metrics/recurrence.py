"""Recurrence measures for any sequence model: is the map from the input at position s to the output at
position t a function of t - s only (time sharing, the recurrent and causal-convolutional prior), does it look
only backwards (causality), and does the model read longer sequences (length generalization)?

Notation: inputs x (B, T, C) (one-hot tokens), logits z_t(x) in R^K at every position t, targets (B, T) with
-100 where nothing is asked. J_t,s(x) = d z_t(x) / d x_s (K x C) is the map from the input at s to the output at t;
its rows are centred over the K classes (P = I - 11^T / K: the softmax ignores a shift of all logits) and kept for
the classes S the task answers with (those among the targets: the logits of classes never asked carry no answer;
a counting task has 4T + 1 classes, of which about T occur at length T).

- Dependence map: M[t, s] = E_x sum_{k in S} ||(P J_t,s(x))_k||_2^2, the mean over the examples asked at t;
  rows t where nothing is asked are NaN. It is the output's dependence, not the correct answer's alone: a
  counter's answer class drifts with t, its state's dependence does not. (|S| + 1) backward passes per output
  position, on at most :data:`MAP_EXAMPLES` examples.
- ``time_sharing`` = 1 - sum_{s<=t} (M[t, s] - m(t - s))^2 / sum_{s<=t} (M[t, s] - mean M)^2, with m(d) the
  mean of M over the pairs with t - s = d (the best map that depends on t - s only), over asked rows t and the
  positions s <= t (the causal part, so that it is not confounded with ``causal_mass``): the share of the
  map's variation that the distance t - s explains. 1 when M is Toeplitz there: an exact causal convolution
  (M[t, s] = ||h_{t-s}||^2), a linear recurrence h_t = A h_{t-1} + B x_t, z_t = C h_t
  (M[t, s] = ||C A^{t-s} B||^2), and close to 1 for a nonlinear recurrence whose state statistics are
  stationary. About (T - 1) / (T (T + 1) / 2 - 1) = 2 / (T + 2) for a map of i.i.d. entries; undefined (left
  out) for a constant map.
- ``causal_mass`` = sum_{t, s <= t} M[t, s] / sum_{t, s} M[t, s]: the share of the output's dependence on
  positions at or before t. 1 for causal models (rnn, causal transformer) by construction; about
  (T + 1) / (2T) for a map that reads every position alike.
- Null ``@permuted``: both on the same maps with the input positions permuted, M_pi[t, s] = M[t, pi(s)], mean
  over seeded permutations pi: what the same amount of dependence scores with its arrangement over positions
  destroyed (as the first layer's ``permuted`` reference, docs/design.md §4.3).
- ``distance_profile``: the map's dependence on d = t - s, m(d) / sum_d m(d) for d = -(T-1) .. T-1 (a picture).
- ``test_acc_2T``, ``test_acc_4T``: accuracy over the asked answers of the task's test splits at 2T and 4T
  (probe/tasks/recurrence.py), for models whose ``max_length`` reaches that length.
"""

from __future__ import annotations

import numpy as np
import torch
from probe.metrics.intervention import recurrence_iv_measures

N_PERMUTATIONS = 16
MAP_EXAMPLES = 256  # examples the dependence map averages over (its cost: (|S| + 1) T backward passes of them)


def dependence_map(f, x: torch.Tensor, y: torch.Tensor, classes=None) -> np.ndarray:
    """M[t, s] = E_x sum_{k in S} ||(P d z_t / d x_s)_k||^2 (module docstring), (T, T), NaN rows where nothing is
    asked.

    f maps float inputs (B, T, C) to logits (B, T, K); x: (B, T, C) floats; y: (B, T) targets, -100 = not asked;
    ``classes``: the class set S (default: the classes among the asked targets). Examples do not interact in the
    models here (no batch norm), so one backward pass of a sum over examples gives every example's gradient."""
    x = x.detach().float().clone().requires_grad_(True)
    out = f(x)
    if out.dim() != 3:
        raise ValueError("the dependence map needs an output at every position (per-position targets)")
    y = y.to(out.device)
    S = torch.unique(y[y != -100]).tolist() if classes is None else list(classes)
    T = x.shape[1]
    M = np.full((out.shape[1], T), np.nan)
    for t in range(out.shape[1]):
        asked = y[:, t] != -100
        if not bool(asked.any()):
            continue
        z = out[asked, t].float()  # (b, K)
        (mean,) = torch.autograd.grad(z.mean(1).sum(), x, retain_graph=True)
        mean = mean[asked]
        acc = torch.zeros(mean.shape[:2], dtype=torch.float64, device=mean.device)
        for k in S:
            (g,) = torch.autograd.grad(z[:, k].sum(), x, retain_graph=True)
            acc += (g[asked] - mean).double().pow(2).sum(-1)
        M[t] = acc.mean(0).cpu().numpy()
    return M


def _rows(M: np.ndarray, causal: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, t and s of the asked rows' entries (rows without NaN); with ``causal`` only those with s <= t."""
    M = np.asarray(M, dtype=np.float64)
    t, s = np.nonzero(np.isfinite(M) & (np.tri(*M.shape, dtype=bool) if causal else True))
    return M[t, s], t, s


def time_sharing(M) -> float:
    """1 - sum (M[t,s] - m(t-s))^2 / sum (M[t,s] - mean M)^2 over asked rows t and s <= t (module docstring);
    NaN when M is constant there (no variation to explain)."""
    v, t, s = _rows(M, causal=True)
    if len(v) < 2:
        return float("nan")
    d = t - s
    _, inv = np.unique(d, return_inverse=True)
    m = np.bincount(inv, weights=v) / np.bincount(inv)
    total = ((v - v.mean()) ** 2).sum()
    if total <= 1e-30 * max((v**2).sum(), 1e-300):
        return float("nan")
    return float(1 - ((v - m[inv]) ** 2).sum() / total)


def causal_mass(M) -> float:
    """sum_{t, s <= t} M[t, s] / sum_{t, s} M[t, s] over asked rows (module docstring)."""
    v, t, s = _rows(M)
    tot = v.sum()
    return float(v[s <= t].sum() / tot) if tot > 0 else float("nan")


def distance_profile(M) -> tuple[np.ndarray, np.ndarray]:
    """(d, share): the mean of M over the pairs with t - s = d, normalized to sum 1, for every distance d present."""
    v, t, s = _rows(M)
    d = t - s
    ds, inv = np.unique(d, return_inverse=True)
    m = np.bincount(inv, weights=v) / np.bincount(inv)
    return ds, m / m.sum() if m.sum() > 0 else m


def permuted_nulls(M, seed: int = 0, n: int = N_PERMUTATIONS) -> dict[str, float]:
    """``time_sharing`` and ``causal_mass`` of M with its input positions (columns) permuted, the mean over n
    seeded permutations (module docstring)."""
    M = np.asarray(M, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ts, cm = [], []
    for _ in range(n):
        Mp = M[:, rng.permutation(M.shape[1])]
        ts.append(time_sharing(Mp))
        cm.append(causal_mass(Mp))
    return {"time_sharing": float(np.nanmean(ts)) if np.isfinite(ts).any() else float("nan"),
            "causal_mass": float(np.nanmean(cm)) if np.isfinite(cm).any() else float("nan")}


@torch.no_grad()
def length_accuracy(f, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    """Share of asked answers (y != -100) whose predicted class (argmax of f's logits, (B, L, K)) is right."""
    right = asked = 0
    for i in range(0, len(x), batch):
        out = f(x[i : i + batch])
        yy = y[i : i + batch].to(out.device)
        mask = yy != -100
        right += int(((out.argmax(-1) == yy) & mask).sum())
        asked += int(mask.sum())
    return right / asked if asked else float("nan")


def recurrence_measures(model, task, n: int = 256, seed: int = 0) -> dict[str, float]:
    """``time_sharing``, ``causal_mass`` (with their ``@permuted`` nulls) on n (at most :data:`MAP_EXAMPLES`) test
    examples drawn with ``seed``,
    and ``test_acc_2T`` / ``test_acc_4T`` where the task has those splits and the model reads those lengths.
    Sequence tasks with an answer at every position only (others: an empty dict)."""
    if task.geometry.kind != "sequence" or task.loss != "ce" or task.y_test.dim() != 2:
        return {}
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(task.x_test), generator=g)[: min(n, MAP_EXAMPLES)]
        x, y = task.x_test.cpu()[idx].to(dev), task.y_test.cpu()[idx].to(dev)
        C = task.geometry.channels
        feats = torch.nn.functional.one_hot(x, C).float() if task.vocab else x.reshape(len(x), x.shape[1] // C, C)
        M = dependence_map(model, feats, y)
        res = {"time_sharing": time_sharing(M), "causal_mass": causal_mass(M)}
        res.update({f"{k}@permuted": v for k, v in permuted_nulls(M, seed).items()})
        if task.vocab:  # the same questions by substituting tokens (probe/metrics/intervention.py)
            one_hot = lambda ids: model(torch.nn.functional.one_hot(ids, C).float())
            res.update(recurrence_iv_measures(one_hot, x, task.vocab, seed, asked=y != -100))
        longest = getattr(model, "max_length", None)
        for f in (2, 4):
            key = f"x_test_{f}T"
            if key in task.extras and longest is not None and task.extras[key].shape[1] <= longest:
                res[f"test_acc_{f}T"] = length_accuracy(model, task.extras[key].to(dev),
                                                        task.extras[f"y_test_{f}T"].to(dev))
    finally:
        model.train(was_training)
    return {k: float(v) for k, v in res.items() if np.isfinite(v)}
