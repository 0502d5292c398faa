"""`probe analyze`: every measure of docs/design.md §4 for a checkpoint or a run, beside its references (§4.3).

What is measured (the CLI only prints and writes what these functions return):
- Layers as :mod:`probe.analysis.load` lists them: 2-D weight tensors in network order, the dense first layer first.
  The first layer gets the geometric measures (:func:`probe.metrics.first_layer_measures`), every layer the
  spectral ones (:func:`probe.metrics.layer_measures`) and ``movement`` when the run's step-0 checkpoint exists.
- With the task's data at hand (probe checkpoints, ``data=True``): ``input_pc_share`` of the first layer, and a
  ``function`` section: test accuracy and loss, then for image tasks the Lie derivative and shift consistency,
  for sequence tasks :func:`probe.metrics.routing.sequence_measures`.
- References beside every value (:data:`REFERENCES`): ``init`` (the same measure at the run's step 0),
  ``gaussian`` (seeded i.i.d. Gaussian weights of the layer's shape) and, for the first layer's geometric measures,
  ``permuted`` (the same weights with input positions permuted, the null for contiguity), ``phase`` (every unit's
  Fourier phases randomized: the null that tells locality from smoothness), ``lcn`` (random local unshared fields
  in the layer's own windows: the null for weight sharing) and ``init_seeds`` (the model's own initializer on
  other seeds; PyTorch's default Linear init for a plain state_dict). ``phase``, ``lcn`` and ``init_seeds`` hold
  only the measures they are drawn for (:mod:`probe.metrics.nulls`), and no spectra: they add no
  eigendecomposition. ``*_random`` keys of sequence_measures become the ``gaussian`` reference of their measure.
- The references are drawn as :func:`probe.metrics.nulls.references` draws them (one generator seeded ``seed``:
  the Gaussian matrix, then the permutation; the phases and local fields from their own streams), so the numbers
  agree with it. Every measure is scale-free, so one unit-variance Gaussian per layer shape serves every
  checkpoint of a run, and so do the init_seeds draws.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probe.analysis.function import function_measures
from probe.analysis.load import (Source, build_probe_model, checkpoint_at, init_builder, load_task, model_layers,
                                 plain_layers, read_source)
from probe.config import ConfigError
from probe.geometry import Geometry
from probe.metrics import (LAYER_MEASURES, WEIGHT_MEASURES, defined, first_layer_measures, input_pc_share,
                           layer_measures, movement)
from probe.metrics.registry import applies
from probe.metrics.nulls import (LCN_MEASURES, PHASE_MEASURES, default_linear_init, init_seed_measures, lcn_measures,
                                 null_draws, permute_positions, phase_randomize, phase_draws, _mean_measures)
from probe.metrics.spectral import (background, background_result, background_spectra, gaussian_spectral_measures,
                                    prefetch)
from probe.progress import Progress
from probe.run.checkpoint import CheckpointError, atomic_write, list_checkpoints
from probe.run.loop import evaluate

class WeightsRefused(CheckpointError):
    """A checkpoint whose weights no measure can read (NaN or inf, an all-zero or empty layer): one line naming
    the file and the layer (docs/design.md §4.1, rule 3)."""


def check_measurable(source: Source) -> None:
    """Refuse a checkpoint whose weights hold NaN or inf (a diverged run, or one trained with --on-nan continue),
    naming the first such tensor; all-zero and empty layers are refused where they are measured."""
    for k, v in source.state_dict.items():
        if torch.is_tensor(v) and v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise WeightsRefused(f"checkpoint {source.path}: {k} holds NaN or inf ({bad} of {v.numel()} entries, a "
                                 "diverged run); refused, no measure reads it")


REFERENCES = ("init", "init_seeds", "gaussian", "permuted", "phase", "lcn")
FUNCTION = "function"  # the section of the model's data-dependent measures, beside the layers
COLUMNS = ("checkpoint", "step", "layer", "measure", "value", *REFERENCES)


@dataclass
class Report:
    """The measures of one checkpoint.

    ``layers`` and every ``reference[ref]`` map layer name -> measure -> value, layers in network order;
    ``function`` holds the model's data-dependent measures, whose references sit under
    ``reference[ref]["function"]``. ``shapes`` gives each layer's (m, n); ``notes`` say in words what was
    skipped or sampled.
    """

    checkpoint: str
    step: int | None
    geometry: Geometry
    layers: dict[str, dict[str, float]]
    function: dict[str, float] = field(default_factory=dict)
    reference: dict[str, dict[str, dict[str, float]]] = field(default_factory=lambda: {r: {} for r in REFERENCES})
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    model: str | None = None
    task: str | None = None
    notes: list[str] = field(default_factory=list)

    def sections(self) -> dict[str, dict[str, float]]:
        """The layers, then the function section if anything was measured there."""
        return {**self.layers, **({FUNCTION: self.function} if self.function else {})}

    def to_dict(self) -> dict:
        """The JSON layout: checkpoint, step, model, task, geometry, layers, function, reference, notes.
        NaN becomes null (JSON has no NaN)."""
        return _clean({"checkpoint": self.checkpoint, "step": self.step, "model": self.model, "task": self.task,
                       "geometry": self.geometry.to_dict(), "layers": self.layers, "function": self.function,
                       "reference": self.reference, "notes": self.notes})

    def to_frame(self) -> pd.DataFrame:
        """Tidy long table, columns :data:`COLUMNS`: one row per (layer, measure) with its ``value`` and its
        references (:data:`REFERENCES`; NaN where one does not apply)."""
        rows = []
        for layer, values in self.sections().items():
            for measure, value in values.items():
                refs = [self.reference.get(r, {}).get(layer, {}).get(measure, math.nan) for r in REFERENCES]
                rows.append((self.checkpoint, self.step, layer, measure, value, *refs))
        return pd.DataFrame(rows, columns=list(COLUMNS)).astype({"step": "Int64"})


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def reports_frame(reports: list[Report]) -> pd.DataFrame:
    """The tidy tables of several reports stacked: one row per step x layer x measure."""
    if not reports:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat([r.to_frame() for r in reports], ignore_index=True)


def write_json(reports: list[Report], path, run: str | None = None) -> None:
    """One report as its :meth:`Report.to_dict`; a run's steps as {"run", "geometry", "steps": [to_dict, ...]}."""
    if run is None and len(reports) == 1:
        obj = reports[0].to_dict()
    else:
        obj = {"run": run, "geometry": reports[0].geometry.to_dict(), "steps": [r.to_dict() for r in reports]}
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))  # a failed write leaves no half file


# -- measuring ---------------------------------------------------------------------------------------------------
class Subject:
    """What one run's checkpoints (or one plain state_dict) are measured on, built once: geometry, the rebuilt
    model, the task when its data is at hand, the step-0 measures and the Gaussian references per layer shape."""

    def __init__(self, geometry: Geometry, model=None, task=None, source: Source | None = None, n_data: int = 512,
                 seed: int = 0, notes=()):
        self.geometry, self.model, self.task = geometry, model, task
        self.config = source.config if source is not None else None
        self.run_dir = source.run_dir if source is not None else None
        self.n_data, self.seed, self.notes = n_data, seed, list(notes)
        self._nulls: dict = {}
        self._tasks: object = None  # the task keys of the report() under way (probe.metrics.spectral.background)
        self._refs: dict = {}  # the first layer's reference parts that report() started (_first_references)
        self._perms: dict = {}  # layer shape -> the permutation of the permuted reference (_permutation)
        self._drawn: dict = {}  # layer shape -> its Gaussian matrix, drawn before that permutation, until _gaussian
        self._draw_lock = threading.Lock()  # _permutation runs on a worker too
        self._init: tuple | None = None
        self._init_seeds: dict = {}
        self._build = init_builder(source, task) if source is not None else None
        self._X = None  # inputs for input_pc_share, in the model's flat layout
        self._info: dict = {}  # facts of the last functional measures that are not measures (the best head)
        self.init_path = None  # the initial weights' file, when not the run's step-0 checkpoint (--init)
        self._init_file: Path | None = None  # the file the init reference was measured on
        self.layers_of_source: list[str] = []

    @classmethod
    def of(cls, source: Source, data: bool = True, n_data: int = 512, seed: int = 0, init=None) -> "Subject":
        if source.config is None:
            subject = cls(source.geometry, source=source, n_data=n_data, seed=seed)
            subject.init_path, subject.layers_of_source = init, list(subject.layers(source)) if init else []
            return subject
        task, notes = None, []
        if data:
            try:
                task = load_task(source.config)
            except (ConfigError, OSError, ValueError) as e:  # e.g. a CIFAR folder that is not on this machine
                notes.append(f"task data not available ({str(e).splitlines()[0][:160]}): functional measures skipped")
        model = build_probe_model(source, task)
        subject = cls(source.geometry, model, task, source, n_data, seed, notes)
        subject.init_path = init
        subject.layers_of_source = list(subject.layers(source)) if init else []  # only --init compares them
        return subject

    def layers(self, source: Source) -> dict[str, np.ndarray]:
        """The checkpoint's layers; for a probe model this also loads the weights into ``self.model``."""
        if self.model is None:
            return plain_layers(source.state_dict, self.geometry)
        return model_layers(self.model, source.state_dict)

    # one entry's measures, the same for a checkpoint and for its init
    def _values(self, W: np.ndarray, first: bool, W0: np.ndarray | None = None, where: str = "",
                name: str = "", spectral: dict[str, float] | None = None) -> dict[str, float]:
        """The measures of one layer; weights no measure reads (all zero, empty) are a WeightsRefused naming it.
        ``spectral``: the layer's spectral measures when they are known without W (a Gaussian reference)."""
        try:
            return self._measure(W, first, W0, spectral)
        except (ConfigError, CheckpointError):
            raise
        except ValueError as e:  # the measures' own refusal (probe.metrics: all zero, empty, not finite)
            raise WeightsRefused(f"{where}: layer {name}: {first_line_of(e)}; refused") from None

    def _measure(self, W: np.ndarray, first: bool, W0: np.ndarray | None = None,
                 spectral: dict[str, float] | None = None) -> dict[str, float]:
        if first:  # the first layer's measures that apply to this task's kind (registry), movement with W0
            out = first_layer_measures(W, self.geometry, self._first_names, W0=W0)
            if self._inputs() is not None:
                out["input_pc_share"] = input_pc_share(W, self._inputs())
        else:
            out = {"movement": movement(W, W0)} if W0 is not None and W0.shape == W.shape else {}
        return {**out, **(layer_measures(W) if spectral is None else spectral)}

    @property
    def _first_names(self) -> list[str]:
        return [n for n in WEIGHT_MEASURES if applies(n, self.geometry.kind)]

    def _inputs(self):
        if self._X is None and self.task is not None:
            x = self.task.x_train[: 4 * self.n_data]
            if self.task.vocab is not None and not x.is_floating_point():  # token ids: the one-hot layout
                x = torch.nn.functional.one_hot(x, self.geometry.channels).flatten(1)
            self._X = x.double().reshape(len(x), -1).numpy()
        return self._X

    def _gaussian(self, shape: tuple, first: bool) -> tuple[dict[str, float], np.ndarray | None]:
        """(measures of a seeded Gaussian matrix of this shape, the position permutation), as references() draws."""
        key = (shape, first)
        if key not in self._nulls and not first:  # spectral measures only: the shape and seed are enough
            self._nulls[key] = (defined(gaussian_spectral_measures(shape, self.seed)), None)
        if key not in self._nulls:  # the first layer: its geometric measures need the matrix, its spectra do not
            perm = self._permutation(tuple(shape))
            with self._draw_lock:
                G = self._drawn.pop(tuple(shape), None)
            if G is None:  # taken by an earlier call of this shape that failed: drawn again
                G = null_draws(shape, self.geometry.n_positions, self.seed)[0]
            spectra = defined(gaussian_spectral_measures(shape, self.seed))
            self._nulls[key] = (self._values(G, first, spectral=spectra), perm)
        return self._nulls[key]

    def _init_seed_values(self, shape: tuple) -> dict[str, float]:
        """The ``init_seeds`` reference of the first layer (:func:`probe.metrics.nulls.init_seed_measures`): the
        model's initializer on other seeds, or PyTorch's default Linear init for a plain state_dict (noted)."""
        if shape not in self._init_seeds:
            build = self._build or (lambda s: default_linear_init(shape, s))
            self._init_seeds[shape] = init_seed_measures(build, self.geometry, self.seed)
        return self._init_seeds[shape]

    def _init_state(self):
        """(layers, measures, function) of the run's step-0 checkpoint, or None if there is none."""
        if self._init is None:
            steps = dict(list_checkpoints(self.run_dir)) if self.run_dir is not None else {}
            path = self.init_path or steps.get(0)
            if path is None:
                self._init = (None,)
            else:
                # an outside checkpoint's initial weights (--init) read with its own geometry
                shape = None if self.config else (self.geometry.channels, *self.geometry.spatial)
                src = read_source(path, shape, self.geometry.periodic)
                try:
                    check_measurable(src)
                    layers = self.layers(src)
                    if self.init_path and list(layers) != list(self.layers_of_source):
                        raise ConfigError(f"--init {path}: its layers ({', '.join(layers)}) are not the "
                                          f"checkpoint's ({', '.join(self.layers_of_source)})")
                    prefetch(*layers.values())  # their spectra on the other core (inside background_spectra)
                    values = {n: self._values(W, i == 0, where=f"checkpoint {src.path}", name=n)
                              for i, (n, W) in enumerate(layers.items())}
                except WeightsRefused as e:
                    self.notes.append(f"no init reference ({e})")
                    self._init = (None,)
                    return None
                self._init = (layers, values, self._function())
                self._init_file = Path(path).resolve()
        return None if self._init[0] is None else self._init

    def _function(self) -> dict[str, float]:
        """Data-dependent measures of ``self.model`` as it is now loaded (empty without data)."""
        if self.task is None:
            return {}
        ev = evaluate(self.model.eval(), self.task.x_test, self.task.y_test, self.task.loss)
        out = {"test_loss": ev["loss"], **({"test_acc": ev["acc"]} if "acc" in ev else {})}
        info: dict = {}
        out.update(function_measures(self.model, self.task, n=self.n_data, seed=self.seed, info=info))
        self._info = info
        return out

    def report(self, source: Source, layer: str | None = None, delta: bool = False) -> Report:
        """Every measure of ``source`` beside its references; ``layer`` restricts the report to one layer; with
        ``delta`` the first layer's ``delta_*`` measures of ΔW = W - W_0 beside their references (:meth:`_delta`).

        The spectra (one eigendecomposition per layer and per Gaussian reference not yet kept) run on worker
        threads (:func:`probe.metrics.spectral.background_spectra`) while this thread computes the other measures."""
        check_measurable(source)
        with background_spectra():
            init = self._init_state()  # first: it loads the step-0 weights into the model
            if delta and init is None:
                raise ConfigError("--delta: needs the initial weights W_0, the run's step-0 checkpoint (checkpoints/"
                                  "step_0.pt) or, for an outside checkpoint, --init FILE")
            layers = self.layers(source)
            names = list(layers)
            if layer is not None and layer not in layers:
                raise ConfigError(f"--layer {layer}: no such layer in {source.path}; valid layers: {', '.join(names)}")
            # the spectra, largest first (the one this thread needs next and no worker has started, it computes
            # itself), then the first layer's references (the workers take them when their spectra are done)
            mine = [W for name, W in layers.items() if layer is None or name == layer]
            prefetch(*sorted(mine, key=lambda W: -min(W.shape) ** 2 * max(W.shape)))
            self._tasks = object()  # this call's task keys: nothing another report() started can be taken for it
            self._refs = {}
            if layer is None or layer == names[0]:
                self._refs = self._first_references(layers[names[0]])
                # largest first (their rough CPU seconds, PART_COST), so that the two threads end close together
                parts = [(kind, j, fn) for kind, fns in self._refs.items() for j, fn in enumerate(fns)]
                for kind, j, fn in sorted(parts, key=lambda p: getattr(p[2], "cost", 0.0), reverse=True):
                    background((self._tasks, kind, j), fn)
            try:
                return self._report(source, layer, init, layers, names, delta)
            finally:
                self._refs = {}  # (and the matrices their parts share, should one have failed before using them)

    def _first_references(self, W: np.ndarray) -> dict[str, list]:
        """The first layer's references that need only W, geometry and seed, each as a list of parts: functions safe
        to run on a worker thread (NumPy with seeded generators) whose dicts, merged in order, are that reference's
        values: ``permuted``, and for images ``phase`` and ``lcn``. A reference is split where its measures' cost is
        (shift_match's matrix product and matching, ~1 CPU s at 4096 x 3072, apart from the rest), so that the two
        cores share them evenly; its parts draw its matrix once (:class:`_Once`)."""
        geo, seed, names = self.geometry, self.seed, self._first_names
        plain = geo.without_perm()
        shape = tuple(W.shape)
        groups = _split_at(names, "shift_match")
        permuted = _Once(lambda: permute_positions(W, geo, self._permutation(shape)), uses=len(groups))
        refs = {"permuted": [_part(lambda group=group: first_layer_measures(permuted(), plain, group), group)
                             for group in groups]}
        if geo.kind == "image":  # the image nulls of the image measures (nulls.phase_measures and lcn_measures)
            in_phase = [n for n in PHASE_MEASURES if n in names]  # (the order nulls.phase_measures gives them)
            groups = _split_at(in_phase, "shift_match")
            phased = _Once(lambda: [phase_randomize(W, geo, seed, j) for j in range(phase_draws(shape[0]))],
                           uses=len(groups))
            refs["phase"] = [_part(lambda group=group: _mean_measures([first_layer_measures(P, plain, group)
                                                                      for P in phased()]), group)
                             for group in groups]
            in_lcn = [n for n in LCN_MEASURES if n in names]
            refs["lcn"] = [_part(lambda k=k: lcn_measures(W, geo, seed, [n for n in in_lcn if LCN_MEASURES[n] == k]),
                                 [n for n in in_lcn if LCN_MEASURES[n] == k])
                           for k in dict.fromkeys(LCN_MEASURES[n] for n in in_lcn)]
        return refs

    def _permutation(self, shape: tuple) -> np.ndarray:
        """The permutation of input positions :func:`probe.metrics.nulls.null_draws` draws after the Gaussian matrix
        of this shape: drawn once (a worker's permuted reference or this thread's Gaussian one, whichever comes
        first), its Gaussian matrix kept for :meth:`_gaussian` until that takes it."""
        with self._draw_lock:
            if shape not in self._perms:
                G, self._perms[shape] = null_draws(shape, self.geometry.n_positions, self.seed)
                self._drawn[shape] = G
            return self._perms[shape]

    def _report(self, source: Source, layer: str | None, init, layers: dict, names: list, delta: bool) -> Report:
        rep = Report(str(source.path), source.step, self.geometry, {}, model=self.config and self.config.model,
                     task=self.config and self.config.task, notes=list(self.notes))
        # the checkpoint the init reference was measured on (step 0 of --all-steps): measured once, not twice
        is_init = init is not None and self._init_file == Path(source.path).resolve()
        for i, (name, W) in enumerate(layers.items()):
            if layer is not None and name != layer:
                continue
            first = i == 0
            W0 = init[0].get(name) if init else None
            if is_init and name in init[1]:  # the step-0 checkpoint itself: its measures are the init reference's
                rep.layers[name] = _with_movement(init[1][name], first, movement(W, W0))
            else:
                rep.layers[name] = self._values(W, first, W0, where=f"checkpoint {source.path}", name=name)
            rep.shapes[name] = tuple(W.shape)
            gauss, _ = self._gaussian(W.shape, first)
            rep.reference["gaussian"][name] = gauss
            if init and name in init[1]:
                rep.reference["init"][name] = init[1][name]
            if first and self.geometry.kind == "image":
                rep.reference["init_seeds"][name] = self._init_seed_values(W.shape)
                if self._build is None:
                    rep.notes.append("init_seeds: PyTorch's default Linear init U(-1/sqrt(n), 1/sqrt(n)) on other "
                                     "seeds (a plain state_dict does not say how it was initialized)")
        if layer is None or layer == names[0]:
            # the first layer's other references last: report() started them on a worker, which takes them once its
            # spectra are done, while this thread computes the rest (background_result computes here what none has
            # started); then its delta measures, which add their twins to these references
            name, W = names[0], layers[names[0]]
            for kind, fns in self._refs.items():  # the parts report() started
                rep.reference[kind][name] = {k: v for j, fn in enumerate(fns)
                                             for k, v in background_result((self._tasks, kind, j), fn).items()}
            if delta:
                self._delta(rep, name, W, init[0].get(name))
            units = rep.layers[name].get("shift_match_units", W.shape[0])
            if units < W.shape[0]:
                rep.notes.append(f"shift_match matched a seeded sample of {units:.0f} of {W.shape[0]} units")
            # the model holds this checkpoint's weights (self.layers loaded them)
            rep.function = dict(init[2]) if is_init else self._function()
            if "attn_layer" in self._info:
                rep.notes.append(f"attn_* measures: the attention head that routes best, layer "
                                 f"{self._info['attn_layer']} head {self._info['attn_head']}")
            _split_random(rep.function, rep.reference["gaussian"])
            _split_nulls(rep.function, rep.reference)
            if init and init[2]:
                rep.reference["init"][FUNCTION] = {k: v for k, v in init[2].items()
                                                   if not k.endswith("_random") and "@" not in k}
        if init is None and self.config is not None:
            rep.notes.append("no step-0 checkpoint beside it: no init reference and no movement")
        if init is None and self.config is None:
            rep.notes.append("no init reference and no movement: give the initial weights with --init FILE")
        if self.config is None and names and names[0].endswith(".dense"):
            rep.notes.append(f"{names[0]}: the first layer's convolution kernel written out densely, read as stride 1 "
                             "with zero padding k // 2 (a state_dict does not store stride or padding)")
        if self.geometry.kind == "sequence":
            rep.notes.append("sequence task: the first layer's image measures (locality, translation) do not apply; "
                             "its routing measures are in the function section")
        left_out = unmeasured(source.state_dict, names)
        if left_out:
            rep.notes.append("left out, not dense matrices (only a CNN's or LCN's first layer is written out "
                             "densely): " + ", ".join(left_out))
        return rep

    def _delta(self, rep: Report, name: str, W: np.ndarray, W0: np.ndarray | None) -> None:
        """The first layer's measures on ΔW = W - W_0 (:mod:`probe.metrics.pull`) as ``delta_<key>`` in its row,
        and their ``gaussian``, ``permuted``, ``phase`` and ``lcn`` references drawn from ΔW as
        :func:`probe.metrics.nulls.references` draws them (no ``init``: ΔW is 0 there). ΔW = 0 (the initial
        weights themselves) gets a note and no delta measures."""
        from probe.metrics.layer import LAYER_MEASURES
        from probe.run.tracking import add_twin_references

        if W0 is None or W0.shape != W.shape:
            rep.notes.append(f"delta: no initial weights of layer {name}'s shape: no delta measures")
            return
        D = W - W0
        if not D.any():
            rep.notes.append("delta: ΔW = 0 (these are the initial weights): no delta measures")
            return
        values = {**first_layer_measures(D, self.geometry, self._first_names), **layer_measures(D)}
        rep.layers[name] = {**rep.layers[name], **{f"delta_{k}": v for k, v in values.items()}}
        # the same nulls, drawn from ΔW, as a tracked run's reference.json holds for its delta_ keys
        refs = add_twin_references({}, D, self.geometry, self.seed, "delta", [*self._first_names, *LAYER_MEASURES])
        for kind, vals in refs.items():
            rep.reference[kind][name] = {**rep.reference[kind].get(name, {}), **vals}


class _Once:
    """A value computed on first call, by whichever thread calls first (the others wait for it), shared by the parts of
    one reference (:meth:`Subject._first_references`), and let go after ``uses`` calls (a large matrix: 100 MB at
    4096 x 3072); a call after that computes it again."""

    def __init__(self, fn, uses: int):
        self._fn, self._lock, self._value, self._left = fn, threading.Lock(), None, uses

    def __call__(self):
        with self._lock:
            value = self._fn() if self._value is None else self._value
            self._left -= 1
            self._value = value if self._left > 0 else None
            return value


#: rough CPU seconds of a measure on issue 19's 4096 x 3072 first layer, for the order of the reference parts
PART_COST = {"shift_match": 1.0, "conv_distance_3": 0.15, "conv_distance_5": 0.2, "spectral_entropy": 0.2}


def _part(fn, names: list):
    """``fn`` with its rough cost (:data:`PART_COST`; 0.05 s for a measure not there) for the order
    :meth:`Subject.report` starts the parts in."""
    fn.cost = sum(PART_COST.get(n, 0.05) for n in names)
    return fn


def _split_at(names: list, heavy: str) -> list[list]:
    """``names`` in contiguous groups, ``heavy`` alone in its own: merged in order, the groups' dicts have the keys in
    the order one call with all names gives."""
    if heavy not in names:
        return [names] if names else []
    i = names.index(heavy)
    return [g for g in (names[:i], [heavy], names[i + 1:]) if g]


def _with_movement(values: dict[str, float], first: bool, moved: float) -> dict[str, float]:
    """A layer's measures with ``movement`` added where :meth:`Subject._measure` puts it (after the first layer's
    registry measures, before input_pc_share and the spectra; first for the other layers)."""
    if not first:
        return {"movement": moved, **values}
    head = {k: v for k, v in values.items() if k != "input_pc_share" and k not in LAYER_MEASURES}
    return {**head, "movement": moved, **{k: v for k, v in values.items() if k not in head}}


def unmeasured(state_dict: dict, layers) -> list[str]:
    """The weight tensors of more than two dimensions (conv kernels) that no layer of the report stands for, as
    ``name (shape)``; a first layer written out densely (``layers.0.dense``) stands for its kernel."""
    shown = {n.removesuffix(".dense") for n in layers}
    return [f"{k.removesuffix('.weight')} ({'x'.join(map(str, v.shape))})" for k, v in state_dict.items()
            if torch.is_tensor(v) and v.dim() > 2 and v.is_floating_point() and k.removesuffix(".weight") not in shown]


def first_line_of(e: BaseException) -> str:
    msg = str(e).strip()
    return (msg.splitlines()[0] if msg else type(e).__name__)[:200]


def _split_random(function: dict, gaussian: dict) -> None:
    """Move ``X_random`` keys (random-weight values sequence_measures returns) to the gaussian reference of X."""
    for key in [k for k in function if k.endswith("_random") and k[: -len("_random")] in function]:
        gaussian.setdefault(FUNCTION, {})[key[: -len("_random")]] = function.pop(key)


def _split_nulls(function: dict, reference: dict) -> None:
    """Move ``X@permuted`` and ``X@gaussian`` keys (a functional measure's own nulls: time_sharing, causal_mass,
    relevant_weight_mass) to that reference of X; other ``X@Y`` keys (the add task's controls, ``@linreg``,
    ``@rule``) stay in the function section."""
    for key in [k for k in function if "@" in k]:
        name, ref = key.split("@", 1)
        if ref in ("permuted", "gaussian") and name in function:
            reference[ref].setdefault(FUNCTION, {})[name] = function.pop(key)


# -- public entry points -----------------------------------------------------------------------------------------
def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the system (glibc's ``mallopt``:
    allocations up to 1 GiB come from the heap, whose freed top is kept, and every thread allocates from that one
    heap, since a thread's own arena maps blocks over 64 MiB afresh); True where it took effect (Linux with glibc).

    An analysis allocates and frees arrays of tens to hundreds of MB again and again (Gram matrices, the solver's
    copies, fields, cosine matrices). By default glibc maps each one afresh and unmaps it when freed, and every page of
    a fresh mapping costs a page fault on first touch: 2-3 CPU s of kernel time per analyze of issue 19's
    3072-4096-4096-4096-10 MLP (400,000 faults). With the memory reused, the first analyze in a process still faults in
    what it touches first (240,000 faults, 1.8-2.7 s), the next ones almost nothing (1,000 faults, 0.2 s; 66,000 when
    the spectra worker kept its own arena), measured on the project's 2-core machine. The price is that the process
    keeps its peak memory until it exits, so `probe analyze` and the benchmark call this, not the library: a training
    process or a notebook keeps the default."""
    import ctypes
    import platform

    try:
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # <malloc.h>
        return all([libc.mallopt(M_MMAP_THRESHOLD, 1 << 30), libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1),
                    libc.mallopt(M_ARENA_MAX, 1)])
    except (OSError, AttributeError, ValueError):
        return False


def analyze_checkpoint(path, *, input_shape=None, periodic: bool = False, data: bool = True, layer: str | None = None,
                       n_data: int = 512, seed: int = 0, init=None, delta: bool = False) -> Report:
    """Measure one checkpoint (a run folder: its last one) beside its references.

    Args:
        path: a probe checkpoint, a run folder, or a file holding a plain state_dict of Linear layers.
        input_shape: (C, L) or (C, H, W) of a plain state_dict's inputs (required there); for a probe
            checkpoint it must match the stored geometry.
        periodic: whether the ``input_shape`` grid wraps around.
        data: rebuild a probe run's task for the data-dependent measures; when it cannot be built (a data
            folder missing here) they are skipped and ``notes`` says why. Ignored for plain state_dicts.
        layer: report only this layer (ConfigError listing the valid names if there is none of that name).
        n_data: test inputs for the functional measures; input_pc_share uses up to 4 x n_data training inputs.
        seed: seeds the Gaussian weights, the position permutation and the sequence measures' samples.
        init: the initial weights (a file like ``path``), for the ``init`` reference and ``movement`` of a
            checkpoint without a step-0 checkpoint beside it (an outside state_dict).
        delta: also the first layer's measures of ΔW = W - W_0 (``delta_*``), W_0 from the step-0 checkpoint or
            ``init``; ConfigError without either.

    Raises CheckpointError or ConfigError with a one-line message for anything the user can fix.
    """
    source = read_source(checkpoint_at(path), input_shape, periodic)
    return Subject.of(source, data, n_data, seed, init).report(source, layer, delta)


def analyze_steps(run_dir, *, data: bool = True, layer: str | None = None, n_data: int = 512,
                  seed: int = 0, progress: bool = False, delta: bool = False) -> list[Report]:
    """One :class:`Report` per checkpoint of a run folder, by step (arguments as :func:`analyze_checkpoint`;
    ``progress``: a bar, or a line every few seconds, on standard error). A checkpoint file inside a run folder
    means that run. Model and task are built once, the step-0 measures (every step's ``init``) computed once,
    the Gaussian references once per layer shape."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() and run_dir.parent.name == "checkpoints":
        run_dir = run_dir.parent.parent
    if not run_dir.is_dir():
        raise ConfigError(f"--all-steps needs a run folder (with checkpoints/), got {run_dir}")
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"run folder {run_dir}: no checkpoints (checkpoints/step_<N>.pt)")
    first = read_source(ckpts[0][1])
    if first.config is None:
        raise CheckpointError(f"checkpoint {first.path}: not a probe checkpoint")
    subject = Subject.of(first, data, n_data, seed)
    # one checkpoint in memory at a time (with optimizer state a checkpoint is ~3x its weights); checkpoints whose
    # weights no measure reads (a run trained on after diverging) are left out with a note
    reports, skipped = [], []
    with Progress(len(ckpts), f"analyze {run_dir}", "checkpoint", enabled=progress) as bar:
        for i, (step, p) in enumerate(ckpts):
            try:
                reports.append(subject.report(first if i == 0 else read_source(p), layer, delta))
            except WeightsRefused as e:
                if not reports and i == len(ckpts) - 1:
                    raise
                skipped.append((step, e))
            bar.update(i + 1, f"step {step}")
    if not reports:
        raise skipped[-1][1]
    if skipped:
        steps = ", ".join(str(s) for s, _ in skipped)
        reports[0].notes.append(f"step(s) {steps} left out: {str(skipped[0][1]).split(': ', 1)[1]}")
    return reports


def analyze_run(run_dir, all_steps: bool = True, **kwargs) -> pd.DataFrame:
    """The tidy table (:data:`COLUMNS`) of a run folder: every checkpoint, or only the last with
    ``all_steps=False``; keyword arguments as :func:`analyze_steps` (e.g. ``data=False`` for weights only)."""
    if all_steps:
        return reports_frame(analyze_steps(run_dir, **kwargs))
    return analyze_checkpoint(run_dir, **kwargs).to_frame()
