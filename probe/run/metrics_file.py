"""``metrics.jsonl``, a run's metrics rows: one JSON object per line with an integer ``step`` >= 0, in the order
they were logged (docs/design.md §5). :func:`parse_metrics` is the one reader of its lines: training
(:func:`read_metrics`, ``--resume``) and ``probe check`` read the file through it, so they agree on what a row is.

A line that is not a row (a damaged byte, a row cut short by a crash) is skipped, never the good rows around it.
Which whole lines were damaged matters to ``--resume``, which keeps them aside in :data:`DAMAGED_FILE`, and to
``probe check``, which reports them; the last line of a file without a newline after it is the row a crash
interrupted (a resumed run writes it again), so it is not kept aside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from probe.config import RunConfig

METRICS_FILE = "metrics.jsonl"
DAMAGED_FILE = "metrics.damaged.txt"  # lines of metrics.jsonl that are not rows, kept aside by --resume


@dataclass(frozen=True)
class BadLine:
    """A non-empty line of metrics.jsonl that is not a row."""

    number: int  # 1 for the first line of the file
    text: str
    is_json: bool  # JSON, but not an object with an integer step >= 0
    whole: bool  # a newline follows it (False only for the file's last line, cut short by a crash)

    @property
    def reason(self) -> str:
        return "is not a row with an integer step" if self.is_json else "is not JSON"


def metrics_row(line: str) -> dict | None:
    """The row of one metrics.jsonl line, or None when it is not a JSON object with an integer ``step`` >= 0."""
    row = _json(line)
    if not (isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool)
            and row["step"] >= 0):
        return None
    return row


_NOT_JSON = object()


def _json(line: str):
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return _NOT_JSON


def parse_metrics(text: str) -> tuple[list[dict], list[BadLine]]:
    """(rows, bad lines) of metrics.jsonl's text: lines are split at ``\\n`` only, blank lines are skipped."""
    rows, bad = [], []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        row = metrics_row(line)
        if row is not None:
            rows.append(row)
        else:
            bad.append(BadLine(i + 1, line, _json(line) is not _NOT_JSON, i < len(lines) - 1))
    return rows, bad


def read_metrics_text(run_dir) -> str:
    """The text of a run's metrics.jsonl, bytes that are not UTF-8 replaced; OSError when it cannot be read, "" when
    there is none."""
    p = Path(run_dir) / METRICS_FILE
    return p.read_text(errors="replace") if p.is_file() else ""


def read_metrics(run_dir) -> list[dict]:
    """The rows of a run's metrics.jsonl in order ([] when there is none or it cannot be read). A line that is not a
    JSON object with an integer ``step`` >= 0 (a row cut short by a crash, a damaged byte) is skipped, never the
    good rows around it (``probe check`` reports it; ``--resume`` keeps it aside in :data:`DAMAGED_FILE`)."""
    try:
        text = read_metrics_text(run_dir)
    except OSError:
        text = ""
    return parse_metrics(text)[0]


def last_values(run_dir) -> dict:
    """Every key of metrics.jsonl at its last logged value (tracked measures are logged at fewer steps than
    losses), with ``step`` the last row's step; {} when nothing is logged."""
    merged: dict = {}
    for row in read_metrics(run_dir):
        merged.update(row)
    return merged


def is_log_step(step: int, cfg: RunConfig) -> bool:
    """Whether the loop writes a metrics row at ``step``: 0, multiples of --log-every or --eval-every, the last."""
    return step == 0 or step == cfg.steps or step % cfg.log_every == 0 or step % cfg.eval_every == 0


def log_steps(cfg: RunConfig, upto: int) -> list[int]:
    """The steps of the metrics rows an uninterrupted run writes, up to ``upto``."""
    return [s for s in range(0, min(upto, cfg.steps) + 1) if is_log_step(s, cfg)]
