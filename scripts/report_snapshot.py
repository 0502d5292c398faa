"""Snapshot `probe analyze` reports and compare two snapshots value by value: the check that a change to how the
measures are computed (a cheaper route, a shared intermediate) leaves every reported number as it was.

    python scripts/report_snapshot.py save DIR      # reports of the bench model and the committed run folder
    python scripts/report_snapshot.py compare A B   # every key and value of A's reports against B's

``save`` writes one JSON per case (``Report.to_dict``; json writes a float's shortest repr, which reads back to the
same bits): the 3072-4096-4096-4096-10 MLP of ``scripts/bench_analyze.py --vs-weightwatcher`` (every measure and
every reference, input shape 3,32,32), and tests/data/run_v1 (every step, with and without its task's data, with
``--delta``). ``compare`` lists every path whose key set or value differs (floats compared exactly, bit for bit;
``--rtol`` for a looser check) and exits 1 when any does. The checkpoint paths, which name a temporary folder, are
left out of the comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "tests" / "data" / "run_v1"


def save(out: Path) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_analyze import INPUT_SHAPE, mlp

    from probe.analysis.report import analyze_checkpoint, analyze_steps, write_json

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.pt"
        torch.save(mlp(0).state_dict(), path)
        write_json([analyze_checkpoint(path, input_shape=INPUT_SHAPE)], out / "bench_mlp.json")
    write_json(analyze_steps(RUN), out / "run_v1.json", run=str(RUN))
    write_json(analyze_steps(RUN, data=False), out / "run_v1_nodata.json", run=str(RUN))
    write_json(analyze_steps(RUN, delta=True), out / "run_v1_delta.json", run=str(RUN))


def differences(a, b, path: str = "", rtol: float = 0.0) -> list[str]:
    """Every path at which a and b differ: key sets, types, values (floats within rtol, exactly by default)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}: keys {list(a)} != {list(b)}"] if list(a) != list(b) else []
        for k in a:
            if k in b and k != "checkpoint":
                out += differences(a[k], b[k], f"{path}/{k}", rtol)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]", rtol)]
    if isinstance(a, float) and isinstance(b, float):
        same = a == b if rtol == 0 else math.isclose(a, b, rel_tol=rtol)
        return [] if same else [f"{path}: {a!r} != {b!r} (rel {abs(a - b) / max(abs(a), abs(b)):.2e})"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("save").add_argument("dir", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    cmp.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args()
    if args.cmd == "save":
        save(args.dir)
        return
    bad = 0
    for fa in sorted(args.a.glob("*.json")):
        fb = args.b / fa.name
        if not fb.exists():
            print(f"{fa.name}: not in {args.b}")
            bad += 1
            continue
        diffs = differences(json.loads(fa.read_text()), json.loads(fb.read_text()), rtol=args.rtol)
        print(f"{fa.name}: {'identical' if not diffs else f'{len(diffs)} differences'}")
        for d in diffs[:40]:
            print("  " + d)
        bad += bool(diffs)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
