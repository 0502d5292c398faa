"""One typed config per run: every `probe train` option is a field here, with its default.

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


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rerun a training run. Defaults reproduce the MNIST-1D MLP baseline
    (Greydanus & Kobak: MLP 40-100-100-10, Adam lr 1e-2, batch 100, 6000 steps)."""

    task: str = "mnist1d"
    task_opts: dict = field(default_factory=dict)
    model: str = "mlp"
    model_opts: dict = field(default_factory=dict)
    width: int = 100
    depth: int = 2
    param: str = "standard"
    steps: int = 6000
    batch_size: int = 100
    lr: float = 1e-2
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    l1: float = 0.0
    beta_lasso: float = 0.0
    seed: int = 0
    device: str = "auto"
    eval_every: int = 500
    log_every: int = 100
    checkpoints: int = 10
    track: str = "default"
    track_every: int = 0
    compile: bool = False
    on_nan: str = "stop"

    def __post_init__(self):
        check_config(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
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
    for name in ("width", "steps", "batch_size", "eval_every", "log_every", "checkpoints"):
        if getattr(c, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(c, name)}")
    for name in ("depth", "warmup", "track_every"):
        if getattr(c, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(c, name)}")
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
        raise ConfigError(f"config file {p}: cannot parse ({str(e).splitlines()[0]})") from None
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
