"""Models trained elsewhere: reading their weights (torch files, safetensors, ``save_pretrained`` folders, models
and state_dicts in memory) and deciding what their first layer is and what it sees (:class:`Layout`).

probe's first-layer measures read a dense matrix W (m units x n inputs) over an input grid (:class:`Geometry`).
An outside model's first weight is written out as one, by what it is:

- a matrix (``nn.Linear``, out x in): W itself, over the ``--input-shape`` grid;
- a matrix stored in x out (Hugging Face's GPT-2 ``Conv1D``: ``c_attn``, ``c_fc``, ``c_proj``, or any module of that
  class given in memory): transposed, here and for every other layer of that kind, so that rows are units;
- a convolution kernel (O, C, *k) with stride s and zero padding p: the dense (O * |out grid|, C * |S|) matrix the
  convolution computes on the input grid S (out grid ``(n + 2p - k) // s + 1`` per axis). Stride and padding come
  from the module when a model is given, from the checkpoint's config.json where it says (a ResNet's stem), from
  ``--stride``/``--padding`` otherwise; without any of these the kernel is read as stride 1, padding k // 2, and
  the report says so;
- a patch embedding (a convolution with kernel = stride = patch and no padding, as ViT and MLP-Mixer stems; keys
  named ``patch_embed*``/``patch_embeddings``/``stem.proj``, a config.json's ``patch_size``, or ``--stride`` equal
  to the kernel): every patch is multiplied by the same (O, C * p * p) matrix, so that matrix is the layer, measured
  over the geometry of one patch (C x p x p). Writing it out over the whole image would repeat it block-diagonally;
- a token embedding table (``nn.Embedding``, a GPT-2 ``wte``, keys named ``*embed_tokens*``, ``*word_embeddings*``,
  ...): a lookup of one row per token, not a layer over a grid. It is never read as an image: as the first weight
  it is refused, naming ``--first-layer``; chosen with ``--first-layer`` it is read as what it computes on one-hot
  tokens, the (D x V) matrix from V token channels to D units (its transpose).

``--first-layer KEY`` names the first layer (a state_dict key, with or without ``.weight``); the default is the
first tensor named ``*weight`` of two to four dimensions (a ViT's ``cls_token`` and position table come before its
patch embedding and are not layers).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.models.conv import local_dense, out_size
from probe.run.checkpoint import CheckpointError, load_checkpoint

#: the weight files a ``save_pretrained`` folder holds, in the order they are looked for
PRETRAINED_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                    "pytorch_model.bin.index.json")

# key patterns of the layouts probe knows by name
_CONV1D = re.compile(r"(^|\.)(c_attn|c_fc|c_proj|q_attn)\.weight$")  # Hugging Face GPT-2's Conv1D (in x out)
_EMBEDDING = re.compile(r"(^|\.)(wte|wpe|embed_tokens|embed_positions|word_embeddings|position_embeddings|"
                        r"token_type_embeddings|tok_embeddings|token_embedding|tok_emb|pos_emb|embedding|embeddings)"
                        r"\.weight$")
_PATCH = re.compile(r"(patch_embed|patch_embeddings|(^|\.)stem\.proj\.weight$)")
# config.json model_type values whose 2-D weights named like GPT-2's are Conv1D
_CONV1D_MODELS = ("gpt2", "openai-gpt", "imagegpt", "decision_transformer")


def is_safetensors(path: Path) -> bool:
    """A safetensors file: its name, or its head (8-byte little-endian header length, then a JSON object)."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] < 100_000_000


def is_pretrained_folder(path: Path) -> bool:
    """A folder written by ``save_pretrained``: one of :data:`PRETRAINED_FILES` in it (a config.json alone is not
    one: a probe run folder has a config.json too)."""
    return path.is_dir() and any((path / f).is_file() for f in PRETRAINED_FILES)


def read_safetensors(path: Path) -> dict:
    """A safetensors file's tensors, in the order of its header (the writer's order); CheckpointError otherwise."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(f"checkpoint {path}: a safetensors file; reading it needs the safetensors package "
                              "(pip install 'probe[hf]')") from None
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            order = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in order}
    except Exception as e:  # untrusted input: whatever fails is a bad file, in one line
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({detail})") from None


def read_pretrained(folder: Path) -> tuple[dict, dict]:
    """(state_dict, config) of a ``save_pretrained`` folder: its weights (one file or the shards its index names)
    and its config.json ({} without one)."""
    cfg_file = folder / "config.json"
    config = {}
    if cfg_file.is_file():
        try:
            config = json.loads(cfg_file.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"checkpoint {folder}: its config.json is not readable JSON ({e})") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"checkpoint {folder}: its config.json is not a JSON object")
    for name in PRETRAINED_FILES:
        f = folder / name
        if not f.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = list(dict.fromkeys(json.loads(f.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise CheckpointError(f"checkpoint {f}: not a weight index (a JSON object with a weight_map)") from None
            sd = {}
            for shard in shards:
                sd.update(read_weight_file(folder / shard))
            return sd, config
        return read_weight_file(f), config
    raise CheckpointError(f"checkpoint {folder}: a save_pretrained folder without weights (looked for "
                          f"{', '.join(PRETRAINED_FILES)})")


def read_weight_file(path: Path, weights_only_intact: bool = False):
    """A safetensors file's tensors, else whatever the safe torch loader reads (a probe checkpoint, a state_dict;
    ``weights_only_intact``: one whose training state fails its checksums but whose weights pass, as
    :func:`probe.run.checkpoint.load_checkpoint` allows)."""
    path = Path(path)
    if path.is_file() and is_safetensors(path):
        return read_safetensors(path)
    return load_checkpoint(path, weights_only_intact=weights_only_intact)


def read_weights(path, weights_only_intact: bool = False) -> tuple[object, dict]:
    """(loaded object, config.json or {}) of a torch file, a safetensors file or a ``save_pretrained`` folder."""
    path = Path(path)
    if is_pretrained_folder(path):
        return read_pretrained(path)
    obj = read_weight_file(path, weights_only_intact)
    return obj, {}



WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


def unwrap_state_dict(obj):
    """A checkpoint dict's state_dict: the object itself when it maps names to tensors, else the first entry under
    :data:`WRAPPER_KEYS` that does (``{"model": state_dict, "epoch": 3}``); otherwise ``obj`` unchanged."""
    if not isinstance(obj, Mapping) or all(torch.is_tensor(v) for v in obj.values()):
        return obj
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
            return inner
    return obj


# -- what the first layer is ------------------------------------------------------------------------------------
@dataclass
class Hints:
    """What a model object or a config.json says about its layers, beyond the tensors: each conv's stride and
    padding, which keys are stored in x out (Conv1D), which are embedding tables, which are patch embeddings."""

    conv: dict[str, tuple[int, int]] = field(default_factory=dict)  # weight key -> (stride, padding)
    transposed: set[str] = field(default_factory=set)
    embeddings: set[str] = field(default_factory=set)
    source: str = ""  # "the module", "config.json": named in notes
    input_shape: tuple | None = None  # an input shape the config gives (a ViT's image size)
    periodic: bool = False


def hints_from_config(config: dict, state_dict: dict) -> Hints:
    """What a Hugging Face config.json says: ViT-like ``patch_size`` (with ``num_channels`` and ``image_size``, the
    input shape), a ResNet's stem (``embedding_size`` channels, 7x7 stride 2 padding 3), GPT-2's Conv1D layout."""
    h = Hints(source="config.json" if config else "")
    if not config:
        return h
    kind = str(config.get("model_type", ""))
    first = first_weight_key(state_dict)
    if first is not None and state_dict[first].dim() > 2:
        k = state_dict[first].shape[-1]
        patch = config.get("patch_size")
        if isinstance(patch, (list, tuple)) and patch:
            patch = patch[0]
        if isinstance(patch, int) and patch == k:
            h.conv[first] = (patch, 0)
        elif kind == "resnet" or (kind in ("regnet", "bit") and k == 7):
            h.conv[first] = (2, k // 2)
    size, chans = config.get("image_size"), config.get("num_channels")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        size = tuple(size)
    elif isinstance(size, int):
        size = (size, size)
    if isinstance(chans, int) and isinstance(size, tuple):
        h.input_shape = (chans, *size)
    if kind in _CONV1D_MODELS:
        h.transposed = {k for k, v in state_dict.items() if _CONV1D.search(k) and torch.is_tensor(v) and v.dim() == 2}
    return h


def hints_from_module(model: torch.nn.Module) -> Hints:
    """What the modules of ``model`` say: each Conv's stride and padding (``padding="same"`` as k // 2, circular
    padding as a periodic grid), Hugging Face Conv1D modules (in x out), nn.Embedding tables."""
    h = Hints(source="the module")
    for name, m in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        w = getattr(m, "weight", None)
        if not torch.is_tensor(w):
            continue
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            stride = set(m.stride)
            k = m.kernel_size
            if m.padding == "same":
                pads = {kk // 2 for kk in k}
            elif m.padding == "valid":
                pads = {0}
            else:
                pads = set(m.padding)
            if len(stride) > 1 or len(pads) > 1 or set(m.dilation) != {1} or m.groups != 1:
                h.conv[key] = (-1, -1)  # refused if it is the first layer (_conv_layout names why)
            else:
                h.conv[key] = (stride.pop(), pads.pop())
            if m.padding_mode == "circular" and not h.conv.get(key, (0,))[0] < 0:
                h.periodic = True
        elif isinstance(m, torch.nn.Embedding):
            h.embeddings.add(key)
        elif type(m).__name__ == "Conv1D" and hasattr(m, "nf") and w.dim() == 2:  # transformers.pytorch_utils
            h.transposed.add(key)
    return h


@dataclass
class Layout:
    """An outside checkpoint's first layer: its state_dict key, its dense matrix, the geometry that matrix is
    measured over, the keys stored in x out (transposed for every layer), and notes saying what was read how."""

    key: str
    name: str  # the layer's name in the report
    dense: np.ndarray = field(repr=False)
    geometry: Geometry
    transposed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def layers(self, state_dict: dict) -> dict[str, np.ndarray]:
        """Every layer in network order, the first one first: the dense first layer, then the other 2-D floating
        tensors (in x out ones transposed), named without ``.weight``."""
        out = {self.name: self.dense}
        for k, v in state_dict.items():
            if k == self.key or not (torch.is_tensor(v) and v.dim() == 2 and v.is_floating_point()):
                continue
            t = v.detach().cpu().double()
            out.setdefault(_layer_name(k), (t.T if k in self.transposed else t).numpy())
        return out


def _layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def first_weight_key(state_dict: dict) -> str | None:
    """The default first layer: the first floating tensor of 2-4 dimensions named ``*weight``, else (a state_dict
    named otherwise) the first such tensor not named ``*bias``; None when there is none."""
    cands = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and 2 <= v.dim() <= 4
             and not k.endswith("bias")]
    named = [k for k in cands if k == "weight" or k.endswith(".weight")]
    return (named or cands or [None])[0]


def _key_of(state_dict: dict, given: str, where: str) -> str:
    for k in (given, f"{given}.weight"):
        if k in state_dict:
            v = state_dict[k]
            if not (torch.is_tensor(v) and v.is_floating_point() and 2 <= v.dim() <= 4):
                shape = "x".join(map(str, v.shape)) if torch.is_tensor(v) else type(v).__name__
                raise ConfigError(f"--first-layer {given}: {where} holds it as {shape}, not a weight matrix or conv "
                                  "kernel")
            return k
    cands = [_layer_name(k) for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()
             and 2 <= v.dim() <= 4]
    more = f" and {len(cands) - 8} more" if len(cands) > 8 else ""
    raise ConfigError(f"--first-layer {given}: no such tensor in {where}; weights there: "
                      f"{', '.join(cands[:8])}{more}")


def plan_first_layer(state_dict: dict, where: str, input_shape=None, periodic: bool = False,
                     first_layer: str | None = None, stride: int | None = None, padding: int | None = None,
                     hints: Hints | None = None) -> Layout:
    """The :class:`Layout` of an outside state_dict (module docstring); ``where`` names it in errors.

    Raises CheckpointError or ConfigError with one line naming the option that fixes it (``--input-shape``,
    ``--first-layer``, ``--stride``/``--padding``)."""
    hints = hints or Hints()
    if input_shape is None and hints.input_shape is not None:
        input_shape = hints.input_shape
    periodic = periodic or hints.periodic
    key = _key_of(state_dict, first_layer, where) if first_layer else first_weight_key(state_dict)
    if key is None:
        raise CheckpointError(f"{where}: no weight matrices or conv kernels in it")
    W = state_dict[key].detach().cpu().double()
    name = _layer_name(key)
    if stride is not None and stride < 1 or padding is not None and padding < 0:
        raise ConfigError("--stride must be at least 1 and --padding at least 0")
    shape_txt = ",".join(map(str, input_shape)) if input_shape is not None else None
    transposed = set(hints.transposed) | {k for k, v in state_dict.items() if _CONV1D.search(k) and
                                          torch.is_tensor(v) and v.dim() == 2 and _gpt2_like(state_dict)}
    if W.dim() == 2:
        if stride is not None or padding is not None:
            raise ConfigError(f"--stride/--padding: the first layer {name} of {where} is a matrix, not a convolution")
        embedding = key in hints.embeddings or (not hints.source == "the module" and bool(_EMBEDDING.search(key)))
        notes = []
        if embedding:
            if not first_layer:
                raise CheckpointError(f"{where}: its first weight {name} ({W.shape[0]} x {W.shape[1]}) is a token "
                                      "embedding table, a lookup, not a layer over an input grid; probe does not read "
                                      "it as an image: name the first layer with --first-layer KEY (with "
                                      "--input-shape its inputs), or this table with --first-layer " + name)
            W = W.T
            notes.append(f"{name}: a token embedding table read as the layer it computes on one-hot tokens, "
                         f"{W.shape[0]} units x {W.shape[1]} token channels (its transpose)")
        elif key in transposed:
            W = W.T
            said = hints.source if key in hints.transposed else "GPT-2's key names"
            notes.append(f"{name} and the other Conv1D layers (so says {said}) are stored in x out: read "
                         "transposed, rows are units")
        if input_shape is None:
            raise CheckpointError(f"{where}: its first layer {name} takes {W.shape[1]} inputs; give their grid "
                                  "with --input-shape C,L or C,H,W (input_shape= in Python)")
        geo = Geometry.from_shape(input_shape, periodic)
        if W.shape[1] != geo.n_inputs:
            raise CheckpointError(f"{where}: its first layer {name} takes {W.shape[1]} inputs but --input-shape "
                                  f"{shape_txt} gives {geo.n_inputs} (choose another first layer with --first-layer)")
        return Layout(key, name, W.numpy(), geo, transposed, notes)
    return _conv_layout(key, name, W, where, input_shape, periodic, stride, padding, hints, transposed)


def _gpt2_like(state_dict: dict) -> bool:
    """A state_dict with GPT-2's own key names (``wte`` beside ``attn.c_attn``): its c_* matrices are Conv1D."""
    keys = list(state_dict)
    return any(k.endswith("wte.weight") for k in keys) and any(".attn.c_attn." in k for k in keys)


def _conv_layout(key, name, W, where, input_shape, periodic, stride, padding, hints, transposed) -> Layout:
    O, C, ks = W.shape[0], W.shape[1], tuple(W.shape[2:])
    kernel = "x".join(map(str, W.shape))
    known = hints.conv.get(key)
    if known == (-1, -1) and stride is None:
        raise ConfigError(f"{where}: its first layer {name} is a convolution with per-axis strides or paddings, "
                          "dilation or groups; give one --stride and --padding to read it")
    said = None
    if stride is not None or padding is not None:
        said = "--stride/--padding"
    elif known is not None:
        said = hints.source
    patch_name = bool(_PATCH.search(key)) and len(set(ks)) == 1
    if stride is None:
        stride = known[0] if known else (ks[0] if patch_name and padding in (None, 0) else 1)
    if padding is None:
        padding = known[1] if known and said == hints.source else (0 if stride == ks[0] and len(set(ks)) == 1
                                                                   else ks[-1] // 2)
    if said is None and patch_name:
        said = f"its key name ({key}: a patch embedding)"
    notes = []
    if len(set(ks)) == 1 and stride == ks[0] and padding == 0:  # kernel = stride: a patch embedding
        geo = Geometry(C, ks, periodic=False)
        if input_shape is not None and tuple(input_shape)[0] != C:
            raise CheckpointError(f"{where}: its first layer {name} (a patch embedding {kernel}) reads {C} "
                                  f"channel(s) but --input-shape gives {input_shape[0]}")
        notes.append(f"{name}: a patch embedding (kernel = stride = {ks[0]}, from {said}): every patch meets the same "
                     f"{O} x {C * math.prod(ks)} matrix, measured over one patch's {geo.describe()} pixels")
        return Layout(key, name + ".patch", W.reshape(O, -1).numpy(), geo, transposed, notes)
    if input_shape is None:
        raise CheckpointError(f"{where}: its first layer {name} is a convolution kernel {kernel}; give the input "
                              "grid with --input-shape C,L or C,H,W (and --stride/--padding, or kernel = stride "
                              "for a patch embedding)")
    geo = Geometry.from_shape(input_shape, periodic)
    if W.dim() - 2 != geo.ndim or C != geo.channels:
        raise CheckpointError(f"{where}: its first layer {name} is a {W.dim() - 2}-D convolution kernel {kernel} "
                              f"(out x in x kernel) that reads {C} input channel(s), but --input-shape "
                              f"{','.join(map(str, input_shape))} gives {geo.channels} on a {geo.ndim}-D grid")
    outs = [out_size(n, k, stride, padding) for n, k in zip(geo.spatial, ks)]
    if min(outs) < 1:
        raise CheckpointError(f"{where}: its first layer {name} ({kernel}, stride {stride}, padding {padding}) has "
                              f"no output on the {geo.describe()} grid")
    dense = conv_dense(W, geo, stride, padding)
    if said is None:
        notes.append(f"{name}.dense: the first layer's convolution kernel written out densely, read as stride 1 with "
                     "zero padding k // 2 (a state_dict does not store stride or padding: give --stride/--padding)")
    else:
        notes.append(f"{name}.dense: the first layer's convolution written out densely with stride {stride} and "
                     f"zero padding {padding} (from {said}), {'x'.join(map(str, outs))} output positions")
    return Layout(key, name + ".dense", dense, geo, transposed, notes)


def conv_dense(kernel: torch.Tensor, geometry: Geometry, stride: int = 1, padding: int | None = None) -> np.ndarray:
    """A conv kernel (O, C, *k) as the dense (O * |out|, C * |S|) matrix it computes on the input grid with this
    stride and zero padding (default k // 2), circular on a periodic grid: unit o * |out| + p holds kernel o at
    output position p."""
    O = kernel.shape[0]
    ks = kernel.shape[2:]
    pad = ks[-1] // 2 if padding is None else padding
    P = math.prod(out_size(n, k, stride, pad) for n, k in zip(geometry.spatial, ks))
    w = kernel.detach().double().cpu()[:, None].expand(O, P, *kernel.shape[1:])
    return local_dense(w, geometry.spatial, stride, pad, geometry.periodic).numpy()


# -- models and state_dicts in memory ----------------------------------------------------------------------------
def probe_model_layout(model: torch.nn.Module, state_dict: dict, where: str, input_shape=None,
                       periodic: bool = False) -> Layout:
    """The Layout of a probe model object (one with ``first_layer_dense()``: an MLP, CNN, LCN, ... built with
    :func:`probe.build_model`): its own dense first layer, over its ``geometry`` when it keeps one, else over
    ``input_shape``; named as :func:`probe.analysis.load.model_layers` names it."""
    with torch.no_grad():
        dense = model.first_layer_dense().detach().cpu().double()
    geo = getattr(model, "geometry", None)
    if not isinstance(geo, Geometry):
        if input_shape is None:
            raise CheckpointError(f"{where}: its first layer takes {dense.shape[1]} inputs; give their grid with "
                                  "input_shape=(C, L) or (C, H, W)")
        geo = Geometry.from_shape(input_shape, periodic)
    if dense.shape[1] != geo.n_inputs:
        raise CheckpointError(f"{where}: its first layer takes {dense.shape[1]} inputs but input_shape gives "
                              f"{geo.n_inputs}")
    key = next(k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and v.dim() >= 2)
    W = state_dict[key]
    name = _layer_name(key) if W.dim() == 2 and torch.equal(W.double(), dense) else _layer_name(key) + ".dense"
    return Layout(key, name, dense.numpy(), geo, set(), ["first layer: the model's own first_layer_dense()"])


def in_memory(obj) -> tuple[dict, Hints, str]:
    """(state_dict, hints, label) of an ``nn.Module`` or a state_dict (a mapping of names to tensors, possibly under
    one of the usual wrapper keys)."""
    if isinstance(obj, torch.nn.Module):
        sd = {k: v.detach().cpu() for k, v in obj.state_dict().items() if torch.is_tensor(v)}
        return sd, hints_from_module(obj), f"<{type(obj).__name__} in memory>"
    if isinstance(obj, Mapping):
        sd = unwrap_state_dict(obj)
        if isinstance(sd, Mapping) and sd and all(torch.is_tensor(v) for v in sd.values()):
            return {k: v.detach().cpu() for k, v in sd.items()}, Hints(), "<state_dict in memory>"
        raise ConfigError("analyze: the mapping is not a state_dict of tensors (nor holds one under 'state_dict', "
                          "'model', ...)")
    raise ConfigError(f"analyze: takes a path, an nn.Module or a state_dict, got {type(obj).__name__}")
