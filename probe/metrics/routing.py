"""Routing measures for sequence models (docs/design.md §4.7).

Input: T positions x C features per position (C = vocab for one-hot tokens). First-layer weights W (m x T*C)
are read as blocks W_t (m x C), the part of the layer that reads position t.

Weights
- ``position_ipr`` = mean_i sum_t p_i(t)^2 with p_i(t) = ||W_i,t||^2 / ||W_i||^2: 1 when every unit reads one
  position, 1/T when it reads all alike, about (C + 2) / (C T) for random Gaussian weights.
- ``position_sharing`` = mean over pairs s != t of ||V_s^T V_t||_F^2 / r, V_t (C x r) the top-r right singular
  vectors of W_t: 1 when every position is read through one shared projection (attention's Q, K, V), about
  r / C for random blocks.

Function (a model maps float inputs x (B, T, C), one-hot for tokens, to logits; one *item* is one asked answer:
an example and, for per-position targets, the position q where it is asked)
- Jacobian routing map A_s(x) = ||d r(x) / d x_s||_2, r the correct-answer logit (the output for regression),
  x_s in R^C the input at position s. ``routing_accuracy``: share of items whose argmax_s A_s, over positions
  other than the *read* position (where the query or placeholder token sits: its own token steers every
  answer, so it would win the argmax without telling where content comes from), is the ground-truth source.
  Where the answer is found through a key (associative recall, and induction, whose query matches the token
  before the answer's source; the task's ``info["source_key_offset"]`` says where the key sits relative to the
  value), the source is the pair, the matching key and its value: a model
  that routes by content must read both, and a first-order map may well peak at the key, whose match with the
  query decides which value is read. ``routing_accuracy_value`` then keeps the value-only score.
  ``self_mass`` reports the share of A that the read position holds.
- ``intervention_follow``: write another token at the source; share of items whose prediction becomes it.
- ``swap_follow`` (key-value tasks): take the item's pair a and another pair b of the same sequence; swap the keys
  of a and b (``swap_follow_keys``) or their values (``swap_follow_values``). Either way the query's key now sits
  with b's value, so a model that routes by content answers b's value; the share of items that do, and
  ``swap_follow`` their mean. A model that reads fixed positions cannot follow a key swap; one that ignores the
  context follows neither (0); guessing among the values gives 1/pairs.
- ``input_dependence`` = E||P(x) - E P||^2 / E||P(x)||^2 with P = A normalized to sum 1 (read position left
  out), the expectation per output position: 0 for a static mixing map, large when routing depends on content.
- ``perm_equivariance_error`` = E||z(pi x) - z(x)||^2 / E||z(x)||^2 for a random reordering pi of blocks the
  answer ignores (z = logits centred over classes at the asked positions, or the regression output), and
  ``perm_flip_rate``, the share of predictions that change.
- Attention maps give the same scores with A = the attention row of the reading position: per layer and head,
  the best head is reported (``attn_routing_accuracy``, ``attn_input_dependence``, ``attn_layer``, ``attn_head``).

Modular addition: power of the Fourier modes k = 1 .. (p-1)/2 over tokens a = 0 .. p-1,
|sum_a M(a) e^{-2 pi i k a / p}|^2, normalized per row. Rows are the first layer's token blocks at the a and b
positions (``embed_*``; for an MLP its first layer) and the first hidden neurons as functions of a and of b over all
p^2 inputs (``neuron_*``).
``*_freq_1..5``: the key frequencies, the top modes of the row-averaged power; ``*_fourier_top``: the share
of that power they hold (random: 5 / ((p-1)/2), ``*_fourier_top@chance``); ``*_fourier_peak``: the mean share of each
row's own strongest mode (1 for pure sinusoids, which an MLP may spread over many frequencies; random: H_K / K,
``*_fourier_peak@chance``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


# -- weights -------------------------------------------------------------------------------------------------
def position_blocks(W, geometry) -> np.ndarray:
    """W (m x T*C) as blocks (m, T, C), in the original position order."""
    if hasattr(W, "detach"):
        W = W.detach().cpu().double().numpy()
    F = geometry.fields(np.asarray(W, dtype=np.float64))  # (m, C, T)
    return F.reshape(F.shape[0], geometry.channels, -1).transpose(0, 2, 1)


def position_ipr(W, geometry) -> float:
    """mean_i sum_t p_i(t)^2 over units with nonzero weights (module docstring)."""
    e = (position_blocks(W, geometry) ** 2).sum(-1)
    tot = e.sum(1)
    p = e[tot > 0] / tot[tot > 0, None]
    return float((p**2).sum(1).mean()) if len(p) else float("nan")


def position_ipr_random(geometry) -> float:
    C, T = geometry.channels, geometry.n_positions
    return (C + 2) / (C * T)


def sharing_rank(geometry, r: int = 8) -> int:
    """The subspace dimension used: r, at most half the features (so that random blocks stay below 1)."""
    return max(1, min(r, geometry.channels // 2))


def position_sharing(W, geometry, r: int = 8) -> float:
    """Mean over position pairs s != t of ||V_s^T V_t||_F^2 / r (module docstring); all-zero blocks skipped."""
    B = torch.from_numpy(position_blocks(W, geometry))
    r = sharing_rank(geometry, r)
    B = B[:, B.pow(2).sum((0, 2)) > 0]  # drop all-zero blocks
    if B.shape[1] < 2:
        return float("nan")
    # the right singular vectors of W_t are the eigenvectors of its C x C Gram matrix W_t^T W_t: one batched
    # eigh instead of T SVDs of m x C matrices (in torch, whose thread count the caller controls)
    V = torch.linalg.eigh(torch.einsum("mtc,mtd->tcd", B, B))[1][..., -r:]  # (T, C, r), top-r eigenvectors
    ov = torch.einsum("scr,tcq->stqr", V, V).pow(2).sum((2, 3)) / r  # (T, T) overlaps
    T = len(ov)
    return float((ov.sum() - ov.diagonal().sum()) / (T * (T - 1)))


def position_sharing_random(geometry, r: int = 8) -> float:
    return sharing_rank(geometry, r) / geometry.channels


# -- routing maps --------------------------------------------------------------------------------------------
@dataclass
class RoutingMaps:
    """Maps A (items, T) >= 0 with, per item: its example, the output position q (-1: one answer per example),
    the read position excluded from the argmax (-1: none), the ground-truth source (-1: unknown) and, for
    key-value tasks, the position of the source's key (-1: none)."""

    A: np.ndarray
    example: np.ndarray
    out_pos: np.ndarray
    read: np.ndarray
    source: np.ndarray
    key: np.ndarray | None = None

    def __post_init__(self):
        if self.key is None:
            self.key = np.full(len(self.source), -1)


def answer_items(y: torch.Tensor, source=None, query_pos: int | None = None):
    """(example, out_pos, read, source) arrays of the asked answers in targets y: (B, T) with -100 where
    nothing is asked, (B,) classes, or None (one real output per example)."""
    if y is not None and y.dim() == 2 and not y.is_floating_point():
        ex, q = (y.cpu() != -100).nonzero(as_tuple=True)
        src = source.cpu()[ex, q] if source is not None else torch.full_like(ex, -1)
        return ex.numpy(), q.numpy(), q.numpy(), src.numpy()
    n = len(y) if y is not None else len(source)
    ex = np.arange(n)
    src = source.cpu().numpy() if source is not None else np.full(n, -1)
    return ex, np.full(n, -1), np.full(n, -1 if query_pos is None else query_pos), src


def _answer_score(out: torch.Tensor, y, ex, q) -> torch.Tensor:
    """r per item: the correct-class logit at q (or of the example), or the regression output."""
    o = out[ex] if out.dim() == 2 else out[ex, q]
    if y is None or y.is_floating_point():
        return o[:, 0]
    yy = y[ex] if y.dim() == 1 else y[ex, q]
    return o.gather(1, yy[:, None])[:, 0]


def jacobian_maps(f, x: torch.Tensor, y, source=None, query_pos: int | None = None,
                  key_offset: int | None = None) -> RoutingMaps:
    """A_s(x) = ||d r(x) / d x_s||_2 for every asked answer (module docstring). x: float (B, T, C). ``key_offset``:
    where the source's key sits relative to it (key-value tasks), for the pair routing accuracy."""
    ex, q, read, src = answer_items(y, source, query_pos)
    x = x.detach().float().clone().requires_grad_(True)
    out = f(x)
    yd = None if y is None else y.to(out.device)
    A = np.zeros((len(ex), x.shape[1]))
    # examples do not interact, so one backward pass per output position gives every example's map
    for qq in np.unique(q):
        sel = np.nonzero(q == qq)[0]
        r = _answer_score(out, yd, torch.as_tensor(ex[sel]), torch.as_tensor(q[sel]))
        (g,) = torch.autograd.grad(r.sum(), x, retain_graph=True)
        A[sel] = g[ex[sel]].norm(dim=-1).cpu().double().numpy()
    key = np.where(src >= 0, src + key_offset, -1) if key_offset is not None else None
    return RoutingMaps(A, ex, q, read, src, key)


def _excluding_read(maps: RoutingMaps) -> np.ndarray:
    A = maps.A.copy()
    has = maps.read >= 0
    A[np.nonzero(has)[0], maps.read[has]] = 0.0
    return A


def routing_accuracy(maps: RoutingMaps, value_only: bool = False) -> float:
    """Share of items with a known source whose argmax over positions other than the read one is the source: the
    source's position or, where the items have one, its key's (the pair; module docstring). ``value_only``: the
    source's position alone (``routing_accuracy_value``)."""
    known = maps.source >= 0
    if not known.any():
        return float("nan")
    top = _excluding_read(maps)[known].argmax(1)
    hit = top == maps.source[known]
    if not value_only:
        key = maps.key[known]
        hit |= (key >= 0) & (top == key)
    return float(hit.mean())


def self_mass(maps: RoutingMaps) -> float:
    """Mean share of the map at the read position."""
    has = maps.read >= 0
    if not has.any():
        return float("nan")
    A = maps.A[has]
    tot = A.sum(1)
    return float(np.mean(A[np.arange(len(A)), maps.read[has]] / np.where(tot > 0, tot, 1)))


def input_dependence(maps: RoutingMaps) -> float:
    """E||P - E P||^2 / E||P||^2, P the map normalized to sum 1 without the read position; E per output position."""
    A = _excluding_read(maps)
    tot = A.sum(1, keepdims=True)
    live = tot[:, 0] > 0
    P, groups = A[live] / tot[live], maps.out_pos[live]
    if not len(P):
        return float("nan")
    num = sum(((P[groups == g] - P[groups == g].mean(0)) ** 2).sum() for g in np.unique(groups))
    return float(num / (P**2).sum())


def relevant_mass(maps: RoutingMaps, relevant) -> float:
    """Mean share of the (whole) map on a set of relevant positions (sparse parity's k bits)."""
    tot = maps.A.sum(1)
    live = tot > 0
    return float((maps.A[live][:, np.asarray(relevant)].sum(1) / tot[live]).mean())


def mean_routing_map(maps: RoutingMaps, T: int) -> np.ndarray:
    """The mean normalized map per output position, (T, T): row q = output position, column s = input
    position (rows without asked answers are nan). For reverse the mass sits on the anti-diagonal."""
    P = maps.A / np.where(maps.A.sum(1, keepdims=True) > 0, maps.A.sum(1, keepdims=True), 1)
    M = np.full((T, T), np.nan)
    for q in np.unique(maps.out_pos[maps.out_pos >= 0]):
        M[q] = P[maps.out_pos == q].mean(0)
    return M


def attention_routing(attn: torch.Tensor, maps: RoutingMaps) -> RoutingMaps:
    """Maps from one head's attention (B, T, T): the row of each item's output position (the last position
    for one answer per example, where the transformer reads out), with the items' read and source."""
    a = attn.detach().cpu().double().numpy()
    rows = np.where(maps.out_pos >= 0, maps.out_pos, a.shape[1] - 1)
    return RoutingMaps(a[maps.example, rows], maps.example, maps.out_pos, maps.read, maps.source, maps.key)


def attention_scores(attns: list[torch.Tensor], maps: RoutingMaps) -> dict[str, float]:
    """The best head's scores: the head with the highest routing accuracy where sources are known (else the
    most input-dependent head), its input dependence, layer and head."""
    best, known = None, bool((maps.source >= 0).any())
    for layer, A in enumerate(attns):
        for head in range(A.shape[1]):
            m = attention_routing(A[:, head], maps)
            row = {"attn_input_dependence": input_dependence(m), "attn_layer": float(layer), "attn_head": float(head)}
            if known:
                row["attn_routing_accuracy"] = routing_accuracy(m)
            key = row["attn_routing_accuracy"] if known else row["attn_input_dependence"]
            if best is None or key > best[0]:
                best = (key, row)
    return best[1] if best else {}


# -- interventions -----------------------------------------------------------------------------------------
@torch.no_grad()
def intervention_follow(f, tokens: torch.Tensor, maps: RoutingMaps, replace_tokens, generator=None) -> float:
    """Write a different token r (uniform over ``replace_tokens`` minus the present one) at each item's source;
    the share of items whose prediction becomes r. tokens: (B, T) ids."""
    known = np.nonzero(maps.source >= 0)[0]
    if not len(known):
        return float("nan")
    ex, src, q = (torch.as_tensor(a[known]) for a in (maps.example, maps.source, maps.out_pos))
    x = tokens.cpu()[ex].clone()
    cur = x[torch.arange(len(ex)), src]
    R = torch.as_tensor(replace_tokens).cpu()
    pick = R[torch.randint(0, len(R), (len(ex),), generator=generator)]
    # a draw equal to the present token is redrawn from the others, keeping the draw uniform over R \ {cur}
    other = R[torch.randint(0, len(R), (len(ex),), generator=generator)]
    while bool((pick == cur).any()):
        pick = torch.where(pick == cur, other, pick)
        other = R[torch.randint(0, len(R), (len(ex),), generator=generator)]
    x[torch.arange(len(ex)), src] = pick
    out = f(x.to(tokens.device)).cpu()
    o = out[torch.arange(len(ex)), q] if out.dim() == 3 else out
    return float((o.argmax(-1) == pick).float().mean())


@torch.no_grad()
def swap_follow(f, tokens: torch.Tensor, maps: RoutingMaps, blocks, generator=None) -> dict[str, float]:
    """Swap the keys, or the values, of each item's pair a and another pair b of its sequence (module docstring);
    the share of items whose prediction becomes b's value after each swap. tokens: (B, T) ids; blocks: (P, 2)
    positions of the key and the value of each pair. Returns ``swap_follow_keys``, ``swap_follow_values`` and
    their mean ``swap_follow``; empty without items whose source is a pair's value, or with one pair."""
    blocks = torch.as_tensor(blocks).cpu()
    P = len(blocks)
    value_pair = {int(v): j for j, v in enumerate(blocks[:, 1])}
    items = [i for i in np.nonzero(maps.source >= 0)[0] if int(maps.source[i]) in value_pair]
    if P < 2 or not items:
        return {}
    items = np.asarray(items)
    ex, q = torch.as_tensor(maps.example[items]), torch.as_tensor(maps.out_pos[items])
    a = torch.tensor([value_pair[int(s)] for s in maps.source[items]])
    b = (a + torch.randint(1, P, (len(items),), generator=generator)) % P  # uniform over the other pairs
    x = tokens.cpu()[ex]
    rows = torch.arange(len(items))
    target = x[rows, blocks[b, 1]]  # b's value: the answer after either swap
    out = {}
    for name, col in (("keys", 0), ("values", 1)):
        xs = x.clone()
        pa, pb = blocks[a, col], blocks[b, col]
        xs[rows, pa], xs[rows, pb] = x[rows, pb], x[rows, pa]
        o = f(xs.to(tokens.device)).cpu()
        o = o[rows, q] if o.dim() == 3 else o
        out[f"swap_follow_{name}"] = float((o.argmax(-1) == target).float().mean())
    out["swap_follow"] = (out["swap_follow_keys"] + out["swap_follow_values"]) / 2
    return out


@torch.no_grad()
def perm_equivariance(f, x: torch.Tensor, y, blocks, generator=None) -> dict[str, float]:
    """Reorder the blocks of every example by a random permutation and compare outputs at the asked positions
    (module docstring). x: (B, T) ids or (B, T, C) floats; blocks: (n_blocks, block_len) positions."""
    blocks = torch.as_tensor(blocks).cpu()
    B, T = x.shape[0], x.shape[1]
    idx = torch.arange(T).repeat(B, 1)
    pi = torch.rand(B, len(blocks), generator=generator).argsort(1)  # block j takes block pi[j]'s content
    idx[:, blocks.flatten()] = blocks[pi].flatten(1)
    idx = idx.to(x.device)
    xp = x.gather(1, idx if x.dim() == 2 else idx[..., None].expand_as(x))
    z, zp = f(x).float(), f(xp).float()
    if z.dim() == 3:
        mask = (y != -100).to(z.device)
        z, zp = z[mask], zp[mask]
    res = {}
    if y is not None and not y.is_floating_point():
        res["perm_flip_rate"] = float((z.argmax(-1) != zp.argmax(-1)).float().mean())
        z, zp = z - z.mean(-1, keepdim=True), zp - zp.mean(-1, keepdim=True)
    res["perm_equivariance_error"] = float((zp - z).pow(2).sum() / z.pow(2).sum().clamp_min(1e-30))
    return res


# -- modular addition ----------------------------------------------------------------------------------------
def fourier_spectra(M, p: int) -> np.ndarray:
    """Per row of M (rows x p, a function of the token a = 0 .. p-1) the power of the Fourier modes
    k = 1 .. (p-1)//2 (k and p - k merged, the constant mode left out), normalized to sum 1; all-constant
    rows are dropped. Shape (live rows, (p-1)//2)."""
    if hasattr(M, "detach"):
        M = M.detach().cpu().double().numpy()
    P = np.abs(np.fft.rfft(np.asarray(M, dtype=np.float64), axis=1)[:, 1 : (p - 1) // 2 + 1]) ** 2
    tot = P.sum(1)
    live = tot > 1e-12 * max(tot.max(initial=0), 1e-300)
    return P[live] / tot[live, None]


def fourier_power(M, p: int) -> np.ndarray:
    """The mean over rows of :func:`fourier_spectra`: which modes the rows use together."""
    return fourier_spectra(M, p).mean(0)


def fourier_peak_share(M, p: int) -> float:
    """Mean over rows of the largest share of one mode: 1 when every row is a single sinusoid (each may use
    its own frequency); H_K / K for random rows (K = (p-1)//2 modes, H_K the harmonic number), since a
    random row's normalized power is uniform on the simplex."""
    return float(fourier_spectra(M, p).max(1).mean())


def fourier_peak_random(p: int) -> float:
    K = (p - 1) // 2
    return float(np.sum(1 / np.arange(1, K + 1)) / K)


def key_frequencies(power: np.ndarray, k: int = 5) -> tuple[list[int], float]:
    """The k strongest modes (frequencies 1 ..) and the share of power they hold."""
    top = np.argsort(power)[::-1][:k]
    return [int(i) + 1 for i in top], float(power[top].sum() / power.sum())


# -- everything that applies to one model and task ------------------------------------------------------------
def _all_pairs(task, p: int) -> torch.Tensor:
    """Every input ``a b =`` of a modular-addition task, row a * p + b: its training and test splits together,
    which cover the p x p grid once (ValueError otherwise)."""
    x = torch.cat([task.x_train, task.x_test]).cpu()
    key = x[:, 0] * p + x[:, 1]
    order = torch.argsort(key)
    if len(x) != p * p or not torch.equal(key[order], torch.arange(p * p)):
        raise ValueError(f"task {task.name}: its splits do not hold each of the {p} x {p} pairs once")
    return x[order]


def _modadd_frequencies(model, task, W, k: int = 5) -> dict[str, float]:
    """Key frequencies of the first layer's token blocks at the a and b positions (the embedding; for an MLP
    its first layer) and of the first hidden neurons as functions of a and of b over the full p x p grid."""
    p = int(task.info["p"])
    B = position_blocks(W, task.geometry)
    chance = {"fourier_top@chance": k / ((p - 1) // 2), "fourier_peak@chance": fourier_peak_random(p)}
    rows = np.concatenate([B[:, 0, :p], B[:, 1, :p]])
    freqs, share = key_frequencies(fourier_power(rows, p), k)
    res = {f"embed_freq_{i + 1}": float(f) for i, f in enumerate(freqs)}
    res.update(embed_fourier_top=share, embed_fourier_peak=fourier_peak_share(rows, p),
               **{f"embed_{key}": v for key, v in chance.items()})
    if hasattr(model, "first_hidden"):
        x = _all_pairs(task, p)
        H = model.first_hidden(x.to(next(model.parameters()).device))
        if H is not None:
            H = H.detach().cpu().double().numpy().reshape(p, p, -1)  # (a, b, unit)
            over_a = H.transpose(1, 2, 0).reshape(-1, p)
            over_b = H.transpose(0, 2, 1).reshape(-1, p)
            power = (fourier_power(over_a, p) + fourier_power(over_b, p)) / 2
            freqs, share = key_frequencies(power, k)
            res.update({f"neuron_freq_{i + 1}": float(f) for i, f in enumerate(freqs)}, neuron_fourier_top=share,
                       neuron_fourier_peak=(fourier_peak_share(over_a, p) + fourier_peak_share(over_b, p)) / 2,
                       **{f"neuron_{key}": v for key, v in chance.items()})
    return res


def sequence_measures(model, task, n: int = 256, seed: int = 0) -> dict[str, float]:
    """Every routing measure that applies to ``model`` on sequence ``task``, on n test examples drawn with
    ``seed``: position ipr and sharing (with their random references as ``X@gaussian``), the Jacobian routing
    scores (on the key-value pair and on the value alone for key-value tasks), the intervention (tasks whose answer
    is the token at its source), the swaps of keys and of values (key-value tasks), the block-permutation error
    (tasks with ``extras["blocks"]``), attention scores (models with ``attention_maps``), key frequencies (modadd)
    and the ridge reference (icl-regression). Keys are module-docstring names, a null or chance level of measure X as
    ``X@kind`` (the one way probe stores a null); values are floats."""
    geo = task.geometry
    T, C = geo.spatial[0], geo.channels
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(task.x_test), generator=g)[:n]
    x, y = task.x_test.cpu()[idx].to(dev), task.y_test.cpu()[idx].to(dev)
    src = task.extras.get("source_test")
    src = None if src is None else src.cpu()[idx]
    res: dict[str, float] = {}
    try:
        W = model.first_layer_dense()
        res.update({"position_ipr": position_ipr(W, geo), "position_ipr@gaussian": position_ipr_random(geo),
                    "position_sharing": position_sharing(W, geo),
                    "position_sharing@gaussian": position_sharing_random(geo)})
        feats = torch.nn.functional.one_hot(x, C).float() if task.vocab else x.reshape(len(x), T, C)
        key_offset = task.info.get("source_key_offset")
        maps = jacobian_maps(model, feats, y, src, task.info.get("query_pos"), key_offset)
        if src is not None:
            res["routing_accuracy"] = routing_accuracy(maps)
            if key_offset is not None:
                res["routing_accuracy_value"] = routing_accuracy(maps, value_only=True)
        if (maps.read >= 0).any():
            res["self_mass"] = self_mass(maps)
        res["input_dependence"] = input_dependence(maps)
        if "relevant" in task.extras:
            res["relevant_mass"] = relevant_mass(maps, task.extras["relevant"].cpu())
            res["relevant_mass@gaussian"] = len(task.extras["relevant"]) / T  # a uniform map's share
        if task.info.get("answer_at_source") and task.vocab and src is not None:
            res["intervention_follow"] = intervention_follow(model, x, maps, task.extras["replace_tokens"], g)
        if key_offset is not None and task.vocab and "blocks" in task.extras:
            res.update(swap_follow(model, x, maps, task.extras["blocks"], g))
        if "blocks" in task.extras:
            res.update(perm_equivariance(model, x if task.vocab else feats, y, task.extras["blocks"], g))
        if hasattr(model, "attention_maps"):
            res.update(attention_scores(model.attention_maps(x), maps))
        if "p" in task.info:
            res.update(_modadd_frequencies(model, task, W))
        if "ridge_mse" in task.info:
            with torch.no_grad():
                res["model_mse"] = float((model(task.x_test.to(dev)) - task.y_test.to(dev)).pow(2).mean())
            res["ridge_mse"] = float(task.info["ridge_mse"])
    finally:
        model.train(was_training)
    return res
