"""Sizes counted before anything is built: a task's data, a model's parameters, a sweep's runs.

A request that cannot fit gets one line naming the option, the estimate and the limit, instead of minutes of
allocation, a MemoryError traceback or the kernel's OOM killer. Estimates are upper bounds of the arrays the
builders allocate (float64 where numpy generates, so 8 bytes an element), compared with the memory this process
may use: the machine's physical memory, or RLIMIT_AS when a limit is set. ``PROBE_MAX_BYTES`` overrides it.
"""

from __future__ import annotations

import math
import os

from probe.config import ConfigError

ELEMENT = 8  # bytes per counted element (numpy generates in float64 / int64)
MAX_RUNS = 10_000  # runs in one sweep: more is a typo in a grid, or several sweeps


def memory_budget() -> int:
    """Bytes this process may allocate: ``PROBE_MAX_BYTES``, else the smaller of physical memory and RLIMIT_AS."""
    env = os.environ.get("PROBE_MAX_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ConfigError(f"PROBE_MAX_BYTES must be a number of bytes, got {env!r}") from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        total = 2**40
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            total = min(total, soft)
    except (ImportError, OSError, ValueError):  # pragma: no cover
        pass
    return total


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**28 else f"{n / 2**20:,.1f} MiB"


def refuse_if_too_big(what: str, elements: float, detail: str) -> None:
    """ConfigError when ``elements`` (counted as 8 bytes each) exceed the memory budget."""
    need, have = elements * ELEMENT, memory_budget()
    if need > have:
        raise ConfigError(f"{what}: {detail} needs about {_gb(need)}, more than the {_gb(have)} this process may "
                          "use; choose smaller values")


COUNT_OPTIONS = ("n_train", "n_test", "num_samples")


def task_elements(name: str, opts: dict, defaults: dict) -> tuple[float, str]:
    """Upper bound of the elements task ``name`` allocates with options ``opts`` (defaults filled in), and the
    options it was counted from. Examples (n_train + n_test, num_samples, or p^2 pairs) times the values per
    example (grid positions size^dim, sequence length, D inputs, n bits, context x (dim + 1), mnist1d's 72
    template points); a vocabulary once per example (tokens are drawn from it); a Gaussian-field task also its
    covariance, (size^dim)^2 x (dim + 2). Tasks read from files count nothing here."""
    o = {**defaults, **opts}

    def num(k, default=0):
        v = o.get(k, default)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    if not any(k in o for k in ("size", "length", "D", "n", "context", "p", "num_samples")):
        return 0.0, ""  # read from files: their size is bounded where they are read
    examples = sum(max(num(k), 0) for k in COUNT_OPTIONS)
    used = [k for k in COUNT_OPTIONS if k in o]
    per = 1.0
    if "size" in o:
        dim = 2 if name == "patches" and not o.get("rows") else max(num("dim", 1), 1)
        per *= float(num("size")) ** dim
        used += ["size"] + (["dim"] if "dim" in o else [])
    if "length" in o:
        per *= max(num("length"), num("test_length"), 1)
        used.append("length")
    for k in ("D", "n"):
        if k in o:
            per *= max(num(k), 1)
            used.append(k)
    if "context" in o:
        per *= (max(num("context"), 1) + 1) * (max(num("dim", 1), 1) + 1)
        used += ["context", "dim"]
    if "p" in o:
        examples += float(num("p")) ** 2
        per *= 3
        used.append("p")
    elements = max(examples, 1) * per
    if "num_samples" in o:  # mnist1d: 40 positions, generated from templates of 72 points
        elements *= 72
    if "vocab" in o:  # tokens drawn per example from the vocabulary, read one-hot
        elements += max(examples, 1) * max(num("vocab"), 1)
        used.append("vocab")
    if "xi0" in o:  # a Gaussian field: its covariance and the grid's pairwise distances
        elements += per * per * (max(num("dim", 1), 1) + 2)
    return elements, ", ".join(dict.fromkeys(used))


def check_task_size(name: str, opts: dict, defaults: dict) -> None:
    elements, used = task_elements(name, opts, defaults)
    refuse_if_too_big(f"task {name}", elements, f"building it with {used} as given" if used else "building it")


def check_model_size(name: str, n_inputs: int, n_outputs: int, width: int, depth: int, opts: dict,
                     batch_size: int | None = None) -> None:
    """Refuse a model whose parameters (with Adam's two moments and a gradient: x4) or one batch's activations
    cannot fit. Parameters are bounded from above: dense layers n_inputs x width + depth x width^2 (x expansion
    for a mixer or transformer block), a local layer's channels x channels x kernel^d per output position for an
    lcn (per layer for a cnn)."""
    width = max(width, 1)
    mult = max(*(v for k, v in opts.items() if k in ("expansion", "mlp_ratio", "token_mult", "channel_mult")
                 and isinstance(v, int) and not isinstance(v, bool)), 1, 1)
    params = float(n_inputs) * width + depth * width * width * mult + width * n_outputs
    acts = float(n_inputs) + depth * width * mult
    if "kernel" in opts:
        ch, k, layers = max(opts.get("channels", 1), 1), max(opts.get("kernel", 1), 1), max(opts.get("layers", 1), 1)
        per_layer = float(ch) * ch * k
        positions = float(n_inputs)
        params = layers * per_layer * (positions if name == "lcn" else 1) + positions * ch * n_outputs
        acts = layers * positions * ch
    refuse_if_too_big(f"model {name}", 4 * params, "its parameters with optimizer state")
    if batch_size:
        refuse_if_too_big(f"model {name}", float(batch_size) * acts * 3, f"a batch of {batch_size:,}")


def check_sweep_size(counts: list[int], where: str) -> int:
    """The number of runs a grid of axes with these lengths makes, refused above :data:`MAX_RUNS`."""
    n = math.prod(counts)
    if n > MAX_RUNS:
        raise ConfigError(f"{where}: {n:,} runs ({' x '.join(map(str, counts))}), more than {MAX_RUNS:,}; shorten "
                          "the grid or split it into several sweeps")
    return n
