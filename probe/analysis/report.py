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
from probe.metrics import first_layer_measures, input_pc_share, layer_measures, movement
from probe.metrics.nulls import (default_linear_init, init_seed_measures, lcn_measures, null_draws, permute_positions,
                                 phase_measures)
from probe.run.checkpoint import CheckpointError, list_checkpoints
from probe.run.loop import evaluate

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
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


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
        self._init: tuple | None = None
        self._init_seeds: dict = {}
        self._build = init_builder(source, task) if source is not None else None
        self._X = None  # inputs for input_pc_share, in the model's flat layout

    @classmethod
    def of(cls, source: Source, data: bool = True, n_data: int = 512, seed: int = 0) -> "Subject":
        if source.config is None:
            return cls(source.geometry, source=source, n_data=n_data, seed=seed)
        task, notes = None, []
        if data:
            try:
                task = load_task(source.config)
            except (ConfigError, OSError, ValueError) as e:  # e.g. a CIFAR folder that is not on this machine
                notes.append(f"task data not available ({str(e).splitlines()[0][:160]}): functional measures skipped")
        model = build_probe_model(source, task)
        return cls(source.geometry, model, task, source, n_data, seed, notes)

    def layers(self, source: Source) -> dict[str, np.ndarray]:
        """The checkpoint's layers; for a probe model this also loads the weights into ``self.model``."""
        return plain_layers(source.state_dict) if self.model is None else model_layers(self.model, source.state_dict)

    # one entry's measures, the same for a checkpoint and for its init
    def _values(self, W: np.ndarray, first: bool, W0: np.ndarray | None = None) -> dict[str, float]:
        if first:
            out = first_layer_measures(W, self.geometry, W0=W0)
            if self._inputs() is not None:
                out["input_pc_share"] = input_pc_share(W, self._inputs())
        else:
            out = {"movement": movement(W, W0)} if W0 is not None and W0.shape == W.shape else {}
        return {**out, **layer_measures(W)}

    def _inputs(self):
        if self._X is None and self.task is not None:
            x = self.task.x_train[: 4 * self.n_data]
            if self.task.vocab is not None and not x.is_floating_point():  # token ids: the one-hot layout
                x = torch.nn.functional.one_hot(x, self.geometry.channels).flatten(1)
            self._X = x.double().reshape(len(x), -1).numpy()
        return self._X

    def _gaussian(self, shape: tuple, first: bool) -> tuple[dict[str, float], np.ndarray]:
        """(measures of a seeded Gaussian matrix of this shape, the position permutation), as references() draws."""
        key = (shape, first)
        if key not in self._nulls:
            G, perm = null_draws(shape, self.geometry.n_positions, self.seed)
            self._nulls[key] = (self._values(G, first), perm)
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
            if 0 not in steps:
                self._init = (None,)
            else:
                src = read_source(steps[0])
                layers = self.layers(src)
                values = {n: self._values(W, i == 0) for i, (n, W) in enumerate(layers.items())}
                self._init = (layers, values, self._function())
        return None if self._init[0] is None else self._init

    def _function(self) -> dict[str, float]:
        """Data-dependent measures of ``self.model`` as it is now loaded (empty without data)."""
        if self.task is None:
            return {}
        ev = evaluate(self.model.eval(), self.task.x_test, self.task.y_test, self.task.loss)
        out = {"test_loss": ev["loss"], **({"test_acc": ev["acc"]} if "acc" in ev else {})}
        return {**out, **function_measures(self.model, self.task, n=self.n_data, seed=self.seed)}

    def report(self, source: Source, layer: str | None = None) -> Report:
        """Every measure of ``source`` beside its references; ``layer`` restricts the report to one layer."""
        init = self._init_state()  # first: it loads the step-0 weights into the model
        layers = self.layers(source)
        names = list(layers)
        if layer is not None and layer not in layers:
            raise ConfigError(f"--layer {layer}: no such layer in {source.path}; valid layers: {', '.join(names)}")
        rep = Report(str(source.path), source.step, self.geometry, {}, model=self.config and self.config.model,
                     task=self.config and self.config.task, notes=list(self.notes))
        for i, (name, W) in enumerate(layers.items()):
            if layer is not None and name != layer:
                continue
            first = i == 0
            W0 = init[0].get(name) if init else None
            rep.layers[name] = self._values(W, first, W0)
            rep.shapes[name] = tuple(W.shape)
            gauss, perm = self._gaussian(W.shape, first)
            rep.reference["gaussian"][name] = gauss
            if init and name in init[1]:
                rep.reference["init"][name] = init[1][name]
            if first:
                Wp = permute_positions(W, self.geometry, perm)
                rep.reference["permuted"][name] = first_layer_measures(Wp, self.geometry.without_perm())
                rep.reference["phase"][name] = phase_measures(W, self.geometry, self.seed)
                rep.reference["lcn"][name] = lcn_measures(W, self.geometry, self.seed)
                rep.reference["init_seeds"][name] = self._init_seed_values(W.shape)
                if self._build is None:
                    rep.notes.append("init_seeds: PyTorch's default Linear init U(-1/sqrt(n), 1/sqrt(n)) on other "
                                     "seeds (a plain state_dict does not say how it was initialized)")
                units = rep.layers[name].get("shift_match_units", W.shape[0])
                if units < W.shape[0]:
                    rep.notes.append(f"shift_match matched a seeded sample of {units:.0f} of {W.shape[0]} units")
        if layer is None or layer == names[0]:
            rep.function = self._function()  # the model holds this checkpoint's weights (self.layers loaded them)
            _split_random(rep.function, rep.reference["gaussian"])
            if init and init[2]:
                rep.reference["init"][FUNCTION] = {k: v for k, v in init[2].items() if not k.endswith("_random")}
        if init is None and self.config is not None:
            rep.notes.append("no step-0 checkpoint beside it: no init reference and no movement")
        return rep


def _split_random(function: dict, gaussian: dict) -> None:
    """Move ``X_random`` keys (random-weight values sequence_measures returns) to the gaussian reference of X."""
    for key in [k for k in function if k.endswith("_random") and k[: -len("_random")] in function]:
        gaussian.setdefault(FUNCTION, {})[key[: -len("_random")]] = function.pop(key)


# -- public entry points -----------------------------------------------------------------------------------------
def analyze_checkpoint(path, *, input_shape=None, periodic: bool = False, data: bool = True, layer: str | None = None,
                       n_data: int = 512, seed: int = 0) -> Report:
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

    Raises CheckpointError or ConfigError with a one-line message for anything the user can fix.
    """
    source = read_source(checkpoint_at(path), input_shape, periodic)
    return Subject.of(source, data, n_data, seed).report(source, layer)


def analyze_steps(run_dir, *, data: bool = True, layer: str | None = None, n_data: int = 512,
                  seed: int = 0) -> list[Report]:
    """One :class:`Report` per checkpoint of a run folder, by step (arguments as :func:`analyze_checkpoint`).
    A checkpoint file inside a run folder means that run. Model and task are built once, the step-0 measures
    (every step's ``init``) computed once, the Gaussian references once per layer shape."""
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
    # one checkpoint in memory at a time (with optimizer state a checkpoint is ~3x its weights)
    return [subject.report(first if i == 0 else read_source(p), layer) for i, (_, p) in enumerate(ckpts)]


def analyze_run(run_dir, all_steps: bool = True, **kwargs) -> pd.DataFrame:
    """The tidy table (:data:`COLUMNS`) of a run folder: every checkpoint, or only the last with
    ``all_steps=False``; keyword arguments as :func:`analyze_steps` (e.g. ``data=False`` for weights only)."""
    if all_steps:
        return reports_frame(analyze_steps(run_dir, **kwargs))
    return analyze_checkpoint(run_dir, **kwargs).to_frame()
