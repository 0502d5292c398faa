"""Words for figures: panel titles, legend titles, swept values and run names a paper can print.

Run folders and metrics.jsonl use code names (``lsg_task=nlgp-gauss_gain=100_s0``, ``ipr_frac_above``,
``task_opts.gain``); figures say what they are instead:

- :func:`title`: a metric's panel title (its record in :data:`probe.metrics.registry.KEYS`, which also holds the
  axis label, :data:`probe.figures.plots.LABELS`, with the unit or range);
- :func:`key_text`: a config key as a legend or axis title (:data:`KEY_TEXT`);
- :func:`value_text`: one value of a config key (:data:`VALUE_TEXT`; numbers without a trailing ``.0``);
- :func:`run_labels`: each run named by the config values that differ between the runs drawn (``NLGP, gain 100,
  seed 0``), not by its folder;
- :func:`value_range`: the range a metric lives in (its registry record's), to clip +-sd bands (a share is never
  below 0).

Unknown names fall back to the name with ``_`` as spaces, so a new measure still gets a readable title.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from probe.config import RunConfig
from probe.metrics import registry
from probe.models import model_specs

# config keys as legend and axis titles
KEY_TEXT = {
    "run": "run",
    "task": "task",
    "model": "model",
    "variant": "variant",
    "width": "width (hidden units)",
    "depth": "depth (hidden layers)",
    "param": "parametrization",
    "seed": "seed",
    "optimizer": "optimizer",
    "lr": "learning rate",
    "batch_size": "batch size",
    "steps": "training steps",
    "weight_decay": "weight decay",
    "procedure": "procedure",
    "task.n_train": "training examples",
    "task_opts.gain": "NLGP gain g",
    "task_opts.pairs": "key-value pairs",
    "task_opts.length": "sequence length",
    "task_opts.augment_shift": "largest training shift (pixels)",
    "task_opts.op": "operation",
    "input_shape": "input (channels x positions)",
}

# values of config keys in words; keys not listed print their value as it is
VALUE_TEXT = {
    "task": {"mnist1d": "MNIST-1D", "mnist1d-shuffled": "MNIST-1D, positions shuffled", "nlgp": "NLGP",
             "nlgp-gauss": "Gaussian clone of NLGP", "mnist": "MNIST", "cifar10": "CIFAR-10", "digits": "digits 8x8",
             "mqar": "MQAR", "induction": "induction", "running-parity": "running parity", "dyck": "Dyck-1",
             "delayed-copy": "delayed copy", "modadd": "modular addition"},
    "model": {"mlp": "MLP", "cnn": "CNN", "lcn": "LCN (local, unshared)", "linear": "linear", "mixer": "MLP-Mixer",
              "transformer": "transformer", "rnn": "RNN"},
    "variant": {"sgd": "SGD", "l1": "L1", "beta-lasso": "beta-LASSO", "imp": "IMP (rewinding)", "mlp": "MLP",
                "cnn": "CNN", "lcn": "LCN", "linear": "linear", "mixer": "MLP-Mixer", "transformer": "transformer",
                "transformer-nope": "transformer, no positions", "rnn": "RNN", "rnn-elman": "RNN (Elman)",
                "rnn-gru": "GRU", "rnn-lstm": "LSTM", "mlp-small": "MLP, small", "mlp-wide": "MLP, wide",
                "mlp-wide-lr1e-3": "MLP, wide, lr 1e-3", "mlp-small-sparse": "MLP, small, sparse",
                "mlp-1024": "MLP, width 1024", "mlp-1024-lr1e-3": "MLP, width 1024, lr 1e-3",
                "linear-lr1e-3": "linear, lr 1e-3", "mlp-lr1e-3": "MLP, lr 1e-3", "cnn-lr1e-3": "CNN, lr 1e-3",
                "bottleneck": "bottleneck MLP (residual)", "lsg": "one unit, 40 pixels", "ig": "8 units, 20 x 20",
                # the mechanism preset
                "ecnn": "eCNN (embedded CNN)", "mlp-clone": "MLP on the Gaussian clone",
                "cnn-clone": "CNN on the Gaussian clone", "nlgp-negative": "NLGP, kurtosis < 0 (erf)",
                "nlgp-zero": "NLGP, Gaussian", "nlgp-positive": "NLGP, kurtosis > 0 (sinh)",
                "nlgp-elliptical": "NLGP, elliptical", "ntk-mlp": "MLP vs trained CNN",
                "ntk-lcn": "LCN vs trained CNN", "ntk-mlp-vs-mlp": "MLP vs MLP of another seed (null)"},
    "optimizer": {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"},
}
_VARIANT_PATTERNS = ((re.compile(r"^e(cnn|lcn)-t(\d+)$"),
                      lambda m: f"e{m[1].upper()} ({m[1].upper()} trained {m[2]} steps)"),
                     (re.compile(r"^stab-eps([\d.]+)(-orbit)?$"),
                      lambda m: f"eps {m[1]}{', whole orbits' if m[2] else ', data'}"))
# config keys that say how a run was run, not what was run: never part of a run's name
_BOOKKEEPING = {"run", "out", "device", "threads", "log", "on_nan", "compile", "track", "track_every", "eval_every",
                "log_every", "checkpoints", "input_shape"}
# keys as they prefix a number in a run's name (``gain 100``, ``width 32``); others: the last part of the key
_SHORT_KEY = {"task.n_train": "examples", "task_opts.augment_shift": "shift", "batch_size": "batch"}
# the order in which varying keys name a run
_NAME_ORDER = ("task", "variant", "model", "param", "width", "depth")

def _plain(name: str) -> str:
    return name.split(".")[-1].replace("_", " ")


def title(metric: str) -> str:
    """A metric's panel title in words (``ipr_frac_above`` -> ``share of localized units``): its registry record's
    (:data:`probe.metrics.registry.KEYS`)."""
    return registry.title(metric)


def key_text(key: str | None) -> str | None:
    """A config key as a legend or axis title (``task_opts.gain`` -> ``NLGP gain g``)."""
    return None if key is None else KEY_TEXT.get(key, _plain(key))


def number_text(v) -> str:
    """A number without a trailing ``.0`` (100.0 -> 100, 0.3 stays 0.3); whole thousands from 10,000 on as ``16k``,
    ``100k`` (tick labels of training-set sizes stay apart)."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v) \
            and float(v).is_integer():
        v = int(v)
        return f"{v // 1000}k" if v >= 10_000 and v % 1000 == 0 else str(v)
    return str(v)


def value_text(key: str, v) -> str:
    """One value of config key ``key`` in words (``task`` ``nlgp-gauss`` -> ``Gaussian clone of NLGP``)."""
    if isinstance(v, str):
        words = VALUE_TEXT.get(key, {}).get(v)
        if words is None and key == "variant":
            for pattern, make in _VARIANT_PATTERNS:
                if m := pattern.match(v):
                    return make(m)
        return words or v
    return number_text(v)


def _config_columns(table: pd.DataFrame) -> list[str]:
    """The columns of ``table`` that are run config keys (RunConfig fields, their options, and the sweep's
    ``variant``)."""
    from dataclasses import fields

    names = {f.name for f in fields(RunConfig)} | {"variant", "procedure"}
    return [c for c in table.columns if c.split(".")[0] in names and c not in _BOOKKEEPING]


def run_labels(table: pd.DataFrame) -> dict:
    """Each run of ``table`` (a column ``run``) named by the config values that differ between its runs, in words:
    ``NLGP, gain 100, seed 0`` for ``lsg_task=nlgp_gain=100_s0``. Categorical values (task, model, variant) are
    named alone, numbers after their key. Runs whose configs are all alike keep their folder name."""
    if "run" not in table.columns or not len(table):
        return {}
    per_run = table.drop_duplicates("run").set_index("run")
    cols = [c for c in _config_columns(table) if c in per_run.columns]
    varying = [c for c in cols if per_run[c].astype(str).nunique() > 1]
    varying.sort(key=lambda c: (_NAME_ORDER.index(c) if c in _NAME_ORDER else len(_NAME_ORDER) + (c == "seed"), c))
    if "variant" in varying and "model" in varying:  # a variant names its model already
        varying.remove("model")
    specs = model_specs()
    out = {}
    for run, row in per_run.iterrows():
        parts = []
        spec = specs.get(row.get("model")) if isinstance(row.get("model"), str) else None
        for c in varying:
            v = row[c]
            if spec is not None and c in ("width", "depth", "param") and c not in spec.uses:
                continue  # a CNN's title does not name the --width and --depth it never read
            if isinstance(v, str) and c in ("task", "model", "variant", "param", "optimizer"):
                parts.append(value_text(c, v))
            else:
                text = f"{_SHORT_KEY.get(c, _plain(c))} {value_text(c, v)}"
                if not any(text in p for p in parts):  # not twice: "MLP, width 1024" names its width already
                    parts.append(text)
        out[run] = ", ".join(parts) if parts else str(run)
    if len(set(out.values())) < len(out):  # configs alike: the folder tells them apart
        out = {run: f"{label} ({run})" if list(out.values()).count(label) > 1 else label for run, label in out.items()}
    return out


def value_range(metric: str, scale: float = 1.0) -> tuple[float, float]:
    """The interval ``metric``'s values live in, times ``scale`` (100 for accuracies in %), as its registry record
    says: [0, 1] for shares, [-1, 1] for mean cosines, [0, inf) for sizes, losses and distances, else unbounded."""
    return registry.value_range(metric, scale)
