"""Sequence tasks (docs/design.md §7): static routing (copy, reverse), content routing (mqar, induction), sort,
in-context regression, modular addition and sparse parity.

Conventions shared by every task here:
- Token tasks give LongTensor inputs (N, T) and set ``Task.vocab``; the geometry is T positions x ``vocab``
  features (the one-hot a flattened MLP reads): ``Geometry(vocab, (T,), channels_last=True, kind="sequence")``.
  ``icl-regression`` gives real inputs (N, T*C) in the same layout, C = dim + 1.
- Targets are a class per example (N,), or per position (N, T) with -100 where nothing is asked.
- ``extras["source_test"]``: the position in the input that holds each test answer (same shape as
  ``y_test``, -1 where there is none). ``extras["replace_tokens"]``: tokens an intervention may write at a
  source (the answer then becomes that token: ``info["answer_at_source"]``). ``extras["blocks"]``: (B, b)
  positions of blocks whose order the answer ignores (key-value pairs, in-context examples).
  ``info["query_pos"]``: for one answer per example, the position of the token that asks (the last).
  ``info["source_key_offset"]``: where the key of the answer's pair sits relative to its source (mqar: the key
  before its value; induction: the earlier copy of the query token before the token to predict; both -1), so that
  routing is scored on the whole pair.
- ``fresh=True``: training batches are drawn anew at every step by ``sampler``, a pure function of
  (seed, step); ``x_train`` (``n_train`` examples) then only serves the trainer's train-accuracy estimate.
  ``fresh=False``: a fixed training set of ``n_train`` examples. The test set is an independent stream.
"""

from __future__ import annotations

import torch

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.seeding import TEST_SET, TRAIN_SET, stream
from probe.tasks.registry import SEQUENCE_TRAINING, Task, register



def _uniform_choice(g, n, k, low, high):
    """(n, k) distinct integers from [low, high) per row (k random columns of a random permutation)."""
    return torch.rand(n, high - low, generator=g).argsort(dim=1)[:, :k] + low


class _Sampler:
    """Fresh batches: ``sampler(seed, step, batch, device)`` is a pure function of (seed, step)."""

    def __init__(self, gen, params: dict):
        self.gen, self.params = gen, params

    def __call__(self, seed: int, step: int, batch: int, device="cpu"):
        x, y, _ = self.gen(stream(seed, step), batch, **self.params)
        return x.to(device), y.to(device)


def _check(name: str, ok: bool, what: str):
    if not ok:
        raise ConfigError(f"task {name}: {what}")


def _task(name, gen, params, seed, n_train, n_test, fresh, *, channels, T, n_outputs, vocab, info, extras=None,
          loss="ce") -> Task:
    _check(name, n_train >= 1 and n_test >= 1, f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    x_tr, y_tr, _ = gen(stream(seed, TRAIN_SET), n_train, **params)
    x_te, y_te, src = gen(stream(seed, TEST_SET), n_test, **params)
    extras = dict(extras or {})
    if src is not None:
        extras["source_test"] = src
    geo = Geometry(channels=channels, spatial=(T,), channels_last=True, kind="sequence")
    return Task(name, x_tr, y_tr, x_te, y_te, geometry=geo, n_outputs=n_outputs, loss=loss, vocab=vocab,
                info=info, sampler=_Sampler(gen, params) if fresh else None, extras=extras)


# -- multi-query associative recall ----------------------------------------------------------------------
def gen_mqar(g, n, vocab, pairs, length):
    """x = k_1 v_1 ... k_P v_P q_1 ... q_Q (Q = length - 2P). Keys are P distinct tokens of [0, V/2), values
    P distinct tokens of [V/2, V); every query q_i is one of the keys, drawn uniformly, and its target is
    that key's value. Source of the answer at query i: the position 2j + 1 of the value."""
    keys = _uniform_choice(g, n, pairs, 0, vocab // 2)
    vals = _uniform_choice(g, n, pairs, vocab // 2, vocab)
    Q = length - 2 * pairs
    j = torch.randint(0, pairs, (n, Q), generator=g)
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0 : 2 * pairs : 2], x[:, 1 : 2 * pairs : 2] = keys, vals
    x[:, 2 * pairs :] = keys.gather(1, j)
    y = torch.full((n, length), -100, dtype=torch.long)
    y[:, 2 * pairs :] = vals.gather(1, j)
    src = torch.full((n, length), -1, dtype=torch.long)
    src[:, 2 * pairs :] = 2 * j + 1
    return x, y, src


@register("mqar", "multi-query associative recall: key-value pairs, then queries asking earlier keys' values",
          kind="sequence")
def mqar(seed: int = 0, vocab: int = 64, pairs: int = 4, length: int = 16, n_train: int = 10000, n_test: int = 1000,
         fresh: bool = True) -> Task:
    _check("mqar", vocab % 2 == 0 and pairs >= 1 and vocab // 2 >= pairs,
           f"vocab must be even with vocab/2 >= pairs, got vocab={vocab}, pairs={pairs}")
    _check("mqar", length > 2 * pairs, f"length must exceed 2 * pairs (room for queries), got {length}")
    params = dict(vocab=vocab, pairs=pairs, length=length)
    blocks = torch.arange(2 * pairs).reshape(pairs, 2)
    # the answer's key sits right before its value (source): the full source is the pair (probe.metrics.routing)
    info = {**params, "chance_acc_within_values": 1 / pairs, "answer_at_source": True, "source_key_offset": -1}
    return _task("mqar", gen_mqar, params, seed, n_train, n_test, fresh, channels=vocab, T=length, n_outputs=vocab,
                 vocab=vocab, info=info, extras={"blocks": blocks, "replace_tokens": torch.arange(vocab // 2, vocab)})


# -- induction ---------------------------------------------------------------------------------------------
def gen_induction(g, n, vocab, length, prefix, fixed_offset):
    """Random tokens x (T = length); the first ``prefix`` tokens P are repeated from offset o, cut by the end
    of the sequence: x[o + i] = P[i] for i < m = T - o. The target is P[m], the token that followed the
    repeated part the first time; its source is position m. o is uniform on [max(prefix, T - prefix + 1), T - 1]
    (the repeat starts after the prefix and stops before its end), or ``fixed_offset`` (static routing)."""
    x = torch.randint(0, vocab, (n, length), generator=g)
    lo = max(prefix, length - prefix + 1)
    o = torch.full((n,), fixed_offset) if fixed_offset else torch.randint(lo, length, (n,), generator=g)
    pos = torch.arange(length)
    rep = pos[None, :] >= o[:, None]
    x = torch.where(rep, x.gather(1, (pos[None, :] - o[:, None]).clamp(min=0)), x)
    src = length - o
    return x, x.gather(1, src[:, None])[:, 0], src


@register("induction", "induction: a random prefix repeated at a random (or fixed) offset; predict the next token",
          kind="sequence")
def induction(seed: int = 0, vocab: int = 64, length: int = 32, prefix: int = 16, fixed_offset: int = 0,
              n_train: int = 10000, n_test: int = 1000, fresh: bool = True) -> Task:
    lo = max(prefix, length - prefix + 1)
    _check("induction", 2 <= prefix and lo <= length - 1,
           "need 2 <= prefix and max(prefix, length - prefix + 1) < length, "
           f"got length={length}, prefix={prefix}")
    _check("induction", fixed_offset == 0 or lo <= fixed_offset <= length - 1,
           f"fixed_offset must be 0 (random) or in [{lo}, {length - 1}], got {fixed_offset}")
    params = dict(vocab=vocab, length=length, prefix=prefix, fixed_offset=fixed_offset)
    # the query (the last token, P[m-1]) matches the earlier P[m-1] right before the answer's source P[m]: the full
    # source is that pair, as in mqar
    info = {**params, "answer_at_source": True, "query_pos": length - 1, "source_key_offset": -1}
    return _task("induction", gen_induction, params, seed, n_train, n_test, fresh, channels=vocab, T=length,
                 n_outputs=vocab, vocab=vocab, info=info, extras={"replace_tokens": torch.arange(vocab)})


# -- copy, reverse, sort -------------------------------------------------------------------------------------
def gen_static(g, n, vocab, length, mode):
    """x = c_0 .. c_{L-1} followed by L blank tokens (vocab - 1); content tokens from [0, vocab - 1) (distinct
    for sort). At output slot L + i the target is c_i (copy), c_{L-1-i} (reverse) or the i-th smallest
    content token (sort); the source is the position holding it."""
    if mode == "sort":
        c = _uniform_choice(g, n, length, 0, vocab - 1)
        src_c = c.argsort(dim=1)
    else:
        c = torch.randint(0, vocab - 1, (n, length), generator=g)
        i = torch.arange(length)
        src_c = (i if mode == "copy" else length - 1 - i).expand(n, length)
    x = torch.cat([c, torch.full((n, length), vocab - 1)], dim=1)
    y = torch.cat([torch.full((n, length), -100), c.gather(1, src_c)], dim=1)
    src = torch.cat([torch.full((n, length), -1), src_c], dim=1)
    return x, y, src


def _static(name, seed, vocab, length, n_train, n_test, fresh):
    _check(name, vocab >= 3 and length >= 1, f"need vocab >= 3 and length >= 1, got {vocab}, {length}")
    if name == "sort":
        _check(name, vocab - 1 >= length,
               f"sort draws distinct tokens: need vocab - 1 >= length, got {vocab}, {length}")
    params = dict(vocab=vocab, length=length, mode=name)
    info = {"vocab": vocab, "length": length, "answer_at_source": name != "sort"}
    return _task(name, gen_static, params, seed, n_train, n_test, fresh, channels=vocab, T=2 * length,
                 n_outputs=vocab, vocab=vocab, info=info, extras={"replace_tokens": torch.arange(vocab - 1)})


@register("copy", "copy: L content tokens, then L blanks where the content is asked back in order", kind="sequence")
def copy(seed: int = 0, vocab: int = 16, length: int = 8, n_train: int = 10000, n_test: int = 1000,
         fresh: bool = True) -> Task:
    return _static("copy", seed, vocab, length, n_train, n_test, fresh)


@register("reverse", "reverse: L content tokens, then L blanks where the content is asked back reversed",
          kind="sequence")
def reverse(seed: int = 0, vocab: int = 16, length: int = 8, n_train: int = 10000, n_test: int = 1000,
            fresh: bool = True) -> Task:
    return _static("reverse", seed, vocab, length, n_train, n_test, fresh)


@register("sort", "sort: L distinct content tokens, then L blanks where they are asked back sorted", kind="sequence")
def sort(seed: int = 0, vocab: int = 16, length: int = 8, n_train: int = 10000, n_test: int = 1000,
         fresh: bool = True) -> Task:
    return _static("sort", seed, vocab, length, n_train, n_test, fresh)


# -- in-context linear regression --------------------------------------------------------------------------
def gen_icl(g, n, dim, context, noise):
    """Per example w ~ N(0, I/d); x_i ~ N(0, I_d); y_i = w.x_i + noise * eps. Position i < K holds (x_i, y_i),
    position K holds (x_q, 0); the target is y_q. Flat layout channels_last: (N, (K + 1) * (d + 1))."""
    w = torch.randn(n, dim, generator=g) / dim**0.5
    xs = torch.randn(n, context + 1, dim, generator=g)
    ys = (xs @ w[:, :, None])[..., 0] + noise * torch.randn(n, context + 1, generator=g)
    tok = torch.cat([xs, ys[..., None]], dim=2)
    tok[:, -1, -1] = 0.0
    return tok.flatten(1), ys[:, -1:].clone(), None


def ridge_mse(x, y, dim, context, noise) -> float:
    """Test MSE of the Bayes-optimal ridge estimator w = (X^T X + lam I)^-1 X^T y with lam = noise^2 d (the prior
    w ~ N(0, I/d)); at noise 0 a tiny lam gives the minimum-norm interpolant."""
    tok = x.reshape(len(x), context + 1, dim + 1).double()
    X, Y, xq = tok[:, :-1, :-1], tok[:, :-1, -1], tok[:, -1, :-1]
    lam = max(noise**2 * dim, 1e-8)
    A = X.transpose(1, 2) @ X + lam * torch.eye(dim, dtype=torch.float64)
    w = torch.linalg.solve(A, (X.transpose(1, 2) @ Y[..., None]))[..., 0]
    return float(((xq * w).sum(1) - y[:, 0].double()).pow(2).mean())


@register("icl-regression", "in-context linear regression: K (x, y) examples then a query x; ridge as reference",
          kind="sequence")
def icl_regression(seed: int = 0, dim: int = 8, context: int = 16, noise: float = 0.1, n_train: int = 10000,
                   n_test: int = 1000, fresh: bool = True) -> Task:
    _check("icl-regression", dim >= 1 and context >= 1 and noise >= 0, "need dim >= 1, context >= 1, noise >= 0")
    params = dict(dim=dim, context=context, noise=noise)
    t = _task("icl-regression", gen_icl, params, seed, n_train, n_test, fresh, channels=dim + 1, T=context + 1,
              n_outputs=1, vocab=None, loss="mse", info={**params, "query_pos": context},
              extras={"blocks": torch.arange(context)[:, None]})
    t.info["ridge_mse"] = ridge_mse(t.x_test, t.y_test, dim, context, noise)
    t.info["zero_mse"] = float(t.y_test.pow(2).mean())
    return t


# -- modular addition --------------------------------------------------------------------------------------
def all_pairs(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every input ``a b =`` (tokens a, b < p and '=' = p), shape (p^2, 3), row a * p + b; targets (a + b) mod p."""
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1), (a + b) % p


@register("modadd", "modular addition a + b mod p over all pairs, a seeded train fraction (Nanda et al.)",
          kind="sequence", training={**SEQUENCE_TRAINING, "weight_decay": 1.0, "batch_size": 512})
def modadd(seed: int = 0, p: int = 113, train_frac: float = 0.5) -> Task:
    _check("modadd", p >= 2 and 0 < train_frac < 1, f"need p >= 2 and 0 < train_frac < 1, got {p}, {train_frac}")
    x, y = all_pairs(p)
    perm = torch.randperm(p * p, generator=stream(seed, TRAIN_SET))
    n_tr = int(round(train_frac * p * p))
    tr, te = perm[:n_tr], perm[n_tr:]
    geo = Geometry(channels=p + 1, spatial=(3,), channels_last=True, kind="sequence")
    info = {"p": p, "train_frac": train_frac, "query_pos": 2}
    return Task("modadd", x[tr], y[tr], x[te], y[te], geometry=geo, n_outputs=p, vocab=p + 1, info=info)


# -- sparse parity -----------------------------------------------------------------------------------------
def gen_parity(g, n, bits, relevant):
    x = torch.randint(0, 2, (n, bits), generator=g)
    return x, x[:, relevant].sum(1) % 2, None


@register("parity", "sparse parity: n random bits, the label is the XOR of k of them (a seeded subset)",
          kind="sequence")
def parity(seed: int = 0, n: int = 20, k: int = 3, n_train: int = 1000, n_test: int = 1000,
           fresh: bool = False) -> Task:
    _check("parity", 1 <= k <= n, f"need 1 <= k <= n, got n={n}, k={k}")
    relevant = torch.randperm(n, generator=stream(seed, 7))[:k].sort().values
    params = dict(bits=n, relevant=relevant)
    info = {"n": n, "k": k, "relevant": relevant.tolist()}
    return _task("parity", gen_parity, params, seed, n_train, n_test, fresh, channels=2, T=n, n_outputs=2, vocab=2,
                 info=info, extras={"relevant": relevant})
