"""Reading a run back: the one loader from a checkpoint file, a run folder or a plain state_dict to its config,
task, model and layers (:func:`load_run`), used by `probe analyze`, the figures, the sweeps' final measures, the
demo and the scripts.

Layers are the 2-D weight tensors of the state_dict, in state_dict order, named by their key without ``.weight``.
For probe models the first layer is ``model.first_layer_dense()``: when that is not itself a 2-D tensor of the
state_dict (a CNN's or LCN's kernel, a token table) it is named ``<source key>.dense`` (``layers.0.dense``) and
takes its source's place, so an MLP and its controls are measured by the same code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from probe.run.checkpoint import (CheckpointError, is_probe_checkpoint, list_checkpoints, load_checkpoint,
                                  state_dict_mismatch)
from probe.config import ConfigError, RunConfig
from probe.geometry import Geometry
from probe.models import build_model
from probe.models.conv import local_dense
from probe.run.tracking import first_layer_at_init
from probe.run.folder import read_json_file
from probe.tasks import make_task, task_shells
from probe.analysis.outside import (WRAPPER_KEYS, hints_from_config, is_pretrained_folder, plan_first_layer,  # noqa: F401
                                    read_weights, unwrap_state_dict)


# -- what a path holds ----------------------------------------------------------------------------------------
def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"C,L"`` or ``"C,H,W"`` -> a tuple of positive ints; ConfigError otherwise.

    Two numbers A,B with A > 1 could be A channels over B positions or one channel on an A x B grid: refused, naming
    both readings and how to write each (``1,A,B`` for the grid; ``A,B,1``, a grid one pixel wide, for the signal,
    which is read as C = A channels over L = B positions)."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ConfigError(f"--input-shape must be C,L or C,H,W (positive integers), got {text!r}")
    if len(shape) == 2 and shape[0] > 1:
        a, b = shape
        raise ConfigError(f"--input-shape {text} is ambiguous: {a} channels x {b} positions (write {a},{b},1) or one "
                          f"channel on an {a} x {b} grid (write 1,{a},{b})")
    if len(shape) == 3 and shape[2] == 1:  # C,L,1: a 1-D signal written unambiguously
        shape = shape[:2]
    return shape


@dataclass
class Source:
    """A loaded checkpoint file: its state_dict, geometry and, for probe checkpoints, config and run folder; for an
    outside checkpoint its :class:`~probe.analysis.outside.Layout` (first layer, what it sees) and the options that
    chose it (``first_layer``, ``stride``, ``padding``), with which its ``--init`` weights are read too."""

    path: Path
    state_dict: dict
    geometry: Geometry
    step: int | None = None
    config: RunConfig | None = None
    run_dir: Path | None = None
    layout: object | None = None
    options: dict = field(default_factory=dict)


def read_source(path, input_shape=None, periodic: bool = False, weights_only_intact: bool = False, *,
                first_layer: str | None = None,
                stride: int | None = None, padding: int | None = None) -> Source:
    """Load a probe checkpoint, or an outside one (a torch state_dict, a safetensors file, a ``save_pretrained``
    folder), which needs ``input_shape`` as ``--input-shape`` gives unless its config.json or its patch embedding
    says it; ``first_layer``, ``stride`` and ``padding`` as :func:`probe.analysis.outside.plan_first_layer` reads
    them.

    Raises CheckpointError (unreadable file, not a state_dict, first layer not fitting the shape) or
    ConfigError (a bad shape), each with a one-line message naming the file.
    """
    path = Path(path)
    obj, hf_config = read_weights(path, weights_only_intact)  # (a damaged training state: still measured)
    options = {"first_layer": first_layer, "stride": stride, "padding": padding}
    if is_probe_checkpoint(obj):
        if any(v is not None for v in options.values()):
            given = ", ".join(f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None)
            raise ConfigError(f"{given}: checkpoint {path} is a probe checkpoint, whose model says what its first "
                              "layer is; drop it")
        try:
            cfg = RunConfig.from_dict(obj["config"], source=f"checkpoint {path}")
            geo = Geometry.from_dict(obj["geometry"])
            sd, step = dict(obj["state_dict"]), int(obj["step"])
            if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
                raise ValueError("state_dict is not a dict of named tensors")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {path}: a probe checkpoint with missing or bad fields "
                                  f"({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__})"
                                  ) from None
        if input_shape is not None and tuple(input_shape) != (geo.channels, *geo.spatial):
            raise ConfigError(f"--input-shape {','.join(map(str, input_shape))}: checkpoint {path} stores its "
                              f"own geometry {geo.describe()}; drop --input-shape")
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return Source(path, sd, geo, step, cfg, run_dir)
    obj = unwrap_state_dict(obj)
    if isinstance(obj, Mapping) and not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"checkpoint {path}: its keys are not all parameter names (a key "
                              f"{next(k for k in obj if not isinstance(k, str))!r}); "
                              "a state_dict maps names to tensors")
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path}: neither a probe checkpoint nor a state_dict of tensors (nor one "
                              f"under {', '.join(repr(k) for k in WRAPPER_KEYS)})")
    sd = dict(obj)
    return outside_source(sd, path, f"checkpoint {path}", input_shape, periodic,
                          hints_from_config(hf_config, sd), **options)


def outside_source(state_dict: dict, path, where: str, input_shape=None, periodic: bool = False, hints=None,
                   **options) -> Source:
    """The :class:`Source` of an outside state_dict (read from a file or given in memory): its first layer planned
    (:func:`probe.analysis.outside.plan_first_layer`), its geometry the one that layer is measured over."""
    layout = plan_first_layer(state_dict, where, input_shape, periodic, hints=hints, **options)
    return Source(Path(path), state_dict, layout.geometry, layout=layout, options=dict(options))


# the keys under which training scripts (Lightning, most hand-written loops) wrap a model's state_dict
def first_weight(state_dict: dict):
    """(name, tensor) of the first weight of a plain state_dict: a matrix, or a conv kernel (out, in, *k) of 3 or
    4 dimensions; None when there is none."""
    for k, v in state_dict.items():
        if torch.is_tensor(v) and v.is_floating_point() and 2 <= v.dim() <= 4 and not k.endswith("bias"):
            return k, v
    return None


def conv_dense(kernel: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """A conv kernel (O, C, *k) as the dense (O*|S|, C*|S|) matrix it computes on the input grid, read as stride 1
    with zero padding k // 2 ("same": one output unit per kernel and position, padding clipping the fields at the
    border), circular on a periodic grid. probe cannot read the stride and padding from a state_dict: these are
    the assumptions `probe analyze` states in its notes."""
    O, C = kernel.shape[:2]
    P = geometry.n_positions
    w = kernel.detach().double().cpu()[:, None].expand(O, P, *kernel.shape[1:])
    M = local_dense(w, geometry.spatial, 1, kernel.shape[-1] // 2, geometry.periodic)
    return M.numpy()


def _layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def plain_layers(state_dict: dict, geometry: Geometry | None = None, layout=None) -> dict[str, np.ndarray]:
    """The 2-D floating-point tensors of a state_dict, in its order, as float64 arrays named without .weight.

    With an outside checkpoint's ``layout`` (:class:`probe.analysis.outside.Layout`), its layers, the planned first
    layer first; else with the input ``geometry``, a first weight that is a conv kernel is written out densely
    (:func:`conv_dense`) as ``<name>.dense`` and comes first."""
    if layout is not None:
        return layout.layers(state_dict)
    layers = {_layer_name(k): _numpy(v) for k, v in state_dict.items()
              if torch.is_tensor(v) and v.dim() == 2 and v.is_floating_point()}
    first = first_weight(state_dict) if geometry is not None else None
    if first is not None and first[1].dim() > 2:
        layers = {_layer_name(first[0]) + ".dense": conv_dense(first[1], geometry), **layers}
    return layers


def model_layers(model: torch.nn.Module, state_dict: dict) -> dict[str, np.ndarray]:
    """Load ``state_dict`` into ``model`` and return its layers with the dense first layer first (module docstring);
    CheckpointError naming the keys when the weights do not fit the model (another run's checkpoint)."""
    bad = state_dict_mismatch(model, state_dict)
    if bad:
        raise CheckpointError(f"its weights do not fit this model ({bad})")
    model.load_state_dict(state_dict)
    dense = _numpy(model.first_layer_dense())
    source = next(k for k, v in state_dict.items() if torch.is_tensor(v) and v.dim() >= 2)
    layers = plain_layers(state_dict)
    name = _layer_name(source)
    if not (name in layers and layers[name].shape == dense.shape and np.array_equal(layers[name], dense)):
        layers.pop(name, None)  # a 2-D source (a token table) is replaced by its dense form
        name += ".dense"
    return {name: dense, **{k: v for k, v in layers.items() if k != name}}


# -- rebuilding a probe model -----------------------------------------------------------------------------------
def _task_shells(source: Source):
    """:func:`probe.tasks.task_shells` for a source: with its run's task.json when there is one."""
    meta_file = source.run_dir / "task.json" if source.run_dir else None
    meta = read_json_file(meta_file, "the run's task") if meta_file and meta_file.is_file() else {}
    return task_shells(source.geometry, source.state_dict, meta)


def build_probe_model(source: Source, task=None) -> torch.nn.Module:
    """The model of a probe checkpoint, rebuilt from its config (on ``task`` if given, else on a task shell) with
    the checkpoint's weights loaded; CheckpointError if they do not fit."""
    cfg = source.config
    last, model = None, None
    with torch.random.fork_rng(devices=[]):  # building draws an init we overwrite; leave the caller's RNG alone
        for shell in [task] if task is not None else _task_shells(source):
            try:
                model = None
                model = build_model(cfg.model, shell, cfg.width, cfg.depth, cfg.param, cfg.model_opts)
                bad = state_dict_mismatch(model, source.state_dict)
                if bad:
                    raise ValueError(bad)
                model.load_state_dict(source.state_dict)
                return model.eval()
            except (RuntimeError, ValueError, KeyError, TypeError) as e:  # a shell that does not fit: try the next
                last = e
    detail = (model is not None and state_dict_mismatch(model, source.state_dict)) or \
        (str(last).strip().splitlines()[0][:160] if last else "no model")
    raise CheckpointError(f"checkpoint {source.path}: its weights do not fit model {cfg.model} rebuilt from its "
                          f"config ({detail})")


def init_builder(source: Source, task=None):
    """seed -> the dense first layer (numpy) of the source's model as a run of that seed starts: the model's own
    initializer, for the ``init_seeds`` reference (:mod:`probe.metrics.nulls`). Built on ``task``, or on the first
    task shell whose model fits the checkpoint's weights; None for a plain state_dict or when none fits."""
    cfg = source.config
    if cfg is None:
        return None
    want = {k: tuple(v.shape) for k, v in source.state_dict.items() if torch.is_tensor(v)}
    for shell in [task] if task is not None else _task_shells(source):
        try:
            with torch.random.fork_rng(devices=[]):
                model = build_model(cfg.model, shell, cfg.width, cfg.depth, cfg.param, cfg.model_opts)
        except (RuntimeError, ValueError, ConfigError):
            continue
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == want:
            return lambda seed, shell=shell: first_layer_at_init(cfg, shell, seed)
    return None


def load_task(cfg: RunConfig):
    """The run's task rebuilt from its config, seeded as training seeded it, without touching global RNGs.

    Cached (the checkpoints of a run, and the runs of one task and seed, share it): treat it as read-only."""
    key = {k: v for k, v in cfg.to_dict().items() if k in ("task", "task_opts", "seed")}
    return _cached_task(json.dumps(key, sort_keys=True))


@lru_cache(maxsize=8)
def _cached_task(key: str):
    cfg = json.loads(key)
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            np.random.seed(cfg["seed"] % 2**32)
            return make_task(cfg["task"], cfg["task_opts"], seed=cfg["seed"])
    finally:
        np.random.set_state(state)


# -- the one loader -----------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """What :func:`load_run` read: the checkpoint (``source``: state_dict, geometry, step, config, run folder), the
    rebuilt model in eval mode on the CPU (None for a plain state_dict), the task (None without ``data`` or for a
    plain state_dict) and the layers in network order with the dense first layer first."""

    source: Source
    model: torch.nn.Module | None
    task: object | None
    layers: dict[str, np.ndarray] = field(repr=False)

    @property
    def config(self) -> RunConfig | None:
        return self.source.config

    @property
    def geometry(self) -> Geometry:
        return self.source.geometry

    @property
    def step(self) -> int | None:
        return self.source.step

    @property
    def first_layer(self) -> np.ndarray:
        return next(iter(self.layers.values()))


def load_run(path, step: int | None = None, *, data: bool = True, input_shape=None,
             periodic: bool = False, **options) -> Loaded:
    """Load a run folder (its checkpoint at ``step``, default the last), a checkpoint file, or a plain state_dict
    (which needs ``input_shape``, "C,L" or "C,H,W" as a tuple).

    With ``data``, a probe run's task is rebuilt from its config (as training seeded it) and the model is built on
    it; without, the model is built on a data-free stand-in. ``options``: an outside checkpoint's ``first_layer``,
    ``stride``, ``padding`` (:func:`read_source`). Raises CheckpointError or ConfigError with one line.
    """
    source = read_source(checkpoint_at(path, step), input_shape, periodic, **options)
    if source.config is None:
        return Loaded(source, None, None, plain_layers(source.state_dict, source.geometry, source.layout))
    task = load_task(source.config) if data else None
    model = build_probe_model(source, task)
    return Loaded(source, model, task, model_layers(model, source.state_dict))


def first_layer(path, step: int | None = None) -> tuple[np.ndarray, Geometry]:
    """The dense first layer (m, n) and the input geometry of a checkpoint or run folder (at ``step``): a CNN's
    or LCN's first layer written out densely, a shuffled task's in the order the model saw its inputs."""
    loaded = load_run(path, step, data=False)
    return loaded.first_layer, loaded.geometry


def load_layers(path, input_shape=None, periodic: bool = False, **options) -> tuple[dict[str, np.ndarray], Geometry]:
    """(layers, geometry) of any checkpoint ``analyze`` takes: layers in network order, the dense first layer
    first. A run folder means its last checkpoint."""
    loaded = load_run(path, data=False, input_shape=input_shape, periodic=periodic, **options)
    return loaded.layers, loaded.geometry


def checkpoint_at(path, step: int | None = None) -> Path:
    """A run folder -> its checkpoint at ``step`` (default: the last); a file -> itself (``step`` must be None)."""
    path = Path(path)
    if is_pretrained_folder(path) and not (path / "checkpoints").is_dir():  # a save_pretrained folder
        if step is not None:
            raise ConfigError(f"{path}: a save_pretrained folder holds one set of weights; it has no steps")
        return path
    if not path.is_dir():
        if step is not None:
            raise ConfigError(f"{path}: a checkpoint file has one step; give its run folder to choose step {step}")
        return path
    ckpts = list_checkpoints(path)
    if not ckpts:
        raise CheckpointError(f"run folder {path}: no checkpoints (checkpoints/step_<N>.pt), nor the config.json or "
                              "model.safetensors of a save_pretrained folder")
    if step is None:
        return ckpts[-1][1]
    found = dict(ckpts)
    if step not in found:
        raise ConfigError(f"{path}: no checkpoint at step {step} (has {', '.join(map(str, sorted(found)))})")
    return found[step]


def resolve_checkpoint(path) -> Path:
    """A run folder -> its last checkpoint; a file -> itself."""
    return checkpoint_at(path)


def cnn_filters(run_dir, step: int | None = None) -> np.ndarray:
    """A trained CNN run's first convolution's filters (K, C, *k), from its checkpoint at ``step`` (default the
    last): the bank :func:`probe.metrics.tiling.filter_match` compares an MLP's fields with."""
    have = list_checkpoints(run_dir)
    if not have:
        raise ValueError(f"{run_dir}: no checkpoints")
    path = dict(have)[step] if step is not None else have[-1][1]
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    conv = [k for k, v in state.items() if str(k).endswith("weight") and getattr(v, "ndim", 0) >= 3]
    if not conv:
        raise ValueError(f"{run_dir}: no convolution weights in its checkpoint (not a CNN run)")
    return state[conv[0]].detach().cpu().double().numpy()
