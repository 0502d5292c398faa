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
  eigendecomposition. A functional measure's own null, ``X@kind`` (``position_ipr@gaussian``,
  ``time_sharing@permuted``), is reported as reference ``kind`` of X.
- The references are the jobs :func:`probe.metrics.nulls.null_jobs` describes, the ones
  :func:`probe.metrics.nulls.references` runs in turn, so the numbers agree with it. Every measure is scale-free,
  so one unit-variance Gaussian per layer shape serves every checkpoint of a run, and so do the init_seeds draws.
- How: :meth:`Analysis.report` lists a checkpoint's independent jobs and runs them on the machine's cores
  (:mod:`probe.analysis.jobs`); the values do not depend on which thread computes them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probe.analysis.function import function_measures
from probe.analysis.jobs import run_jobs, single_threaded
from probe.analysis.load import (Source, build_probe_model, checkpoint_at, init_builder, load_task, model_layers,
                                 plain_layers, read_source)
from probe.config import ConfigError
from probe.geometry import Geometry
from probe.metrics import (FIRST_LAYER_MEASURES, MEASURE_KEYS, SPECTRAL_MEASURES, checked_matrix, defined,
                           first_layer_measures, input_pc_share, layer_measures, movement)
from probe.metrics.registry import applies
from probe.metrics.nulls import LCN_MEASURES, default_linear_init, null_draws, null_jobs
from probe.metrics.spectral import eigenvalues, gaussian_spectral_measures
from probe.progress import Progress
from probe.run.checkpoint import CheckpointError, atomic_write, list_checkpoints
from probe.run.errors import first_line
from probe.run.loop import evaluate
from probe.run.tracking import add_twin_references

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
@dataclass
class Initial:
    """The initial weights a checkpoint is read against: the run's step-0 checkpoint or ``--init``'s file."""

    layers: dict[str, np.ndarray]  # layer name -> W_0
    values: dict[str, dict[str, float]]  # layer name -> its measures (the ``init`` reference)
    function: dict[str, float]  # the model's data-dependent measures at W_0
    file: Path  # the file they were read from


class Analysis:
    """What one run's checkpoints (or one plain state_dict) are measured on, built once: geometry, the rebuilt
    model, the task when its data is at hand, the initial weights' measures and the Gaussian references per layer
    shape.

    :meth:`report` measures one checkpoint: it lists the independent jobs (each layer's spectrum, computed once and
    passed to every spectral measure; the first layer's other measures; each reference of :func:`null_jobs`; the
    functional measures) and runs them on the machine's cores (:func:`probe.analysis.jobs.run_jobs`), then puts the
    values together in the report's order."""

    def __init__(self, geometry: Geometry, model=None, task=None, source: Source | None = None, n_data: int = 512,
                 seed: int = 0, notes=()):
        self.geometry, self.model, self.task = geometry, model, task
        self.config = source.config if source is not None else None
        self.run_dir = source.run_dir if source is not None else None
        self.n_data, self.seed, self.notes = n_data, seed, list(notes)
        self._gaussian: dict = {}  # (shape, first) -> the layer's gaussian reference (scale-free: one per shape)
        self._draws: dict = {}  # shape -> (G, perm) of nulls.null_draws; G let go once its reference is kept
        self._init_seeds: dict = {}  # shape -> the first layer's init_seeds reference
        self._initial: Initial | None = None
        self._initial_read = False  # whether _initial_state looked (None then means there are no initial weights)
        self._build = init_builder(source, task) if source is not None else None
        self._X = None  # inputs for input_pc_share, in the model's flat layout
        self._info: dict = {}  # facts of the last functional measures that are not measures (the best head)
        self.init_path = None  # the initial weights' file, when not the run's step-0 checkpoint (--init)
        self.init_source: Source | None = None  # the initial weights given in memory (probe.analyze(init=...))
        self.layers_of_source: list[str] = []
        self.options = dict(source.options) if source is not None else {}  # how an outside first layer was chosen

    @classmethod
    def of(cls, source: Source, data: bool = True, n_data: int = 512, seed: int = 0, init=None) -> "Analysis":
        if source.config is None:
            analysis = cls(source.geometry, source=source, n_data=n_data, seed=seed)
            analysis.init_path, analysis.layers_of_source = init, list(analysis.layers(source)) if init else []
            return analysis
        task, notes = None, []
        if data:
            try:
                task = load_task(source.config)
            except (ConfigError, OSError, ValueError) as e:  # e.g. a CIFAR folder that is not on this machine
                notes.append(f"task data not available ({str(e).splitlines()[0][:160]}): functional measures skipped")
        model = build_probe_model(source, task)
        analysis = cls(source.geometry, model, task, source, n_data, seed, notes)
        analysis.init_path = init
        analysis.layers_of_source = list(analysis.layers(source)) if init else []  # only --init compares them
        return analysis

    def layers(self, source: Source) -> dict[str, np.ndarray]:
        """The checkpoint's layers; for a probe model this also loads the weights into ``self.model``."""
        if self.model is None:
            return plain_layers(source.state_dict, self.geometry, source.layout)
        try:
            return model_layers(self.model, source.state_dict)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {source.path}: {e}") from None

    @property
    def _first_names(self) -> list[str]:
        return [n for n in FIRST_LAYER_MEASURES if applies(n, self.geometry.kind)]

    def _inputs(self):
        if self._X is None and self.task is not None:
            x = self.task.x_train[: 4 * self.n_data]
            if self.task.vocab is not None and not x.is_floating_point():  # token ids: the one-hot layout
                x = torch.nn.functional.one_hot(x, self.geometry.channels).flatten(1)
            self._X = x.double().reshape(len(x), -1).numpy()
        return self._X

    def _first_layer_values(self, W: np.ndarray, W0: np.ndarray | None = None) -> dict[str, float]:
        """The first layer's measures but the spectral ones: the registry's that apply to this task's kind, movement
        with W0, input_pc_share with the task's inputs."""
        out = first_layer_measures(W, self.geometry, self._first_names, W0=W0)
        if self._inputs() is not None:
            out["input_pc_share"] = input_pc_share(W, self._inputs())
        return out

    def _layer_jobs(self, layers: dict[str, np.ndarray], first: str, initial: dict, where: str) -> dict:
        """The jobs of these layers' own measures: ("spectrum", name) -> its spectral measures (one eigendecomposition
        each), ("first", name) -> the first layer's other measures. Weights no measure reads (all zero, empty) are a
        WeightsRefused naming the layer, raised here in layer order."""
        checked = {name: _refusing(where, name, lambda W=W: checked_matrix(W))() for name, W in layers.items()}
        jobs = {}
        for name, W in checked.items():
            jobs[("spectrum", name)] = _refusing(where, name, lambda W=W: layer_measures(W, eigenvalues(W)))
            if name == first:
                jobs[("first", name)] = _refusing(where, name, lambda W=W, W0=initial.get(name): (
                    self._first_layer_values(W, W0)))
        return jobs

    def _layer_values(self, name: str, W: np.ndarray, first: bool, W0: np.ndarray | None, done: dict) -> dict:
        """One layer's measures from the results of :meth:`_layer_jobs`, in the report's order: the first layer's
        registry measures (movement last among them), input_pc_share, the spectra; movement first elsewhere."""
        if first:
            out = done[("first", name)]
        else:
            out = {"movement": movement(W, W0)} if W0 is not None and W0.shape == W.shape else {}
        return {**out, **done[("spectrum", name)]}

    def _reference_jobs(self, layers: dict[str, np.ndarray], first: str | None) -> dict:
        """The jobs of the references not yet kept: each layer shape's Gaussian reference (its spectra drawn without a
        decomposition; the first layer's other measures on a drawn Gaussian matrix) and the first layer's
        ``init_seeds``, then its ``permuted``, ``phase`` and ``lcn`` references (:func:`null_jobs`)."""
        jobs = {}
        for name, W in layers.items():
            key = (tuple(W.shape), name == first)
            if key not in self._gaussian and ("gaussian", key) not in jobs:
                jobs[("gaussian", key)] = lambda shape=key[0]: defined(gaussian_spectral_measures(shape, self.seed))
        if first is None:
            return jobs
        W, kinds = layers[first], ["permuted"]
        shape = tuple(W.shape)
        if (shape, True) not in self._gaussian:
            kinds.insert(0, "gaussian")
        if self.geometry.kind == "image":
            kinds += ["phase", "lcn"]
            if shape not in self._init_seeds:
                kinds.append("init_seeds")
        build = self._build or (lambda s: default_linear_init(shape, s))
        if shape not in self._draws:  # (G, perm) of this shape: G until its Gaussian reference is kept, perm for good
            self._draws[shape] = null_draws(shape, self.geometry.n_positions, self.seed)
        G, perm = self._draws[shape]
        for job in null_jobs(W, self.geometry, self.seed, self._first_names, kinds, scale=1.0, init_build=build,
                             draws=(G if "gaussian" in kinds else None, perm)):
            if job.kind == "gaussian":  # the whole first-layer row of a Gaussian layer: input_pc_share too
                G = job.matrix
                jobs[("null", "gaussian")] = lambda run=job.run, G=G: {
                    **run(), **({"input_pc_share": input_pc_share(G, self._inputs())} if self._inputs() is not None
                                else {})}
            else:
                jobs[("null", job.kind)] = job.run
        return jobs

    def _gaussian_values(self, shape: tuple, first: bool, done: dict) -> dict[str, float]:
        """The Gaussian reference of a layer of this shape, kept for the next checkpoints."""
        key = (tuple(shape), first)
        if key not in self._gaussian:
            spectra = done[("gaussian", key)]
            self._gaussian[key] = {**done[("null", "gaussian")], **spectra} if first else spectra
            if first:
                self._draws[key[0]] = (None, self._draws[key[0]][1])  # (a large matrix: 100 MB at 4096 x 3072)
        return self._gaussian[key]

    def _initial_state(self) -> Initial | None:
        """The initial weights and their measures (the run's step-0 checkpoint, or ``--init``), None without them."""
        if self._initial_read:
            return self._initial
        self._initial_read = True
        steps = dict(list_checkpoints(self.run_dir)) if self.run_dir is not None else {}
        path = self.init_path or steps.get(0)
        if path is None:
            return None
        # an outside checkpoint's initial weights (--init) read with its own geometry
        shape = None if self.config else (self.geometry.channels, *self.geometry.spatial)
        src = self.init_source or read_source(path, shape, self.geometry.periodic, **self.options)
        other = None if self.init_path else _config_diff(self.config, src.config)
        if other:  # another run's start (a checkpoint copied in from another seed): not this one's W_0
            self.notes.append(f"no init reference and no movement: {src.path} was written with another "
                              f"config than the checkpoint measured (differs in {', '.join(other)}), so it is "
                              "not this run's start")
            return None
        try:
            check_measurable(src)
            layers = self.layers(src)
            if self.init_path and list(layers) != list(self.layers_of_source):
                raise ConfigError(f"--init {path}: its layers ({', '.join(layers)}) are not the "
                                  f"checkpoint's ({', '.join(self.layers_of_source)})")
            first = next(iter(layers), None)
            jobs = _largest_first(self._layer_jobs(layers, first, {}, f"checkpoint {src.path}"), layers)
            jobs["function"] = self._function  # the model holds the initial weights (self.layers loaded them)
            done = run_jobs(jobs)
        except (WeightsRefused, CheckpointError) as e:  # CheckpointError: step 0 of another model
            self.notes.append(f"no init reference ({e})")
            return None
        values = {n: self._layer_values(n, W, n == first, None, done) for n, W in layers.items()}
        self._initial = Initial(layers, values, done["function"], Path(path).resolve())
        return self._initial

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
        ``delta`` the first layer's ``delta_*`` measures of ΔW = W - W_0 beside their references (:meth:`_delta`)."""
        check_measurable(source)
        other = _config_diff(self.config, source.config)
        if other:  # --all-steps: model, task and step-0 weights are those of the run's first checkpoint
            raise WeightsRefused(f"checkpoint {source.path}: written with another config than the run's first "
                                 f"checkpoint (differs in {', '.join(other)}): another run's checkpoint, not measured "
                                 "against this run's start")
        with single_threaded():  # the same settings for every value, on the job threads or not
            return self._report(source, layer, delta)

    def _report(self, source: Source, layer: str | None, delta: bool) -> Report:
        init = self._initial_state()  # first: it loads the initial weights into the model
        if delta and init is None:
            raise ConfigError("--delta: needs the initial weights W_0, the run's step-0 checkpoint (checkpoints/"
                              "step_0.pt) or, for an outside checkpoint, --init FILE")
        layers = self.layers(source)
        names = list(layers)
        if layer is not None and layer not in layers:
            raise ConfigError(f"--layer {layer}: no such layer in {source.path}; valid layers: {', '.join(names)}")
        rep = Report(str(source.path), source.step, self.geometry, {}, model=self.config and self.config.model,
                     task=self.config and self.config.task, notes=list(self.notes))
        # the checkpoint the init reference was measured on (step 0 of --all-steps): measured once, not twice
        is_init = init is not None and init.file == Path(source.path).resolve()
        mine = {n: W for n, W in layers.items() if layer is None or n == layer}
        first = names[0] if names[0] in mine else None
        initial = init.layers if init else {}
        fresh = {n: W for n, W in mine.items() if not (is_init and n in init.values)}
        jobs = self._layer_jobs(fresh, names[0], initial, f"checkpoint {source.path}")
        jobs.update(self._reference_jobs(mine, first))
        if first is not None and not is_init:
            jobs["function"] = self._function  # the model holds this checkpoint's weights (self.layers loaded them)
        self._inputs()  # (read once here, not by two jobs at once)
        done = run_jobs(_largest_first(jobs, layers))

        for name, W in mine.items():
            is_first, W0 = name == names[0], initial.get(name)
            if name in fresh:
                rep.layers[name] = self._layer_values(name, W, is_first, W0, done)
            else:  # the initial checkpoint itself: its measures are the init reference's
                rep.layers[name] = _with_movement(init.values[name], is_first, movement(W, W0))
            rep.shapes[name] = tuple(W.shape)
            rep.reference["gaussian"][name] = self._gaussian_values(W.shape, is_first, done)
            if init and name in init.values:
                rep.reference["init"][name] = init.values[name]
            if is_first and self.geometry.kind == "image":
                self._init_seeds.setdefault(tuple(W.shape), done.get(("null", "init_seeds"), {}))
                rep.reference["init_seeds"][name] = self._init_seeds[tuple(W.shape)]
                if self._build is None:
                    rep.notes.append("init_seeds: PyTorch's default Linear init U(-1/sqrt(n), 1/sqrt(n)) on other "
                                     "seeds (a plain state_dict does not say how it was initialized)")
        if first is not None:
            # the first layer's other references, then its delta measures, which add their twins to these references
            name, W = first, layers[first]
            for kind in ("permuted", "phase", "lcn"):
                if kind == "permuted" or self.geometry.kind == "image":
                    rep.reference[kind][name] = done.get(("null", kind), {})
            if name in rep.reference["lcn"]:
                rep.reference["lcn"][name] = _by_window(rep.reference["lcn"][name])
            if delta:
                self._delta(rep, name, W, init.layers.get(name))
            units = rep.layers[name].get("shift_match_units", W.shape[0])
            if units < W.shape[0]:
                rep.notes.append(f"shift_match matched a seeded sample of {units:.0f} of {W.shape[0]} units")
            rep.function = dict(init.function) if is_init else done["function"]
            if "attn_layer" in self._info:
                rep.notes.append(f"attn_* measures: the attention head that routes best, layer "
                                 f"{self._info['attn_layer']} head {self._info['attn_head']}")
            _nulls_to_references(rep.function, rep.reference)
            if init and init.function:
                rep.reference["init"][FUNCTION] = {k: v for k, v in init.function.items() if "@" not in k}
        if init is None and self.config is not None and not any(
                "not this run's start" in n or n.startswith("no init reference") for n in self.notes):
            rep.notes.append("no step-0 checkpoint beside it: no init reference and no movement")
        if init is None and self.config is None:
            rep.notes.append("no init reference and no movement: give the initial weights with --init FILE")
        if source.layout is not None:
            rep.notes.extend(source.layout.notes)
        elif self.config is None and names and names[0].endswith(".dense"):
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
        if W0 is None or W0.shape != W.shape:
            rep.notes.append(f"delta: no initial weights of layer {name}'s shape: no delta measures")
            return
        D = W - W0
        if not D.any():
            rep.notes.append("delta: ΔW = 0 (these are the initial weights): no delta measures")
            return
        # the same nulls, drawn from ΔW, as a tracked run's reference.json holds for its delta_ keys
        refs = add_twin_references({}, D, self.geometry, self.seed, "delta", [*self._first_names, *SPECTRAL_MEASURES])
        # ΔW's spectral measures are its permuted reference's (a permutation keeps the spectrum): not decomposed twice
        spectra = {k: v for k, v in refs.get("permuted", {}).items() if k.removeprefix("delta_") in SPECTRAL_MEASURES}
        values = {f"delta_{k}": v for k, v in first_layer_measures(D, self.geometry, self._first_names).items()}
        rep.layers[name] = {**rep.layers[name], **values, **spectra}
        for kind, vals in refs.items():
            rep.reference[kind][name] = {**rep.reference[kind].get(name, {}), **vals}


def _refusing(where: str, name: str, fn):
    """``fn`` with the measures' own refusal (a ValueError: all zero, empty, not finite) as a WeightsRefused naming
    the file and the layer."""

    def call():
        try:
            return fn()
        except (ConfigError, CheckpointError):
            raise
        except ValueError as e:
            raise WeightsRefused(f"{where}: layer {name}: {first_line(e)}; refused") from None

    return call


def _by_window(values: dict[str, float]) -> dict[str, float]:
    """The ``lcn`` reference's values by window size, k = 3 first (the order of :data:`LCN_MEASURES`), whatever the
    order the measures were asked in: the order the report's tables have always shown them in."""
    order = [k for n in sorted(LCN_MEASURES, key=lambda n: LCN_MEASURES[n]) for k in MEASURE_KEYS.get(n, (n,))]
    return {**{k: values[k] for k in order if k in values}, **{k: v for k, v in values.items() if k not in order}}


def _largest_first(jobs: dict, layers: dict) -> dict:
    """The jobs in the order :func:`run_jobs` should start them, so that the threads end close together: the layers'
    spectra, largest first (a decomposition costs about min(m, n)^2 max(m, n)), the functional measures (a model
    on its data), the first-layer measures of each matrix, and last the Gaussian spectra (drawn, not decomposed)."""
    def cost(key):
        m, n = layers[key[1]].shape
        return min(m, n) ** 2 * max(m, n)

    def rank(key):
        kind = key[0] if isinstance(key, tuple) else key
        return {"spectrum": 0, "function": 1, "gaussian": 3}.get(kind, 2)

    spectra = sorted((k for k in jobs if rank(k) == 0), key=cost, reverse=True)
    return {k: jobs[k] for k in spectra + sorted((k for k in jobs if rank(k) > 0), key=rank)}


def _config_diff(a, b) -> list[str]:
    """The RunConfig fields (but the device) in which two probe checkpoints' configs differ; [] when either is None."""
    if a is None or b is None:
        return []
    da, db = a.to_dict(), b.to_dict()
    return [k for k in da if k != "device" and da[k] != db.get(k)]


def _with_movement(values: dict[str, float], first: bool, moved: float) -> dict[str, float]:
    """A layer's measures with ``movement`` added where :meth:`Analysis._layer_values` puts it (after the first layer's
    registry measures, before input_pc_share and the spectra; first for the other layers)."""
    if not first:
        return {"movement": moved, **values}
    head = {k: v for k, v in values.items() if k != "input_pc_share" and k not in SPECTRAL_MEASURES}
    return {**head, "movement": moved, **{k: v for k, v in values.items() if k not in head}}


def unmeasured(state_dict: dict, layers) -> list[str]:
    """The weight tensors of more than two dimensions (conv kernels) that no layer of the report stands for, as
    ``name (shape)``; a first layer written out densely (``layers.0.dense``, or a patch embedding's
    ``<name>.patch``) stands for its kernel."""
    shown = {n.removesuffix(".dense").removesuffix(".patch") for n in layers}
    return [f"{k.removesuffix('.weight')} ({'x'.join(map(str, v.shape))})" for k, v in state_dict.items()
            if torch.is_tensor(v) and v.dim() > 2 and v.is_floating_point() and k.removesuffix(".weight") not in shown]


def _nulls_to_references(function: dict, reference: dict) -> None:
    """Move each ``X@kind`` key of the function section whose kind is a reference (a functional measure's own null:
    ``time_sharing@permuted``, ``position_ipr@gaussian``, ...) to ``reference[kind]["function"][X]``, the report's
    place for it; other ``X@Y`` keys (the add task's controls ``@linreg``, ``@rule``; chance levels ``@chance``) and
    nulls of a measure not measured stay in the function section."""
    for key in [k for k in function if "@" in k]:
        name, ref = key.split("@", 1)
        if ref in REFERENCES and name in function:
            reference[ref].setdefault(FUNCTION, {})[name] = function.pop(key)


# -- public entry points -----------------------------------------------------------------------------------------
def analyze_checkpoint(path, *, input_shape=None, periodic: bool = False, data: bool = True, layer: str | None = None,
                       n_data: int = 512, seed: int = 0, init=None, delta: bool = False, first_layer: str | None = None,
                       stride: int | None = None, padding: int | None = None) -> Report:
    """Measure one checkpoint (a run folder: its last one) beside its references.

    Args:
        path: a probe checkpoint, a run folder, a file holding a plain state_dict (torch or safetensors), or a
            ``save_pretrained`` folder.
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
        first_layer, stride, padding: an outside checkpoint's first layer (a state_dict key) and its convolution's
            stride and zero padding (:func:`probe.analysis.outside.plan_first_layer`).

    Raises CheckpointError or ConfigError with a one-line message for anything the user can fix.
    """
    if not isinstance(path, (str, Path)):  # probe.analyze_checkpoint (probe.analysis.api) takes those too
        raise ConfigError(f"analyze_checkpoint: takes a path here, got {type(path).__name__}; for a model or "
                          "state_dict in memory call probe.analyze (or probe.analyze_checkpoint)")
    source = read_source(checkpoint_at(path), input_shape, periodic, first_layer=first_layer, stride=stride,
                         padding=padding)
    return Analysis.of(source, data, n_data, seed, init).report(source, layer, delta)


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
    analysis = Analysis.of(first, data, n_data, seed)
    # one checkpoint in memory at a time (with optimizer state a checkpoint is ~3x its weights); checkpoints whose
    # weights no measure reads (a run trained on after diverging) are left out with a note
    reports, skipped, damaged, unreadable = [], [], [], []
    with Progress(len(ckpts), f"analyze {run_dir}", "checkpoint", enabled=progress) as bar:
        for i, (step, p) in enumerate(ckpts):
            try:
                source = first if i == 0 else _read_measurable(p, step, damaged)
                reports.append(analysis.report(source, layer, delta))
            except WeightsRefused as e:
                if not reports and i == len(ckpts) - 1:
                    raise
                skipped.append((step, e))
            except CheckpointError as e:  # a damaged checkpoint: the others are still measured
                unreadable.append((step, e))
            bar.update(i + 1, f"step {step}")
    if not reports:
        raise (skipped or unreadable)[-1][1]
    if skipped:
        steps = ", ".join(str(s) for s, _ in skipped)
        reports[0].notes.append(f"step(s) {steps} left out: {str(skipped[0][1]).split(': ', 1)[1]}")
    for step, e in unreadable:
        reports[0].notes.append(f"step {step} left out, its checkpoint unreadable: {str(e).split(': ', 1)[-1]}")
    for step, why in damaged:
        reports[0].notes.append(f"step {step} measured from its weights, which pass their checksums; its training "
                                f"state does not ({why}): `probe check {run_dir}` says more")
    return reports


def _read_measurable(path, step: int, damaged: list):
    """:func:`read_source` of a run's checkpoint; one whose weights are intact but whose training state is damaged
    is read all the same, and (step, why) goes to ``damaged``."""
    try:
        return read_source(path)
    except CheckpointError as e:
        source = read_source(path, weights_only_intact=True)  # raises again when the weights are damaged too
        damaged.append((step, str(e).split(": ", 1)[-1]))
        return source


def analyze_run(run_dir, all_steps: bool = True, **kwargs) -> pd.DataFrame:
    """The tidy table (:data:`COLUMNS`) of a run folder: every checkpoint, or only the last with
    ``all_steps=False``; keyword arguments as :func:`analyze_steps` (e.g. ``data=False`` for weights only)."""
    if all_steps:
        return reports_frame(analyze_steps(run_dir, **kwargs))
    return analyze_checkpoint(run_dir, **kwargs).to_frame()
