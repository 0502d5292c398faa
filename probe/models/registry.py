"""The model registry: every builder registered by name with :func:`register` (its kinds, the run settings it reads).

The builders' modules import :func:`register` from here and :mod:`probe.models` imports them, so the registry
fills when ``probe.models`` is imported, without an import cycle.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

_FIXED = ("task", "width", "depth", "param")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    fn: Callable
    description: str
    kinds: tuple[str, ...]  # task kinds it accepts: "image", "sequence"
    uses: tuple[str, ...] = ("width", "depth", "param")  # the RunConfig fields it reads (beyond its options)

    def options(self) -> dict:
        sig = inspect.signature(self.fn)
        return {k: p.default for k, p in sig.parameters.items() if k not in _FIXED}


MODELS: dict[str, ModelSpec] = {}


def register(name: str, description: str, kinds=("image",), uses=("width", "depth", "param")):
    """Register a model builder. ``uses``: which of --width, --depth and --param it reads; giving one it does not
    read is refused (a CNN's size is set by its options, not by --width)."""

    def deco(fn):
        MODELS[name] = ModelSpec(name, fn, description, tuple(kinds), tuple(uses))
        return fn

    return deco
