"""Structure tracking during training: cheap first-layer measures in the metrics rows (docs/design.md §2.1).

``probe train --track ipr,hoyer,... --track-every N`` computes the named measures of the first layer (its dense
matrix over the input geometry, so an MLP and its CNN/LCN controls are measured alike) inside the training loop
and writes them into the same ``metrics.jsonl`` rows as the losses.

Conventions (what later parts rely on):
- Keys are the measure names themselves (``ipr``, ``window_mass_3``, ``movement``, ``shift_match_units``), the
  same names as :data:`probe.metrics.FIRST_LAYER_MEASURES`, ``reference.json`` and ``probe analyze``: one name means
  one quantity everywhere, and no training key (``step``, ``lr``, ``*_loss``, ``*_acc``) is a measure name.
- ``--track``: a comma list of :data:`TRACKABLE` names, ``default`` (:data:`DEFAULT_TRACK`, cheap: well under a
  millisecond per 100 x 40 layer, tens of ms at 1024 x 3072) or ``none`` (no hook at all, so no cost per step).
  Unknown names are a :class:`~probe.config.ConfigError` raised before anything is built or written.
- Names of :data:`DATA_TRACKS` (``clone_acc``) are measured on the model and the task's data by their own hooks
  (:mod:`probe.metrics.second_order`), at the same tracking steps, into the same rows.
- ``--track-every N``: measures are computed at logged rows whose step is a multiple of N, at step 0 and at
  the last step. N = 0 means every evaluation step (``--eval-every``). Rows are only written at multiples of
  ``--log-every`` and ``--eval-every``, so N must be a multiple of one of them.
- References (docs/design.md §4.3): at the last step, ``RUN/reference.json`` gets the tracked measures on the run's
  initialization (``init``), on the model's initializer at other seeds (``init_seeds``), on Gaussian weights of
  the same shape and RMS (``gaussian``), on the final weights with input positions permuted (``permuted``) and
  with every unit's Fourier phases randomized (``phase``), and on random local fields in the final fields'
  windows (``lcn``): the nulls for contiguity have to keep the final fields' concentration or spectrum, so they
  are taken from the final weights, once per run. ``phase``, ``lcn`` and ``init_seeds`` hold only the measures
  they are drawn for (:mod:`probe.metrics.nulls`).
- The learned part and the pull (:mod:`probe.metrics.pull`): ``delta_<m>`` tracks measure m on
  ΔW = W - W_0 (left out at step 0, where ΔW = 0); ``grad_<m>`` on the pull G = dL/dW_1 on a fixed batch
  (:func:`probe.metrics.pull.pull_batch`), beside ``grad_<k>@phase`` (the phase null of G at the same step) for
  the phase reference's measures; ``grad_com_share`` writes ``grad_com_share_k``, its chance
  ``grad_com_share_k@chance`` and its unit-shuffled null ``grad_com_share_k@units``; ``conv_share`` and
  ``local_share`` write ``grad_*`` and ``delta_*`` shares in the unit layout (:func:`unit_layout`) and
  ``conv_share@random`` / ``local_share@random``, and for conv_share ``grad_conv_share@local`` /
  ``delta_conv_share@local`` (:func:`probe.metrics.pull.shared_chance`: the conv_share of a local but unshared
  matrix; the random direction's level is passed by any local one). Aliases: ``delta`` (:data:`DELTA_TRACK`)
  and ``pull`` (:data:`PULL_TRACK`). At the last step reference.json gets the delta and
  grad keys under ``gaussian``, ``permuted``, ``phase`` and ``lcn``, drawn from ΔW and G (and the exact
  expectations of an isotropic G for ``grad_com_share_k``, ``grad_conv_share`` and ``grad_local_share`` under
  ``gaussian``).
"""

from __future__ import annotations

import copy
import json
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from probe.run.checkpoint import atomic_write, load_checkpoint, step_path
from probe.config import ConfigError, RunConfig
from probe.run.errors import StorageError
from probe.metrics import (FIRST_LAYER_MEASURES, MEASURE_KEYS, SPECTRAL_MEASURES, first_layer_measures,
                           layer_measures, movement)
from probe.metrics.nulls import PHASE_MEASURES, phase_measures, references
from probe.metrics.registry import MEASURES, applies
from probe.metrics.locality import as_matrix
from probe.metrics import pull
from probe.metrics.second_order import CloneAccuracy
from probe.tasks.clone import check_clonable, clone_test_set
from probe.geometry import Geometry
from probe.metrics.equivariance import conv_layout
from probe.models import build_model
from probe.models.conv import LocalNet, conv_layouts
from probe.run.folder import read_json_file

DEFAULT_TRACK = ("ipr", "ipr_frac_above", "window_mass_3", "hoyer", "movement")
# `--track delta`: the default set on ΔW (movement is itself a norm of ΔW); `--track pull`: the locality of G
DELTA_TRACK = tuple(f"delta_{n}" for n in DEFAULT_TRACK if f"delta_{n}" in MEASURES)
PULL_TRACK = ("grad_ipr", "grad_window_mass_3", "grad_hoyer", "grad_com_share")
ALIASES = {"default": DEFAULT_TRACK, "delta": DELTA_TRACK, "pull": PULL_TRACK}
LAYOUT_FILE = "layout.json"  # a run's unit layout, where the model does not carry it (the eCNN's MLP)
# from the registry (probe/metrics/registry.py): the first-layer measures, movement (against the run's
# initialization) and the layer measures (one eigendecomposition), which apply to any matrix
TRACKABLE = tuple(n for n, m in MEASURES.items() if m.trackable)
# seconds, not milliseconds, on a 4096 x 3072 layer (scripts/bench_analyze.py); allowed, but better computed at
# checkpoints afterwards with `probe analyze RUN --all-steps`
EXPENSIVE = tuple(n for n, m in MEASURES.items() if m.expensive)
REFERENCE_FILE = "reference.json"


def clone_accuracy_hook(run) -> CloneAccuracy:
    """The ``clone_acc`` hook of a run (``clone_acc``, and ``real_acc`` for a run on the clone, at its tracking
    steps): ConfigError (one line) unless its task is an image classification task."""
    task, cfg = run.task, run.cfg
    check_clonable(task, f"--track clone_acc on task {cfg.task}", fixed=False)
    x, y = clone_test_set(task)
    real = (task.extras["real_x_test"], task.extras["real_y_test"]) if task.info.get("clone") else None
    return CloneAccuracy(x, y, real, due=partial(is_track_step, cfg=cfg))


# tracked names computed from the model on the task's data, not from the first layer: name -> (the task kinds it
# applies to, the function making the hook ``hook(step, model) -> dict`` of a run)
DATA_TRACKS: dict[str, tuple[tuple[str, ...], Callable]] = {
    "clone_acc": (("image",), clone_accuracy_hook),  # clone_acc, real_acc
}


def _data_hooks(run, names) -> tuple:
    """The hooks of the :data:`DATA_TRACKS` among ``names``, for ``run``."""
    return tuple(DATA_TRACKS[n][1](run) for n in names if n in DATA_TRACKS)


def parse_track(spec: str, kind: str | None = None) -> tuple[str, ...]:
    """The measure names of a ``--track`` value: ``default``, ``none`` (or empty) or a comma list.

    Duplicates are dropped, order kept. Raises ConfigError naming the unknown names and listing valid ones. With
    the task's ``kind``, ``default`` keeps the measures that apply to it (a sequence task: ``movement``) and a
    named measure that does not apply (an image measure on a sequence task) is a ConfigError.
    """
    spec = (spec or "").strip()
    if spec.lower() in ("", "none"):
        return ()
    names: list[str] = []
    for item in spec.split(","):
        item = item.strip()
        if item.lower() in ALIASES:
            names.extend(n for n in ALIASES[item.lower()] if kind is None or applies(n, kind))
        elif item:
            names.append(item)
    unknown = [n for n in names if n not in TRACKABLE and n not in DATA_TRACKS]
    if unknown:
        plain = [n for n in TRACKABLE if not MEASURES[n].base and MEASURES[n].scope not in ("grad", "layout")]
        raise ConfigError(f"--track: unknown measure(s) {', '.join(unknown)}; valid: default, none, "
                          f"{', '.join(plain)}; delta_<m> and grad_<m> of each of them but movement; grad_com_share, "
                          f"conv_share, local_share; {', '.join(DATA_TRACKS)}; aliases delta, pull")
    wrong_data = [n for n in names if kind is not None and n in DATA_TRACKS and kind not in DATA_TRACKS[n][0]]
    if wrong_data:
        raise ConfigError(f"--track: {', '.join(wrong_data)} does not apply to a {kind} task (it needs "
                          f"{' or '.join(DATA_TRACKS[wrong_data[0]][0])} tasks)")
    wrong = [n for n in names if kind is not None and n not in DATA_TRACKS and not applies(n, kind)]
    if wrong:
        valid = ", ".join(n for n in TRACKABLE if applies(n, kind))
        raise ConfigError(f"--track: {', '.join(wrong)} measure(s) the first layer over an image grid and do not "
                          f"apply to a {kind} task; it can track {valid}")
    return tuple(dict.fromkeys(names))


def check_tracking(cfg: RunConfig, kind: str | None = None) -> tuple[str, ...]:
    """Validate ``cfg.track`` (for a task of ``kind``, when known) and ``cfg.track_every`` (see module
    docstring); returns the measure names."""
    names = parse_track(cfg.track, kind)
    N = cfg.track_every
    if names and N and N % cfg.log_every and N % cfg.eval_every:
        raise ConfigError(f"--track-every {N}: measures are computed at logged steps, so it must be a multiple of "
                          f"--log-every ({cfg.log_every}) or --eval-every ({cfg.eval_every}), or 0 (every evaluation)")
    return names


def is_track_step(step: int, cfg: RunConfig) -> bool:
    """Whether ``step`` is a tracking step: 0, the last step, and multiples of --track-every (or --eval-every)."""
    return step == 0 or step == cfg.steps or step % (cfg.track_every or cfg.eval_every) == 0


def dense_first_layer(model: torch.nn.Module) -> np.ndarray:
    """The model's first layer as a dense (m, n) float64 numpy matrix on the CPU: the one device-to-host copy
    per tracking step."""
    with torch.no_grad():
        return as_matrix(model.first_layer_dense().detach().float().cpu())


class Tracker:
    """The training hook ``hook(step, model) -> dict`` that computes the tracked measures at tracking steps.

    Args:
        names: measure names from :func:`parse_track`.
        cfg: the run's config (cadence, seed of the references, last step).
        geometry: the task's input geometry.
        W0: the run's initial first layer (dense), for ``movement`` and the ``init`` reference.
        out: the run folder, where ``reference.json`` is written at the last step (None: not written).
    """

    def __init__(self, names, cfg: RunConfig, geometry, W0: np.ndarray, out: Path | None = None, init_build=None,
                 task=None, layout: np.ndarray | None = None):
        self.names, self.cfg, self.geometry, self.out = tuple(names), cfg, geometry, out
        self.init_build = init_build  # seed -> the dense first layer at that seed's initialization (init_seeds)
        self.W0 = np.array(W0, dtype=np.float64)
        self.weight_names = [n for n in self.names if n in FIRST_LAYER_MEASURES]
        self.layer_names = [n for n in self.names if n in SPECTRAL_MEASURES]
        # the learned part and the pull (module docstring): the base measures of the delta_ and grad_ twins
        self.twins = {p: [MEASURES[n].base for n in self.names if MEASURES[n].scope == p and MEASURES[n].base]
                      for p in ("delta", "grad")}
        self.com = "grad_com_share" in self.names
        self.layout_names = [n for n in self.names if MEASURES[n].scope == "layout"]
        self.task, self.layout = task, layout
        self.needs_grad = bool(self.twins["grad"] or self.com or self.layout_names)
        if self.needs_grad and task is None:
            raise ValueError("the pull (grad_*, conv_share, local_share) needs the task's training data")
        if self.layout_names and layout is None:
            raise ValueError("conv_share and local_share need the unit layout")
        self._batch = None
        self._last_G: np.ndarray | None = None

    def keys(self) -> list[str]:
        """The row keys this tracker writes (a measure returning a dict writes its MEASURE_KEYS)."""
        return [k for n in self.names for k in MEASURE_KEYS.get(n, (n,))]

    def measure(self, W: np.ndarray) -> dict[str, float]:
        """The tracked measures of one dense first layer W, as one flat dict of floats."""
        row = first_layer_measures(W, self.geometry, self.weight_names,
                                   self.W0 if "movement" in self.names else None)
        if self.layer_names:
            lm = layer_measures(W)
            row.update({k: lm[k] for k in self.layer_names})
        return row

    def twin_measures(self, M: np.ndarray, prefix: str) -> dict[str, float]:
        """The ``prefix``_ twins (delta, grad) tracked, of M (ΔW or G), keys prefixed; {} for an all-zero M."""
        bases = self.twins[prefix]
        if not bases or not M.any():
            return {}
        first = [b for b in bases if b in FIRST_LAYER_MEASURES]
        out = first_layer_measures(M, self.geometry, first) if first else {}
        layer = [b for b in bases if b in SPECTRAL_MEASURES]
        if layer:
            lm = layer_measures(M)
            out.update({k: lm[k] for k in layer if k in lm})
        return {f"{prefix}_{k}": v for k, v in out.items()}

    def gradient(self, model: torch.nn.Module) -> np.ndarray:
        """The pull G = dL/dW_1 of ``model`` now, on the run's fixed batch (:func:`probe.metrics.pull.pull_batch`)."""
        if self._batch is None:
            self._batch = pull.pull_batch(self.task, self.cfg.seed)
        return as_matrix(pull.first_layer_gradient(model, *self._batch, self.task.loss))

    def mechanism(self, W: np.ndarray, model: torch.nn.Module, last: bool = False) -> dict[str, float]:
        """The delta_, grad_ and layout keys of one tracking step (module docstring); ``last`` keeps G for the
        references."""
        D = W - self.W0
        row = self.twin_measures(D, "delta")
        if not self.needs_grad:
            return row
        G = self.gradient(model)
        if not np.isfinite(G).all() or not G.any():
            return row
        if last:
            self._last_G = G
        row.update(self.twin_measures(G, "grad"))
        phase = [b for b in self.twins["grad"] if b in PHASE_MEASURES]
        if phase:
            row.update({f"grad_{k}@phase": v
                        for k, v in phase_measures(G, self.geometry, self.cfg.seed, phase).items()})
        if self.com:
            for k in pull.COM_WINDOWS:
                row[f"grad_com_share_{k}"] = pull.com_share(G, W, self.geometry, k)
                row[f"grad_com_share_{k}@chance"] = pull.com_share_chance(self.geometry, k)
                row[f"grad_com_share_{k}@units"] = pull.com_share_units(G, W, self.geometry, k, self.cfg.seed)
        if self.layout_names:
            chance = pull.random_shares(self.layout)
            for prefix, M in (("grad", G), ("delta", D)):
                if M.any():
                    shares = pull.subspace_shares(M, self.layout)
                    row.update({f"{prefix}_{n}": shares[n] for n in self.layout_names})
                    if "conv_share" in self.layout_names:  # a local but unshared M's conv_share
                        row[f"{prefix}_conv_share@local"] = pull.shared_chance(shares, self.layout)
            row.update({f"{n}@random": chance[n] for n in self.layout_names})
        return row

    def __call__(self, step: int, model: torch.nn.Module) -> dict[str, float]:
        if not is_track_step(step, self.cfg):
            return {}
        W = dense_first_layer(model)
        if not np.isfinite(W).all():  # a diverged run kept going (--on-nan continue): nothing to measure
            return {k: float("nan") for k in self.keys()}
        # (no threadpoolctl limit here: entering one costs ~5 ms, twenty times the default measures of a 100 x 40
        # layer; they are reductions, not BLAS calls, and the eigensolver of the layer measures limits itself)
        try:
            row = self.measure(W)
        except ValueError:  # measures refuse an all-zero layer (L1 or beta-LASSO can prune it away): no fields
            row = {k: float("nan") for k in self.keys()}
            if "movement" in self.names:
                row["movement"] = movement(W, self.W0)
            return row
        last = step == self.cfg.steps and self.out is not None
        row.update(self.mechanism(W, model, last))
        if last:
            self._final = self.references(W)  # written by finish(), after the last checkpoint
        return row

    _final: dict | None = None

    def finish(self, model: torch.nn.Module) -> Path | None:
        """Write ``reference.json`` once training has reached its last step and its checkpoint is written. A run
        resumed after it finished (or after this write failed) computes it from the final weights if it is
        missing. Raises StorageError naming the file when it cannot be written."""
        if self.out is None or (self._final is None and (Path(self.out) / REFERENCE_FILE).exists()):
            return None
        refs = self._final
        if refs is None:
            W = dense_first_layer(model)
            if not np.isfinite(W).all():
                return None
            try:
                if self.needs_grad:
                    G = self.gradient(model)
                    self._last_G = G if np.isfinite(G).all() and G.any() else None
                refs = self.references(W)
            except ValueError:  # an all-zero layer: no references, as at the last step
                return None
        return write_references(self.out, refs, self.cfg.steps, self.cfg.seed)

    def references(self, W: np.ndarray) -> dict[str, dict[str, float]]:
        """The tracked measures on ``init``, ``init_seeds``, ``gaussian``, ``permuted``, ``phase`` and ``lcn``
        (:mod:`probe.metrics.nulls`), for final weights W; ``movement`` is left out (it is defined against W0
        itself)."""
        refs = references(W, self.geometry, self.W0, seed=self.cfg.seed, names=self.weight_names,
                          layer_names=self.layer_names, init_build=self.init_build)
        for prefix, M in (("delta", W - self.W0), ("grad", self._last_G)):
            bases = self.twins[prefix]
            if bases and M is not None and M.any():
                add_twin_references(refs, M, self.geometry, self.cfg.seed, prefix, bases)
        gauss = refs.setdefault("gaussian", {})
        if self.com and self._last_G is not None:
            gauss.update({f"grad_com_share_{k}": pull.com_share_chance(self.geometry, k) for k in pull.COM_WINDOWS})
        if self.layout_names:
            chance = pull.random_shares(self.layout)
            gauss.update({f"{p}_{n}": chance[n] for n in self.layout_names for p in ("grad", "delta")})
        return refs


def add_twin_references(refs: dict, M: np.ndarray, geometry, seed: int, prefix: str, bases) -> dict:
    """Add to ``refs`` the nulls of the twins ``prefix``_<base> (delta, grad): the ``gaussian``, ``permuted``,
    ``phase`` and ``lcn`` references of the base measures drawn from M (ΔW or G) instead of W
    (:func:`probe.metrics.nulls.references`), keys prefixed. ``init`` and ``init_seeds`` are left out: ΔW's
    initialization is 0 and the initializer's draws are not a ΔW."""
    first = [b for b in bases if b in FIRST_LAYER_MEASURES]
    layer = [b for b in bases if b in SPECTRAL_MEASURES]
    drawn = references(M, geometry, seed=seed, names=first, layer_names=layer)
    for kind, values in drawn.items():
        refs.setdefault(kind, {}).update({f"{prefix}_{k}": v for k, v in values.items()})
    return refs


def write_references(out: Path, refs: dict, step: int, seed: int) -> Path:
    """Write ``reference.json``: {"step", "seed", "init": {...}, "gaussian": {...}, "permuted": {...}, ...}, one
    object per reference of :func:`probe.metrics.nulls.references`."""
    path = Path(out) / REFERENCE_FILE
    payload = {"step": step, "seed": seed, **refs}
    try:
        atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
    except OSError as e:
        raise StorageError(f"cannot write {path} ({e.strerror or e}); the run's checkpoints and metrics are kept, "
                           f"`probe train --resume {out}` writes it once there is room") from None
    return path


def read_references(run_dir) -> dict:
    """The references of a run folder as {reference: {measure: value}}, or {} when it has none."""
    p = Path(run_dir) / REFERENCE_FILE
    if not p.exists():
        return {}
    d = read_json_file(p, "the run's references")
    bad = [k for k, v in d.items() if isinstance(v, dict) and not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) or x is None for x in v.values())]
    if bad:
        raise ConfigError(f"{p}: reference {bad[0]!r} holds values that are not numbers (a damaged file; "
                          "`probe check` reports it)")
    return {k: v for k, v in d.items() if isinstance(v, dict)}


def initial_first_layer(run) -> np.ndarray:
    """The dense first layer at step 0: the live model before training, or, for a resumed run, the model
    rebuilt from ``checkpoints/step_0.pt`` (the checkpoint every run writes first)."""
    model = run.model  # not yet wrapped by torch.compile (train() does that)
    if run.step == 0:
        return dense_first_layer(model)
    ck = load_checkpoint(step_path(run.out, 0), map_location="cpu")
    clone = copy.deepcopy(model).cpu()
    clone.load_state_dict(ck["state_dict"])
    return dense_first_layer(clone)


def first_layer_at_init(cfg: RunConfig, task, seed: int) -> np.ndarray:
    """The dense first layer of ``cfg``'s model as a run of ``seed`` starts (``setup`` seeds torch with the run's seed
    before building the model), built on the CPU without touching the caller's random state: the model's own
    initializer, for the ``init_seeds`` reference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg.model, task, cfg.width, cfg.depth, cfg.param, cfg.model_opts)
    return dense_first_layer(model)


def tracking_hooks(run) -> tuple:
    """The hooks that ``run_training`` adds for ``run.cfg.track``: () when tracking is off (no cost per step)."""
    names = check_tracking(run.cfg, run.task.geometry.kind)
    data = _data_hooks(run, names)
    names = tuple(n for n in names if n not in DATA_TRACKS)
    if not names:
        return data
    build = partial(first_layer_at_init, run.cfg, run.task)
    layout = check_model(names, run.model, run.out, run.cfg.model)
    return (Tracker(names, run.cfg, run.task.geometry, initial_first_layer(run), run.out, init_build=build,
                    task=run.task, layout=layout), *data)


# -- the unit layout of the conv_share / local_share measures ------------------------------------------------------
def write_layout(out, layout: tuple) -> Path:
    """Record a run's unit layout in ``out/layout.json``: the first layer's (input geometry, output channels,
    kernel, stride, padding, circular), as :func:`probe.models.conv.conv_layouts` gives it for a CNN or LCN.
    The eCNN procedure writes it for its MLP (whose model does not carry the CNN it came from), so that
    tracking and analysis read its weights in that layout."""
    geo, O, k, s, pad, circ = layout
    path = Path(out) / LAYOUT_FILE
    payload = {"geometry": geo.to_dict(), "out_channels": O, "kernel": k, "stride": s, "pad": pad, "circular": circ}
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
    return path


def unit_layout(model: torch.nn.Module, run_dir=None) -> np.ndarray | None:
    """The :func:`probe.metrics.equivariance.conv_layout` index of the model's dense first layer, where its unit
    layout is known: a cnn or lcn model's own first layer, else the run folder's ``layout.json``
    (:func:`write_layout`); None otherwise."""
    if isinstance(model, LocalNet):
        return conv_layout(*conv_layouts(model)[0])
    path = Path(run_dir) / LAYOUT_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    d = json.loads(path.read_text())
    return conv_layout(Geometry.from_dict(d["geometry"]), d["out_channels"], d["kernel"], d["stride"], d["pad"],
                       d["circular"])


def check_model(names, model: torch.nn.Module, run_dir=None, model_name: str = "") -> np.ndarray | None:
    """Refuse (ConfigError, one line) tracked measures this model cannot give: the pull (grad_*, conv_share,
    local_share) for a model whose first layer is not linear in its input, the layout shares without a known unit
    layout. Returns the layout index when conv_share or local_share is tracked."""
    scopes = {MEASURES[n].scope for n in names}
    what = model_name or type(model).__name__
    if scopes & {"grad", "layout"} and pull.first_layer_module(model) is None:
        asked = ", ".join(n for n in names if MEASURES[n].scope in ("grad", "layout"))
        raise ConfigError(f"--track {asked}: the pull needs a first layer linear in its input (mlp, linear, cnn, "
                          f"lcn); model {what} has none")
    if "layout" not in scopes:
        return None
    layout = unit_layout(model, run_dir)
    if layout is None:
        asked = ", ".join(n for n in names if MEASURES[n].scope == "layout")
        raise ConfigError(f"--track {asked}: needs a known unit layout (a cnn or lcn model, or an eCNN's MLP, whose "
                          f"run folder holds {LAYOUT_FILE}); model {what} has none")
    W = model.first_layer_dense()
    if tuple(layout.shape) != tuple(W.shape):
        raise ConfigError(f"--track conv_share/local_share: the layout in {LAYOUT_FILE} has shape "
                          f"{tuple(layout.shape)}, the model's first layer {tuple(W.shape)}")
    return layout
