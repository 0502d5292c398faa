"""Measures by intervention: what the function depends on, read by changing its inputs, not its gradients.

Gradient energies (:mod:`probe.metrics.recurrence`'s dependence map, :mod:`probe.metrics.arith`'s weight share)
read a first-order, local quantity: a dependence through a step function has zero gradient, a dead unit's weights
count as much as a live one's, a map constant up to rounding gives a number, and on one-hot tokens the gradient
along the all-ones direction (never an input) counts. Here the inputs are changed to other valid inputs and the
change of the output is measured.

Sequences (one-hot tokens, an output at every position; f maps token ids (B, T) to logits (B, T, K)):

- Substitution effect E[t, s] = E_x E_{b != x_s} TV(p_t(x), p_t(x^{s <- b})), p_t = softmax(z_t), TV the total
  variation distance (half the L1 distance), b drawn uniformly among the other tokens: how much the answer at t
  changes when the token at s is replaced by another valid token (:func:`substitution_map`).
- ``causal_mass_iv`` = sum_{s <= t} E[t, s] / sum_{t, s} E[t, s]: the share of the output's dependence on the
  present and past. 1 for a causal map, whatever it computes from the past and whatever it does with the number
  of future positions (a count of positions is not a token); below 1 for any dependence on future tokens,
  smooth or through a step. Undefined (left out) when no substitution changes any output: a constant map.
- ``time_sharing_iv``: does the same intervention at the same lag change the answer the same way wherever it
  happens? For each substitution that changes the argmax answer at t (old answer o -> new answer o'), the key is
  (d = t - s, a = x_s, b, o); the measure is the share of those records whose o' is the most common o' of
  their key, pooled over all positions t. A recurrent solution h_t = U(h_{t-1}, x_t) whose answer is read from
  its state the same way at every step (a counter, a depth counter, running parity, a shift register) makes o' a
  function of the key: 1. A solution with a different map at every position (delayed copy through a random
  matrix R_t at each t) makes o' depend on t: low. ``@permuted`` null: the same records read through a random
  relabeling pi_t of the answer classes at every position t (o -> pi_t(o), o' -> pi_t(o')), mean and sd over
  draws: what the same substitutions score when each position reads its answer its own way (the per-position
  solution, made from the model's own records); it also calibrates the share that small key groups reach by
  chance. Undefined (left out) when no substitution changes an answer.

The add task (y = f(x) with relevant inputs R among D):

- ``relevant_grad_share`` = E_x sum_{j in R} (df/dx_j)^2 / E_x sum_j (df/dx_j)^2: the share of the function's
  input-gradient energy on the relevant inputs.
- ``relevant_iv_share`` = sum_{j in R} V_j / sum_j V_j, V_j = E_{x, x'} (f(x^{j <- x'_j}) - f(x))^2: the share of
  the output's change when one input at a time is resampled from another example (an intervention: it sees
  dependence through flat or step-like regions that the gradient misses, and ignores weights of dead units).
  Both 1 for a function of the relevant inputs alone, |R| / D for a function reading every input alike.
  Neither says whether the rule is right (x0 - x1 reads 1 as x0 + x1 does): read beside ``rel_mse``.

Images (how far off the data the Gaussian clone lies):

- ``clone_detect_acc``: a discriminator's held-out accuracy at telling real training inputs from their class-
  conditional Gaussian clone (:func:`clone_discriminator`): 0.5 when the clone is indistinguishable from the data,
  1 when every clone input is off the data's manifold. A net's accuracy on the clone (``clone_acc``) reads its
  behaviour on the data only as far as this is near 0.5.
- ``clone_detect_cnn_acc``: the same from a class-conditional 1-D CNN trained on unlimited fresh clone draws and
  scored on held-out real inputs (:func:`clone_discriminator_cnn`): it sees the class and the grid, where what
  separates a class-conditional Gaussian clone from the data lies.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from probe.seeding import INTERVENTION_STREAM

DRAWS = 20


@torch.no_grad()
def _probs(f: Callable, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(f(x).double(), dim=-1)


@torch.no_grad()
def substitution_records(f: Callable, x: torch.Tensor, vocab: int, seed: int = 0):
    """For every example, position s and one other token b (drawn uniformly among the vocab - 1 others): the
    substitution's total variation at every t (E[t, s] terms) and the argmax answers before and after.

    Returns (tv, old, new, a, b): tv (B, T_out, T) float64 numpy, old and new (B, T_out, T) argmax answers at t
    for a substitution at s (old repeated over s), a and b (B, T) the token replaced and its replacement."""
    if vocab < 2:
        raise ValueError("a substitution needs at least two tokens")
    x = torch.as_tensor(x).long()
    B, T = x.shape
    g = torch.Generator().manual_seed(seed)
    b = (x + torch.randint(1, vocab, (B, T), generator=g)) % vocab  # uniform among the other tokens
    p0 = _probs(f, x)  # (B, T_out, K)
    To = p0.shape[1]
    tv = np.zeros((B, To, T))
    new = np.zeros((B, To, T), dtype=np.int64)
    for s in range(T):
        xs = x.clone()
        xs[:, s] = b[:, s]
        p1 = _probs(f, xs)
        tv[:, :, s] = (0.5 * (p1 - p0).abs().sum(-1)).numpy()
        new[:, :, s] = p1.argmax(-1).numpy()
    old = np.repeat(p0.argmax(-1).numpy()[:, :, None], T, axis=2)
    return tv, old, new, x.numpy(), b.numpy()


def substitution_map(tv: np.ndarray) -> np.ndarray:
    """E[t, s]: the mean total variation over examples (module docstring)."""
    return np.asarray(tv, dtype=np.float64).mean(axis=0)


def causal_mass_iv(E: np.ndarray, tol: float = 1e-6) -> float:
    """sum_{s <= t} E[t, s] / sum E (module docstring); NaN when no substitution moves any output by more than
    ``tol`` in total variation (a constant map)."""
    E = np.asarray(E, dtype=np.float64)
    if not np.isfinite(E).all() or E.max(initial=0.0) <= tol:
        return float("nan")
    return float(np.tril(E).sum() / E.sum())


def _modal_share(keys: np.ndarray, outcome: np.ndarray) -> float:
    """The share of records whose outcome is the most common outcome of their key."""
    rows = np.concatenate([keys, outcome[:, None]], axis=1)
    _, key_inv = np.unique(keys, axis=0, return_inverse=True)
    _, pair_inv, pair_counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    best = np.zeros(key_inv.max() + 1, dtype=np.int64)
    np.maximum.at(best, key_inv[np.unique(pair_inv, return_index=True)[1]], pair_counts)
    return float(best.sum() / len(rows))


def time_sharing_iv(records, draws: int = DRAWS, seed: int = 0) -> dict[str, float]:
    """``time_sharing_iv`` and its ``@permuted`` null (mean and sd over draws; module docstring), from
    :func:`substitution_records`. Empty (left out) when no substitution changes an answer."""
    tv, old, new, a, b = records
    B, To, T = old.shape
    ex, t, s = np.nonzero(old != new)
    if len(ex) == 0:
        return {}
    keys = np.stack([t - s, a[ex, s], b[ex, s], old[ex, t, s]], axis=1)
    out = {"time_sharing_iv": _modal_share(keys, new[ex, t, s])}
    rng = np.random.default_rng([seed, INTERVENTION_STREAM])
    K = int(max(old.max(), new.max())) + 1
    null = []
    for _ in range(draws):
        pi = np.argsort(rng.random((To, K)), axis=1)  # a random relabeling of the answers at every position
        kp = keys.copy()
        kp[:, 3] = pi[t, keys[:, 3]]
        null.append(_modal_share(kp, pi[t, new[ex, t, s]]))
    out["time_sharing_iv@permuted"] = float(np.mean(null))
    out["time_sharing_iv_permuted_sd"] = float(np.std(null, ddof=1)) if draws > 1 else 0.0
    return out


def recurrence_iv_measures(f: Callable, x: torch.Tensor, vocab: int, seed: int = 0, draws: int = DRAWS,
                           asked: torch.Tensor | None = None) -> dict[str, float]:
    """``causal_mass_iv`` and ``time_sharing_iv`` (with its null) of the map f on token ids x (module docstring);
    measures that are undefined here are left out, never NaN. ``asked`` (B, T_out) bool: the answers the task
    asks (default: every position); the others are not read."""
    tv, old, new, a, b = substitution_records(f, x, vocab, seed)
    if asked is not None:
        keep = torch.as_tensor(asked).cpu().numpy().astype(bool)[:, :, None] & np.ones(tv.shape, dtype=bool)
        tv = np.where(keep, tv, np.nan)
        new = np.where(keep, new, old)  # a position not asked never counts as a changed answer
    rec = (tv, old, new, a, b)
    n = np.isfinite(tv).sum(axis=0)
    E = np.nansum(tv, axis=0) / np.maximum(n, 1)  # the mean over the examples asked at t (0 where none is)
    out = {"causal_mass_iv": causal_mass_iv(E)}
    out.update(time_sharing_iv(rec, draws, seed))
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}


# -- the add task: relevant inputs by function ---------------------------------------------------------------------
def relevant_grad_share(f: Callable, x: torch.Tensor, relevant) -> float:
    """E_x sum_{j in R} (df/dx_j)^2 / E_x sum_j (df/dx_j)^2 (module docstring); NaN where f is flat on x."""
    x = torch.as_tensor(x).detach().double().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(x).double().sum(), x)
    e = (g**2).sum(0).numpy()
    tot = e.sum()
    return float(e[list(relevant)].sum() / tot) if tot > 0 else float("nan")


@torch.no_grad()
def relevant_iv_share(f: Callable, x: torch.Tensor, relevant, seed: int = 0) -> float:
    """sum_{j in R} V_j / sum_j V_j, V_j = E (f(x^{j <- x'_j}) - f(x))^2 with x' another example of x (a seeded
    permutation) (module docstring); NaN where no input changes f."""
    x = torch.as_tensor(x).double()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    y0 = f(x).double().reshape(len(x), -1)
    V = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        xj = x.clone()
        xj[:, j] = x[perm, j]
        V[j] = float(((f(xj).double().reshape(len(x), -1) - y0) ** 2).sum(1).mean())
    tot = V.sum()
    return float(V[list(relevant)].sum() / tot) if tot > 0 else float("nan")


# -- how far off the data the Gaussian clone lies ------------------------------------------------------------------
def clone_discriminator(x_real, x_clone, seed: int = 0, test_share: float = 0.3) -> float:
    """Held-out accuracy of a discriminator telling real inputs (label 1) from clone inputs (label 0): a
    scikit-learn MLP (one hidden layer of 128 ReLU units, Adam, early stopping) on standardized inputs, trained on
    (1 - test_share) of each set and scored on the rest, with equal numbers of each. 0.5: indistinguishable."""
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    xr = np.asarray(x_real, dtype=np.float64).reshape(len(x_real), -1)
    xc = np.asarray(x_clone, dtype=np.float64).reshape(len(x_clone), -1)
    n = min(len(xr), len(xc))
    if n < 10:
        raise ValueError(f"the discriminator needs at least 10 inputs of each kind, got {n}")
    X = np.concatenate([xr[:n], xc[:n]])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_share, random_state=seed, stratify=y)
    sc = StandardScaler().fit(Xtr)
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, early_stopping=True, random_state=seed)
    clf.fit(sc.transform(Xtr), ytr)
    return float((clf.predict(sc.transform(Xte)) == yte).mean())


def clone_discriminator_cnn(x_train, y_train, x_test, y_test, draw_clone: Callable, n_classes: int, seed: int = 0,
                            steps: int = 3000, batch: int = 128, width: int = 32) -> float:
    """Held-out accuracy of a stronger, class-conditional discriminator of real inputs from their clone: a small 1-D
    CNN (two convolutions of ``width`` channels, kernel 5, ReLU, then the class's one-hot joins a hidden layer of 64
    units) trained ``steps`` Adam steps (lr 1e-3) on batches of half real training inputs, half clone inputs that
    ``draw_clone(labels, generator)`` draws afresh for the same labels (the clone is unlimited, so the net cannot
    learn a fixed clone sample by heart); scored on the real test inputs against as many fresh clone inputs of
    the same labels, so neither side of the score was seen in training. Inputs are flat vectors read as one
    channel over their positions, standardized by the real training set's mean and sd. 0.5: indistinguishable.

    Why beside :func:`clone_discriminator`: that one sees neither the class (the clone matches each class's first
    two moments, so what separates it lies within a class) nor the grid (the higher-order structure of a signal is
    local: edges, bumps), and at chance on MNIST-1D it does not show the clone lies on the data."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_train = torch.as_tensor(x_train, dtype=torch.float32).reshape(len(x_train), -1)
    x_test = torch.as_tensor(x_test, dtype=torch.float32).reshape(len(x_test), -1)
    y_train, y_test = torch.as_tensor(y_train).long(), torch.as_tensor(y_test).long()
    if len(x_train) < 10 or len(x_test) < 10:
        raise ValueError(f"the discriminator needs at least 10 real inputs to train and to test on, got "
                         f"{len(x_train)} and {len(x_test)}")
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
    d = x_train.shape[1]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Sequential(torch.nn.Conv1d(1, width, 5, padding=2), torch.nn.ReLU(),
                                            torch.nn.Conv1d(width, width, 5, padding=2), torch.nn.ReLU())
            self.head = torch.nn.Sequential(torch.nn.Linear(width * d + n_classes, 64), torch.nn.ReLU(),
                                            torch.nn.Linear(64, 1))

        def forward(self, x, y):
            h = self.conv(((x - mu) / sd).unsqueeze(1)).flatten(1)
            return self.head(torch.cat([h, torch.nn.functional.one_hot(y, n_classes).float()], 1)).squeeze(1)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    half = batch // 2
    target = torch.cat([torch.ones(half), torch.zeros(half)])
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (half,), generator=g)
        yb = y_train[idx]
        xb = torch.cat([x_train[idx], torch.as_tensor(draw_clone(yb, g), dtype=torch.float32).reshape(half, -1)])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xb, torch.cat([yb, yb])), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        xc = torch.as_tensor(draw_clone(y_test, g), dtype=torch.float32).reshape(len(y_test), -1)
        real_right = (net(x_test, y_test) > 0).float().mean()
        clone_right = (net(xc, y_test) <= 0).float().mean()
    return float((real_right + clone_right) / 2)
