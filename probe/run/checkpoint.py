"""Checkpoints: one dict saved with ``torch.save``, always read with ``weights_only=True`` (no code runs).

Contents: ``format`` and ``version``, ``config`` (the run's RunConfig as a dict), ``geometry``, ``task_info``,
``state_dict``, ``step``, and for resuming ``optimizer``, ``scheduler`` and ``rng`` (torch, numpy, python and,
on cuda, the device generators). Files are written atomically: a temporary file in the same folder, flushed to
disk, then renamed over the final name, so a crash or kill never leaves a truncated file under that name.
"""

from __future__ import annotations

import os
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "probe-checkpoint"
VERSION = 1
TEMP_MARK = ".tmp-"


class CheckpointError(ValueError):
    """A file that cannot be read as a checkpoint; the message names the file and the problem."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.
    The temporary name (``.NAME.tmp-PID``) is hidden and never matches ``step_*.pt``; a kill -9 can leave one
    behind, which :func:`remove_temp_files` clears."""
    path = Path(path)
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


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **payload) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load any checkpoint-like file safely. Returns the loaded object (a probe checkpoint dict or a plain
    state_dict); raises CheckpointError with a one-line reason for anything unreadable or unsafe."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p}: not found")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p}: is a folder, not a file")
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
            raise CheckpointError(f"checkpoint {p}: a whole pickled model ({m.group(1).rsplit('.', 1)[-1]}); probe reads "
                                  "weights without running code: save them with torch.save(model.state_dict(), PATH) "
                                  "and analyze that file") from None
        if m:
            raise CheckpointError(f"checkpoint {p}: refused, loading it would call {m.group(1)}, which can run code; "
                                  "probe loads only tensors, numbers and containers (weights_only), so nothing "
                                  "in it was run") from None
        raise CheckpointError(f"checkpoint {p}: not a readable PyTorch checkpoint ({detail})") from None
    return obj


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
