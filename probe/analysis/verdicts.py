"""Which null decides each structure measure, and a one-line reading of a value against it.

A structure measure is read against the reference that would fake it (docs/design.md §4.3, docs/measures.md):

- locality and translation structure (``ipr``, ``ipr_frac_above``, ``spread``, ``window_mass_k``,
  ``shift_match``) against ``phase``, the same fields with every unit's Fourier phases randomized: smooth fields
  score high on these without being local, and phase randomization keeps each unit's power spectrum (smoothness)
  while destroying place;
- weight sharing (``conv_distance_k``) against ``lcn``, random local unshared fields in the layer's own windows:
  locality alone lowers conv_distance a little, sharing is what must beat this;
- concentration (``hoyer``) against ``init_seeds``, the model's initializer on other seeds: an initializer sets
  its level before any training.

Each measure's deciding reference, what beating it shows and whether low is the structure are fields of its registry
record (:data:`probe.metrics.registry.MEASURES`: ``decided_by``, ``structure``, ``low_is_structure``).
The ΔW and pull twins (``delta_window_mass_3``, ``grad_ipr``) are read against the same kind of null, drawn from
ΔW or G. Measures not listed here (spectra, movement, the functional ones) have no verdict: their nulls are in the
report's columns, and `probe measures NAME` says how to read them.

A verdict compares the value d = value - null (the sign flipped for measures where low means structure, so
"above" always means "more structure than the null") with a tolerance of :data:`AT_TOLERANCE` of the null's
magnitude: within it the value is "at its null". The references are one draw each (``init_seeds`` a mean of
a few): the tolerance stands in for their spread, and a difference near it needs seeds (`probe figures
--group-by`) before it is read as structure.
"""

from __future__ import annotations

import json
from pathlib import Path

from probe.metrics.registry import MEASURES

# measure (or its base, for delta_/grad_ twins) -> the reference kind that decides it: its registry record's
DECIDING_NULL = {n: m.decided_by for n, m in MEASURES.items() if m.decided_by and not m.base}
# measures where a low value is the structure (compact fields, a small distance to a convolution)
LOW_IS_STRUCTURE = {n for n in DECIDING_NULL if MEASURES[n].low_is_structure}
AT_TOLERANCE = 0.05  # |value - null| within 5% of |null|: "at its null"
NULL_TEXT = {"phase": "phase null", "lcn": "lcn null (random local fields, unshared)",
             "init_seeds": "initializer on other seeds"}
# what "more than the null" means, per measure
STRUCTURE = {n: MEASURES[n].structure for n in DECIDING_NULL}


def base_measure(name: str) -> str:
    """``delta_window_mass_3`` -> ``window_mass_3``; other names unchanged."""
    for prefix in ("delta_", "grad_"):
        if name.startswith(prefix) and name[len(prefix):] in DECIDING_NULL:
            return name[len(prefix):]
    return name


def deciding_null(name: str) -> str | None:
    """The reference kind that decides measure ``name`` (its twins' too), or None for measures without one."""
    return DECIDING_NULL.get(base_measure(name))


def verdict(name: str, value: float, null: float) -> tuple[str, float]:
    """("above" | "at" | "below", d) for ``value`` against ``null``: d = value - null, sign flipped where low
    means structure, so that "above" is always "more structure than the null" (module docstring)."""
    d = value - null
    if base_measure(name) in LOW_IS_STRUCTURE:
        d = -d
    if abs(d) <= AT_TOLERANCE * max(abs(null), 1e-12):
        return "at", d
    return ("above" if d > 0 else "below"), d


def reading(name: str, value: float, null: float, kind: str) -> str:
    """One line: ``window_mass_3 0.036: below its phase null 0.063 by 0.027 (-43%): less locality than the null``;
    the percentage is d / |null|, signed toward structure."""
    word, d = verdict(name, value, null)
    rel = f"{100 * d / abs(null):+.0f}%" if null else "n/a"
    low = base_measure(name) in LOW_IS_STRUCTURE
    what, structure = f"{NULL_TEXT[kind]} {null:.4g}", STRUCTURE[base_measure(name)]
    if word == "at":
        tail = f"at its {what} (within {AT_TOLERANCE:.0%}): no {structure} beyond the null"
    else:
        side = ("below" if word == "above" else "above") if low else word
        tail = (f"{side} its {what} by {abs(value - null):.3g} ({rel}): "
                + (f"{structure} beyond the null" if word == "above" else f"less {structure} than the null"))
    return f"{name} {value:.4g}: {tail}"


def readings(sections: dict, reference: dict, layer: str) -> list[str]:
    """The readings of one layer's measures (``sections[layer]``) against ``reference[kind][layer]``."""
    lines = []
    for name, value in sections.get(layer, {}).items():
        kind = deciding_null(name)
        null = reference.get(kind, {}).get(layer, {}).get(name) if kind else None
        if null is None or value is None or value != value or null != null:
            continue
        lines.append(reading(name, float(value), float(null), kind))
    return lines


def stride_note(checkpoint) -> str | None:
    """For a cnn or lcn run whose first layer has stride > 1: how its translation measures read (None otherwise)."""
    path = Path(checkpoint)
    for folder in (path, path.parent, path.parent.parent):
        cfg = folder / "config.json"
        if cfg.is_file():
            break
    else:
        return None
    try:
        c = json.loads(cfg.read_text())
    except (OSError, ValueError, RecursionError):  # a damaged config: the loader says so; this note is left out
        return None
    if not isinstance(c, dict):
        return None
    opts = c.get("model_opts")
    stride = opts.get("stride", 1) if isinstance(opts, dict) else 1
    if c.get("model") not in ("cnn", "lcn") or not isinstance(stride, int) or stride <= 1:
        return None
    return (f"stride {stride}: the first layer's units are each filter at every {stride}th position, so a unit's "
            f"one-pixel shift is not another unit: shift_match reads low by construction (an exact stride-2 "
            f"convolution falls below its lcn null), not for want of sharing. conv_distance looks for a filter used "
            f"at two or more positions, which stride {stride} still is: an exact convolution reads about 0.25 on a "
            f"non-periodic grid of 40 (the border units that zero padding truncates), as at stride 1")
