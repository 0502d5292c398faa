"""One typed config per run: every `probe train` option is a field here, with its default and help text.

The config is saved as ``config.json`` in the run folder and inside every checkpoint, so a run can be rebuilt
from either alone (``probe train --config RUN/config.json`` reruns it).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad option or config value; the CLI prints its message on one line and exits with code 2."""


OPTIMIZERS = ("sgd", "adam", "adamw")
PARAMETRIZATIONS = ("standard", "mean-field")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
NAN_POLICIES = ("stop", "continue")
LOGGERS = ("none", "tensorboard", "wandb")
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's and the seeded streams (probe/seeding.py) take it too
MAX_DEPTH = 1000  # hidden layers
MAX_CHECKPOINTS = 10_000
MAX_COUNT = 10**12  # steps, batch size, intervals: far past any run, and safe in int64 and float64 arithmetic
MAX_THREADS = 1024  # torch CPU threads (OpenMP aborts the process at some 10^5)


def _or(choices) -> str:
    """("a", "b", "c") -> "a, b or c", for help texts that list the valid values."""
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def option(default, help: str):
    """A RunConfig field with the help text that `probe train --help` shows beside its default. The CLI builds
    one option per field from these (probe/cli.py), so a default is written here and nowhere else."""
    if isinstance(default, dict):  # a mutable default needs a factory: each config gets its own copy
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rerun a training run. Defaults reproduce the MNIST-1D MLP baseline
    (Greydanus & Kobak: MLP 40-100-100-10, Adam lr 1e-2, batch 100, 6000 steps).

    Each field is a `probe train` option (``--batch-size`` for ``batch_size``) and a key of ``--config`` files;
    its help text is in the field's metadata (:func:`option`)."""

    task: str = option("mnist1d", "Task name (see `probe tasks`), or npz:PATH.")
    task_opts: dict = option({}, "Task parameter KEY=VALUE (repeatable; `probe tasks NAME` lists them).")
    model: str = option("mlp", "Model name (see `probe models`).")
    model_opts: dict = option({}, "Model option KEY=VALUE (repeatable; `probe models NAME` lists them).")
    width: int = option(100, "Hidden units per layer (MLP, transformer).")
    depth: int = option(2, "Number of hidden layers.")
    param: str = option("standard", f"Parametrization: {_or(PARAMETRIZATIONS)} (readout x 1/width; with SGD "
                                    "every layer's lr x width).")
    steps: int = option(6000, "Optimizer steps.")
    batch_size: int = option(100, "Batch size.")
    lr: float = option(1e-2, "Learning rate.")
    optimizer: str = option("adam", f"Optimizer: {_or(OPTIMIZERS)}.")
    momentum: float = option(0.0, "SGD momentum.")
    weight_decay: float = option(0.0, "Weight decay.")
    schedule: str = option("constant", f"Learning-rate schedule: {_or(SCHEDULES)}.")
    warmup: int = option(0, "Linear warm-up steps.")
    l1: float = option(0.0, "L1 penalty strength lambda on weight matrices.")
    beta_lasso: float = option(0.0, "beta-LASSO: after each step zero weights below beta x lambda (needs --l1).")
    seed: int = option(0, "Random seed.")
    device: str = option("auto", f"{_or(DEVICES)}; auto takes cuda when there is one (then bf16 autocast and "
                                 "fused optimizers).")
    eval_every: int = option(500, "Evaluate on the test split every N steps.")
    log_every: int = option(100, "Write a metrics row every N steps.")
    checkpoints: int = option(10, "How many log-spaced checkpoints (with step 0 and the last).")
    track: str = option("default", "First-layer measures tracked during training: a comma list, 'default' or "
                                   "'none'.")
    track_every: int = option(0, "Track every N steps (0: at every evaluation).")
    log: str = option("none", f"Also log every metrics row to: {_or(LOGGERS)} or both (tensorboard,wandb), "
                              "with the run config as hparams (RUN/tensorboard, RUN/wandb).")
    threads: int = option(0, "Torch CPU threads; 0: one for small models (parameters x batch < 1e7, where more "
                             "threads only fight other processes for the cores), torch's setting otherwise.")
    compile: bool = option(False, "torch.compile the model.")
    on_nan: str = option("stop", f"What a NaN/inf loss does: {_or(NAN_POLICIES)} (to study divergence).")

    def __post_init__(self):
        check_config(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
            raise ConfigError(f"{source}: the config is not a table of named keys")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s) {', '.join(unknown)}; "
                              f"valid keys: {', '.join(sorted(known))}")
        return cls(**{k: _coerce_field(k, v, source) for k, v in d.items()})

    def replace(self, **changes) -> "RunConfig":
        return replace(self, **changes)


_FIELD_TYPES = {f.name: f.type for f in fields(RunConfig)}


def _coerce_field(name: str, value, source: str):
    t = _FIELD_TYPES[name]
    try:
        if t == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if t == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t == "bool":
            return parse_bool(value)
        if t == "dict":
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be {t}, got {value!r}") from None


def parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def check_config(c: RunConfig) -> None:
    """Reject values that make no sense, naming the option and the valid choices."""

    def choice(name, value, valid):
        if value not in valid:
            raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(valid)}; got {value!r}")

    choice("optimizer", c.optimizer, OPTIMIZERS)
    choice("param", c.param, PARAMETRIZATIONS)
    choice("schedule", c.schedule, SCHEDULES)
    choice("device", c.device, DEVICES)
    choice("on_nan", c.on_nan, NAN_POLICIES)
    for target in c.log.split(","):  # one logger, or several: tensorboard,wandb
        choice("log", target.strip(), LOGGERS)
    for name in ("width", "steps", "batch_size", "eval_every", "log_every", "checkpoints"):
        if getattr(c, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(c, name)}")
    for name in ("depth", "warmup", "track_every", "threads"):
        if getattr(c, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(c, name)}")
    for name in ("steps", "batch_size", "eval_every", "log_every", "warmup", "track_every"):
        if getattr(c, name) > MAX_COUNT:
            raise ConfigError(f"--{name.replace('_', '-')} must be <= {MAX_COUNT:.0e}; got {getattr(c, name)}")
    if c.threads > MAX_THREADS:
        raise ConfigError(f"--threads must be <= {MAX_THREADS}; got {c.threads}")
    if c.depth > MAX_DEPTH:
        raise ConfigError(f"--depth must be <= {MAX_DEPTH}; got {c.depth}")
    if c.checkpoints > MAX_CHECKPOINTS:
        raise ConfigError(f"--checkpoints must be <= {MAX_CHECKPOINTS}; got {c.checkpoints}")
    if not 0 <= c.seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer in [0, {MAX_SEED}]; got {c.seed}")
    for name in ("lr", "momentum", "weight_decay", "l1", "beta_lasso"):
        v = getattr(c, name)
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0; got {v}")
    if c.lr == 0:
        raise ConfigError("--lr must be > 0")
    if c.beta_lasso > 0 and c.l1 == 0:
        raise ConfigError("--beta-lasso needs an L1 strength: give --l1 LAMBDA as well")


def parse_kv(items: list[str] | None, flag: str) -> dict:
    """Parse repeated ``KEY=VALUE`` options; values are parsed as JSON where possible (numbers, bools, lists)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[k] = parse_value(v.strip())
    return out


def parse_value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(v)
    except ValueError:
        return v


def load_config_file(path: str | Path) -> dict:
    """Read a TOML or JSON file of config keys (the same names as RunConfig's fields; dashes allowed)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p}: not found")
    try:
        text = p.read_text()
        d = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {p}: cannot parse ({(str(e).splitlines() or [type(e).__name__])[0]})") from None
    except RecursionError:
        raise ConfigError(f"config file {p}: nested too deeply to read (a damaged or crafted file)") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: cannot read it ({e.strerror or e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p}: expected a table of config keys")
    return {k.replace("-", "_"): v for k, v in d.items()}


def coerce_opts(opts: dict, defaults: dict, where: str) -> dict:
    """Check task or model options against the types of their defaults (KEY=VALUE parses loosely)."""
    out = {}
    for k, v in opts.items():
        d = defaults.get(k)
        try:
            if isinstance(d, bool):
                v = parse_bool(v)
            elif isinstance(d, int):
                if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                    raise ValueError
                v = int(v)
            elif isinstance(d, float):
                if isinstance(v, bool):
                    raise ValueError
                v = float(v)
                if not math.isfinite(v):
                    raise ValueError
            elif isinstance(d, str):
                v = str(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: option {k} must be {type(d).__name__} (default {d!r}), got {v!r}") from None
        if k.endswith("seed") and isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_SEED:
            raise ConfigError(f"{where}: option {k} must be an integer in [0, {MAX_SEED}], got {v}")
        out[k] = v
    return out


def flatten_config(cfg: dict) -> dict:
    """A config dict with nested dicts (task_opts, model_opts) as ``key.sub`` entries."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update({f"{k}.{s}": w for s, w in v.items()})
        else:
            out[k] = v
    return out
