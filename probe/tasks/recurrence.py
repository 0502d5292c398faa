"""Recurrence tasks: an answer at every position that a recurrence computes with a small state.

- ``running-parity``: bits x_t in {0, 1}; y_t = (x_0 + ... + x_t) mod 2 (a 2-state recurrence).
- ``count``: tokens from [0, vocab); y_t = #{s <= t : x_s = 0}, the running count of token 0 (a counter).
- ``dyck``: brackets, token 0 = "(" and 1 = ")"; y_t = the depth #"(" - #")" of the prefix x_0 .. x_t, so y_t = 0
  says the prefix is balanced. Inputs are Dyck-1 prefixes: the depth never goes below 0 (at depth 0 the next
  token is "("), and with ``max_depth`` > 0 never above it (there the next token is ")"); otherwise "(" and ")"
  are equally likely.
- ``delayed-copy``: tokens from [0, vocab); y_t = x_{t - delay} for t >= delay, nothing asked before (-100); the
  source of answer t is position t - delay (``extras["source_test"]``), so the routing measures apply too.

Conventions (shared with probe/tasks/sequences.py): token inputs (N, T) with ``vocab`` features per position,
geometry T positions x vocab ``channels_last``, targets (N, T) with -100 where nothing is asked, ``fresh=True``
draws every training batch anew (a pure function of (seed, step)).

Length generalization, the recurrent prior's signature: training is at ``length`` T. Beside the test split (at
``test_length``, by default T) every task stores test splits at 2T and 4T as ``extras["x_test_2T"]``,
``extras["y_test_2T"]``, ``extras["x_test_4T"]``, ``extras["y_test_4T"]`` (``n_test`` examples each, their own
seeded streams); :func:`probe.metrics.recurrence.recurrence_measures` reads them into ``test_acc_2T`` and
``test_acc_4T`` for models that read sequences of those lengths (``rnn``, ``transformer``: a model's
``max_length`` attribute). ``info["max_length"]`` is the longest length the task asks (4T, or ``test_length``),
so that a transformer sizes its position table for it; a ``test_length`` other than T is refused, on one line,
for a model that reads one length only (``mlp``, ``mixer``: :func:`probe.models.build_model`).

Counting tasks have classes 0 .. 4T (``count``, and ``dyck`` with ``max_depth = 0``) so that one model reads every
length; counts above those seen in training cannot be right at 2T and 4T, and ``info["unseen_2T"]``,
``info["unseen_4T"]`` give the share of asked answers there whose class the training split never holds.
"""

from __future__ import annotations

import torch

from probe.seeding import TEST_SET, stream
from probe.tasks.registry import register
from probe.tasks.sequences import _check, _task

LENGTH_FACTORS = (2, 4)
LENGTH_TEST = TEST_SET + 1000  # stream LENGTH_TEST + f: the test split at f x length


def gen_running_parity(g, n, length):
    x = torch.randint(0, 2, (n, length), generator=g)
    return x, x.cumsum(1) % 2, None


def gen_count(g, n, length, vocab):
    x = torch.randint(0, vocab, (n, length), generator=g)
    return x, (x == 0).long().cumsum(1), None


def gen_dyck(g, n, length, max_depth):
    """A walk of depths: "(" with probability 1/2, forced at depth 0 (and ")" forced at ``max_depth`` > 0)."""
    coin = torch.rand(n, length, generator=g) < 0.5
    x = torch.empty(n, length, dtype=torch.long)
    y = torch.empty(n, length, dtype=torch.long)
    depth = torch.zeros(n, dtype=torch.long)
    for t in range(length):
        opens = coin[:, t] | (depth == 0)
        if max_depth > 0:
            opens = opens & (depth < max_depth)
        depth = depth + 2 * opens.long() - 1
        x[:, t] = (~opens).long()
        y[:, t] = depth
    return x, y, None


def gen_delayed_copy(g, n, length, vocab, delay):
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = torch.full((n, length), -100, dtype=torch.long)
    y[:, delay:] = x[:, : length - delay]
    src = torch.full((n, length), -1, dtype=torch.long)
    src[:, delay:] = torch.arange(length - delay)
    return x, y, src


def _recurrence_task(name, gen, params, seed, length, test_length, n_train, n_test, fresh, *, vocab, n_outputs,
                     extras=None, info=None):
    _check(name, length >= 2, f"length must be >= 2, got {length}")
    _check(name, test_length == 0 or test_length >= 1, f"test_length must be 0 (= length) or >= 1, got {test_length}")
    test_length = test_length or length
    lengths = {f: f * length for f in LENGTH_FACTORS}
    t = _task(name, gen, {**params, "length": length}, seed, n_train, n_test, fresh, channels=vocab, T=length,
              n_outputs=n_outputs, vocab=vocab, extras=extras,
              info={**(info or {}), **params, "length": length, "test_length": test_length,
                    "max_length": max(test_length, *lengths.values()), "family": "recurrence"})
    if test_length != length:  # the test split itself at another length (models that read any length only)
        t.x_test, t.y_test, src = gen(stream(seed, TEST_SET), n_test, **params, length=test_length)
        t.extras.pop("source_test", None)
        if src is not None:
            t.extras["source_test"] = src
    seen = t.y_train[t.y_train >= 0].unique()
    for f, L in lengths.items():
        x, y, _ = gen(stream(seed, LENGTH_TEST + f), n_test, **params, length=L)
        t.extras[f"x_test_{f}T"], t.extras[f"y_test_{f}T"] = x, y
        asked = y[y >= 0]
        t.info[f"unseen_{f}T"] = float((~torch.isin(asked, seen)).float().mean()) if len(asked) else 0.0
    return t


_COMMON = "answers at every position; tested at length, 2x and 4x"


@register("running-parity", f"running parity: bits, the answer at t is their sum mod 2 up to t ({_COMMON})",
          kind="sequence")
def running_parity(seed: int = 0, length: int = 16, test_length: int = 0, n_train: int = 10000, n_test: int = 1000,
                   fresh: bool = True):
    return _recurrence_task("running-parity", gen_running_parity, {}, seed, length, test_length, n_train, n_test,
                            fresh, vocab=2, n_outputs=2)


@register("count", f"counting: the running count of token 0 among vocab tokens ({_COMMON})", kind="sequence")
def count(seed: int = 0, length: int = 16, vocab: int = 4, test_length: int = 0, n_train: int = 10000,
          n_test: int = 1000, fresh: bool = True):
    _check("count", vocab >= 2, f"vocab must be >= 2, got {vocab}")
    longest = max(4 * length, test_length)
    return _recurrence_task("count", gen_count, {"vocab": vocab}, seed, length, test_length, n_train, n_test, fresh,
                            vocab=vocab, n_outputs=longest + 1)


@register("dyck", f"Dyck-1 depth: brackets, the answer at t is the prefix's depth, 0 = balanced ({_COMMON})",
          kind="sequence")
def dyck(seed: int = 0, length: int = 16, max_depth: int = 0, test_length: int = 0, n_train: int = 10000,
         n_test: int = 1000, fresh: bool = True):
    _check("dyck", max_depth >= 0, f"max_depth must be >= 0 (0: unbounded), got {max_depth}")
    longest = max(4 * length, test_length)
    return _recurrence_task("dyck", gen_dyck, {"max_depth": max_depth}, seed, length, test_length, n_train, n_test,
                            fresh, vocab=2, n_outputs=(max_depth or longest) + 1)


@register("delayed-copy", f"delayed copy: the answer at t is the token seen delay steps earlier ({_COMMON})",
          kind="sequence")
def delayed_copy(seed: int = 0, length: int = 16, vocab: int = 8, delay: int = 2, test_length: int = 0,
                 n_train: int = 10000, n_test: int = 1000, fresh: bool = True):
    _check("delayed-copy", vocab >= 2 and 1 <= delay < length,
           f"need vocab >= 2 and 1 <= delay < length, got vocab={vocab}, delay={delay}, length={length}")
    _check("delayed-copy", test_length == 0 or test_length > delay, f"test_length must exceed delay, got {test_length}")
    return _recurrence_task("delayed-copy", gen_delayed_copy, {"vocab": vocab, "delay": delay}, seed, length,
                            test_length, n_train, n_test, fresh, vocab=vocab, n_outputs=vocab,
                            extras={"replace_tokens": torch.arange(vocab)}, info={"answer_at_source": True})
