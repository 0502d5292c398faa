"""Checkpoints: one dict saved with ``torch.save``, always read with ``weights_only=True`` (no code runs).

Contents: ``format`` and ``version``, ``config`` (the run's RunConfig as a dict), ``geometry``, ``task_info``,
``state_dict``, ``step``, and for resuming ``optimizer``, ``scheduler`` and ``rng`` (torch, numpy, python and,
on cuda, the device generators). Files are written atomically: a temporary file in the same folder, flushed to
disk, then renamed over the final name, so a crash or kill never leaves a truncated file under that name.

A checkpoint also holds ``checksums`` (docs/design.md §5.2): a CRC-32 of every tensor in it, by its path
(``state_dict/layers.0.weight``, ``optimizer/state/0/exp_avg``), and one of everything else (config, step,
numbers), verified by :func:`load_checkpoint`, so a flipped bit is reported by name instead of being read as a
weight of 5.7e37. The key was added without changing the format's version: checkpoints written before it (no
``checksums``) still load, unverified, but only when they hold nothing but the keys written then
(:data:`UNVERIFIED_KEYS`): a changed byte in the name ``checksums`` leaves a key probe never writes, and the file
is refused rather than read as an old, unverified one.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

FORMAT = "probe-checkpoint"
VERSION = 1  # checksums are an added key: checkpoints without one (written before them) load, unverified
TEMP_MARK = ".tmp-"
CHECKSUMS = "checksums"
# the keys of a checkpoint written before checksums existed: only such a one loads unverified
UNVERIFIED_KEYS = ("format", "version", "config", "geometry", "task_info", "model", "state_dict", "step", "optimizer",
                   "scheduler", "rng", "loss_accum")


class CheckpointError(ValueError):
    """A file that cannot be read as a checkpoint; the message names the file and the problem."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``. A ``path``
    that is a device, a named pipe or a socket is refused (OSError, EINVAL) before anything is written.
    The temporary name (``.NAME.tmp-PID``) is hidden and never matches ``step_*.pt``; a kill -9 can leave one
    behind, which :func:`remove_temp_files` clears."""
    path = Path(path)
    special = special_file(path) if os.path.lexists(path) and not path.is_dir() else None  # (a folder: os.replace
    # refuses it itself)
    if special:  # renaming over it would replace a device node or a pipe with a regular file
        raise OSError(errno.EINVAL, f"it is {special}, not a regular file; refused (give a file name)", str(path))
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems cannot fsync a folder
        pass


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in a run folder and its checkpoints."""
    gone = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for p in folder.glob(f".*{TEMP_MARK}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def check_rng_state(state) -> None:
    """Raise ValueError (naming the part) unless ``state`` is what :func:`rng_state` writes: torch's generator
    state as a uint8 tensor of its own length, numpy's MT19937 key of 624 words with a position in [0, 624],
    Python's version-3 state of 625 words; nothing is set."""
    if not isinstance(state, dict):
        raise ValueError("rng is not a dict")
    t = state.get("torch")
    n_torch = torch.get_rng_state().numel()
    if not (torch.is_tensor(t) and t.dtype == torch.uint8 and t.dim() == 1 and t.numel() == n_torch):
        raise ValueError(f"rng.torch is not a uint8 tensor of {n_torch} bytes")
    n = state.get("numpy")
    keys = n.get("keys") if isinstance(n, dict) else None
    if not (torch.is_tensor(keys) and keys.dim() == 1 and keys.numel() == 624 and not keys.is_floating_point()):
        raise ValueError("rng.numpy.keys is not 624 integers (numpy's MT19937 key)")
    if int(keys.min()) < 0 or int(keys.max()) >= 2**32:
        raise ValueError("rng.numpy.keys holds values outside [0, 2^32)")
    if not (_is_int(n.get("pos")) and 0 <= n["pos"] <= 624 and _is_int(n.get("has_gauss"))
            and n["has_gauss"] in (0, 1) and isinstance(n.get("cached"), (int, float))):
        raise ValueError("rng.numpy: pos, has_gauss or cached out of range")
    py = state.get("python")
    if not (isinstance(py, (list, tuple)) and len(py) == 3 and py[0] == 3 and isinstance(py[1], (list, tuple))
            and len(py[1]) == 625 and all(_is_int(v) and 0 <= v < 2**32 for v in py[1])
            and (py[2] is None or isinstance(py[2], float))):
        raise ValueError("rng.python is not Python's version-3 random state")
    if "cuda" in state and not (isinstance(state["cuda"], (list, tuple))
                                and all(torch.is_tensor(v) for v in state["cuda"])):
        raise ValueError("rng.cuda is not a list of generator states")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def set_rng_state(state: dict) -> None:
    """Set the generators from :func:`rng_state`'s dict (checked first: a bad state changes nothing)."""
    check_rng_state(state)
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **payload) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    payload[CHECKSUMS] = checksums(payload)
    atomic_write(Path(path), lambda f: torch.save(payload, f))


# -- checksums ------------------------------------------------------------------------------------------------
def tensors_in(obj, prefix: str = ""):
    """(path, tensor) of every tensor in a nested dict/list, paths joined with "/" (``state_dict/layers.0.weight``)."""
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors_in(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors_in(v, f"{prefix}/{i}" if prefix else str(i))


def tensor_crc(t: torch.Tensor) -> str:
    """CRC-32 of a tensor's dtype, shape and bytes, as 8 hex digits."""
    data = t.detach().cpu().contiguous().reshape(-1)
    crc = zlib.crc32(f"{t.dtype}{tuple(t.shape)}".encode())
    if data.numel():
        crc = zlib.crc32(data.view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def _skeleton(obj):
    """Everything but the tensors, in a canonical form (keys and scalars by repr, so 1, 1.0, True and "1" differ)."""
    if torch.is_tensor(obj):
        return "<tensor>"
    if isinstance(obj, dict):
        return {repr(k): _skeleton(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_skeleton(v) for v in obj]
    return repr(obj)


def checksums(payload: dict) -> dict:
    """``{"algorithm": "crc32", "tensors": {path: crc}, "fields": crc}`` of a checkpoint dict (its own checksums
    left out): one CRC per tensor, so a damaged one is named, and one of all the rest."""
    body = {k: v for k, v in payload.items() if k != CHECKSUMS}
    fields = json.dumps(_skeleton(body), sort_keys=True).encode()
    return {"algorithm": "crc32", "tensors": {name: tensor_crc(t) for name, t in tensors_in(body)},
            "fields": f"{zlib.crc32(fields):08x}"}


def verify_checksums(obj: dict) -> str | None:
    """Why a probe checkpoint fails its checksums (the first tensor or part that does), or None when it passes.
    One written before checksums existed has none and passes."""
    stored = obj.get(CHECKSUMS)
    if stored is None:
        # only a checkpoint that has nothing but the keys written before checksums existed passes unverified: one
        # whose key ``checksums`` was damaged (a byte changed in its name) has a key probe never writes instead
        unknown = [k for k in obj if k not in UNVERIFIED_KEYS]
        if unknown:
            return (f"it has no checksums but a key probe never writes ({str(unknown[0])[:40]!r}): a checkpoint "
                    "written with checksums whose key is damaged or edited; refused")
        if obj.get("version") != 1:
            return f"it has no checksums and version {obj.get('version')!r}: damaged or edited; refused"
        return None
    if not (isinstance(stored, dict) and stored.get("algorithm") == "crc32"
            and isinstance(stored.get("tensors"), dict)):
        return "its checksums are unreadable (damaged or edited)"
    now = checksums(obj)
    for name, crc in now["tensors"].items():
        if stored["tensors"].get(name) != crc:
            if name not in stored["tensors"]:
                return f"tensor {name} has no checksum (added after it was written)"
            return (f"tensor {name} fails its checksum (stored {stored['tensors'][name]}, now {crc}): the file is "
                    "corrupted")
    gone = [n for n in stored["tensors"] if n not in now["tensors"]]
    if gone:
        return f"tensor {gone[0]} is missing (it has a checksum): the file is corrupted"
    if stored.get("fields") != now["fields"]:
        return "its config, step or other non-tensor fields fail their checksum: the file is corrupted"
    return None


MAX_ENTRIES = 1_000_000  # containers, tensors and values a checkpoint holds, counted as a tree (shared ones each time)
MAX_NESTING = 100  # levels of nested containers; probe writes five at most (optimizer/state/0/exp_avg)


def nested_size(obj) -> tuple[int, int]:
    """(entries, depth) of a nested dict/list/tuple as the recursive walks here see it: a container or value
    reached along k paths counts k times. Each object is visited once (sizes memoized by id), so a small file of
    lists that share references (a list holding the same list twice, 60 levels deep: 2^60 paths) is measured in
    microseconds instead of walked for ever. A container that holds itself raises ValueError."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    keep = []  # the objects memoized by id, kept alive so their ids are not reused during the walk
    stack = [(obj, False)]
    open_ = set()
    while stack:
        x, done = stack.pop()
        if not isinstance(x, (dict, list, tuple)):
            continue
        i = id(x)
        children = list(x.values()) if isinstance(x, dict) else x
        if done:
            open_.discard(i)
            inner = [c for c in children if isinstance(c, (dict, list, tuple))]
            size[i] = 1 + sum(size[id(c)] for c in inner) + (len(children) - len(inner))
            depth[i] = 1 + max((depth[id(c)] for c in inner), default=0)
            continue
        if i in size:
            continue
        if i in open_:
            raise ValueError("a container holds itself")
        open_.add(i)
        keep.append(x)
        stack.append((x, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list, tuple)) and id(c) not in size)
    if not isinstance(obj, (dict, list, tuple)):
        return 1, 0
    return size[id(obj)], depth[id(obj)]


def _check_structure(p: Path, obj) -> None:
    """Refuse nesting that the walks over a checkpoint (checksums, tensors, reports) cannot finish: a container
    holding itself, more than :data:`MAX_NESTING` levels, or more than :data:`MAX_ENTRIES` entries counted as a
    tree (shared references make a 5 KB file hold 2^60 of them)."""
    try:
        n, d = nested_size(obj)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {p}: {e} (a crafted file); refused") from None
    if d > MAX_NESTING:
        raise CheckpointError(f"checkpoint {p}: containers nested {d} levels deep (probe writes a few); refused")
    if n > MAX_ENTRIES:
        raise CheckpointError(f"checkpoint {p}: its nested containers hold {n:,} entries counted along every path "
                              f"(more than {MAX_ENTRIES:,}; shared references in a crafted file); refused")


def _check_tensors(p: Path, obj) -> None:
    """Refuse tensors that claim more than the file holds (a stride-0 view of 10^6 x 10^6 elements in a 2 KB file
    would allocate terabytes when read) and layouts probe does not read (sparse, quantized)."""
    size = p.stat().st_size
    for name, t in tensors_in(obj):
        if t.layout != torch.strided or t.is_quantized:
            raise CheckpointError(f"checkpoint {p}: tensor {name or '(top level)'} has layout {t.layout}; probe reads "
                                  "dense tensors only")
        claimed = t.numel() * t.element_size()
        if claimed > max(t.untyped_storage().nbytes(), size):
            raise CheckpointError(f"checkpoint {p}: tensor {name or '(top level)'} claims shape {tuple(t.shape)} "
                                  f"({claimed:,} bytes) but the file holds {size:,} bytes; refused")


def state_dict_mismatch(model: torch.nn.Module, state_dict) -> str | None:
    """What keeps ``state_dict`` from loading into ``model``, naming the keys (up to three of each kind), or None."""
    if not isinstance(state_dict, dict):
        return f"the state_dict is a {type(state_dict).__name__}, not a dict"
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    shapes = [f"{k} has shape {tuple(state_dict[k].shape)}, the model needs {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and torch.is_tensor(state_dict[k]) and state_dict[k].shape != v.shape]
    shapes += [f"{k} is {state_dict[k].dtype}, the model needs {v.dtype}" for k, v in own.items()
               if k in state_dict and torch.is_tensor(state_dict[k])
               and (state_dict[k].is_complex() or state_dict[k].is_floating_point() != v.is_floating_point())]
    kinds = [k for k in own if k in state_dict and not torch.is_tensor(state_dict[k])]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing[:3])
                     + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    if extra:
        parts.append("unexpected " + ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else ""))
    parts += shapes[:3]
    if kinds:
        parts.append(f"{kinds[0]} is not a tensor")
    return "; ".join(parts) or None


def weights_intact(obj: dict) -> bool:
    """Whether a probe checkpoint's weights (every ``state_dict/`` tensor) and its config and step pass their
    checksums, whatever its training state (optimizer, schedule, RNG) does: what a measurement reads."""
    stored = obj.get(CHECKSUMS)
    if not (isinstance(stored, dict) and isinstance(stored.get("tensors"), dict)):
        return False
    now = checksums(obj)
    weights = [n for n in {*now["tensors"], *stored["tensors"]} if n.startswith("state_dict/")]
    return (bool(weights) and all(stored["tensors"].get(n) == now["tensors"].get(n) for n in weights)
            and stored.get("fields") == now["fields"])


def load_checkpoint(path, map_location="cpu", weights_only_intact: bool = False) -> dict:
    """Load any checkpoint-like file safely. Returns the loaded object (a probe checkpoint dict or a plain
    state_dict); raises CheckpointError with a one-line reason for anything unreadable or unsafe: not a regular
    file (a named pipe would block forever), not a PyTorch file, code it would run, tensors claiming more bytes
    than the file holds, a probe checkpoint failing its checksums (the damaged tensor is named).
    ``weights_only_intact``: a probe checkpoint whose weights, config and step pass their checksums loads even when
    its training state fails its own (:func:`weights_intact`): enough to measure, never to resume from."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p}: not found")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p}: is a folder, not a file")
    special = special_file(p)
    if special:
        raise CheckpointError(f"checkpoint {p}: {special}, not a regular file; refused")
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise CheckpointError(f"checkpoint {p}: cannot read it ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"checkpoint {p}: empty file")
    other = _other_format(p, head)
    if other:
        raise CheckpointError(f"checkpoint {p}: {other}")
    try:
        # weights_only: the unpickler builds tensors, numbers, strings and containers only, and refuses any other
        # global before calling it, so a malicious file runs no code
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # untrusted input: whatever fails is a bad file, reported in one line
        detail = _load_error_detail(e)
        m = re.search(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", str(e), re.IGNORECASE)
        if m and m.group(1).startswith("torch.nn."):
            raise CheckpointError(f"checkpoint {p}: a whole pickled model ({m.group(1).rsplit('.', 1)[-1]}); "
                                  "probe reads "
                                  "weights without running code: save them with torch.save(model.state_dict(), PATH) "
                                  "and analyze that file") from None
        if m:
            raise CheckpointError(f"checkpoint {p}: refused, loading it would call {m.group(1)}, which can run code; "
                                  "probe loads only tensors, numbers and containers (weights_only), so nothing "
                                  "in it was run") from None
        raise CheckpointError(f"checkpoint {p}: not a readable PyTorch checkpoint ({detail})") from None
    _check_structure(p, obj)
    _check_tensors(p, obj)
    if is_probe_checkpoint(obj):
        bad = verify_checksums(obj)
        if bad and not (weights_only_intact and weights_intact(obj)):
            raise CheckpointError(f"checkpoint {p}: {bad}")
    return obj


def special_file(p: Path) -> str | None:
    """What a path is when it is not a regular file (a named pipe, a device, a socket), else None."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return None
    for test, what in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return None if stat.S_ISREG(mode) else "not a regular file"


# torch.save's legacy (non-zip) format starts with a pickled magic number
_LEGACY_HEAD = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _other_format(p: Path, head: bytes) -> str | None:
    """Why a file is plainly not a PyTorch checkpoint (cut short, or another format), or None."""
    not_torch = "not a PyTorch checkpoint"
    if head.startswith(b"PK\x03\x04"):  # zip: torch's format, or numpy's .npz
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "truncated or damaged (its zip archive is incomplete)"
        if names and all(n.endswith(".npy") for n in names):
            return f"a NumPy .npz archive, {not_torch}"
        return None
    if head.startswith(_LEGACY_HEAD):
        return None
    if head[:1] == b"\x80":
        return f"a plain Python pickle, {not_torch}; probe does not unpickle it (unpickling can run code)"
    if head.startswith(b"\x93NUMPY"):
        return f"a NumPy .npy array, {not_torch}"
    if head.startswith(b"\x89HDF"):
        return f"an HDF5 file, {not_torch}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"a text file (it starts {text.strip()[:24]!r}), {not_torch}"
    return f"of an unknown format, {not_torch} (PyTorch writes a zip archive or a pickle)"


def _load_error_detail(e: Exception) -> str:
    """The informative line of a torch.load error (torch wraps weights_only errors in paragraphs of advice)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)",
            "WeightsUnpickler error:")
    keep = [ln for ln in lines if not ln.startswith(skip)]
    detail = (keep or lines or [type(e).__name__])[0]
    if isinstance(e, OSError) and e.strerror:
        detail = e.strerror
    return detail[:160]


def is_probe_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def checkpoint_steps(total: int, count: int) -> list[int]:
    """``count`` log-spaced steps in [0, total], always including 0 and total."""
    if total <= 0:
        return [0]
    if count <= 2:
        return sorted({0, total})
    inner = np.unique(np.round(np.logspace(0, np.log10(total), count - 1)).astype(int))
    return sorted({0, total, *[int(s) for s in inner if 0 < s < total]})


def step_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of a run folder's checkpoints, sorted by step."""
    out = []
    for p in (Path(run_dir) / "checkpoints").glob("step_*.pt"):
        try:
            out.append((int(p.stem.split("_", 1)[1]), p))
        except ValueError:
            continue
    return sorted(out)
