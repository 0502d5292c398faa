"""Checkpoints: one dict saved with ``torch.save``, always read with ``weights_only=True`` (no code runs).

Contents: ``format`` and ``version``, ``config`` (the run's RunConfig as a dict), ``geometry``, ``task_info``,
``state_dict``, ``step``, and for resuming ``optimizer``, ``scheduler`` and ``rng`` (torch, numpy, python and,
on cuda, the device generators). Files are written atomically: a temporary file in the same folder, flushed to
disk, then renamed over the final name, so a crash or kill never leaves a truncated file under that name.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "probe-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that cannot be read as a checkpoint; the message names the file and the problem."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p}: empty file")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"checkpoint {p}: refused, it holds objects that are not plain weights ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {p}: not a readable PyTorch file ({msg[:160]})") from None
    return obj


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
