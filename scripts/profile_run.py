"""Where the wall time of one `probe train` process goes, and the whole process against another code tree.

    python scripts/profile_run.py                      # phases of `probe train --task mnist1d` (the default run)
    python scripts/profile_run.py --repeats 3 --against /path/to/other/checkout

Phases (one process, timed by wrapping the functions that do them; wall and CPU seconds each):
  imports      from the script's first line to probe.cli and the training loop imported (torch with it)
  data         building the task (probe.tasks.make_task: generating or reading MNIST-1D, the mnist1d import)
  model        building the model and the optimizer (torch.optim's first use imports torch._dynamo)
  evaluations  the test and training-subset evaluations of the metrics rows
  checkpoints  writing checkpoints (checksums, fsync, rename)
  tracking     the tracked measures at the evaluation rows, and the references written at the end
  training     the steps themselves: train() less the three above
  other        the rest of the process (interpreter start-up, option parsing, the run folder, locks, exit)

With ``--against DIR`` the phases are taken for both trees, and then each repeat runs the whole default `probe
train` process once with this tree's code and once with DIR's (PYTHONPATH), alternating, and prints wall and CPU
seconds (user + sys of the child) of each, the load average at the start of each, and whether the two runs'
metrics.jsonl, reference.json and checkpoints are byte-identical (``--no-phases``: the whole processes only).
Other `probe train` options after the script's own replace the default run's (``--task mnist --steps 200``).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARGS = ["train", "--task", "mnist1d", "-q"]

# the child: run `probe train` in this process, timing its phases; prints one JSON line on stdout
CHILD = r"""
import sys, time, json, os
T0 = time.perf_counter()
C0 = time.process_time()
import probe.cli
import probe.run.loop as loop, probe.run.tracking as tracking
phases = {"imports": [time.perf_counter() - T0 + START_OFFSET, time.process_time() - C0]}

def timed(mod, name, phase):
    fn = getattr(mod, name)
    def wrapper(*a, **k):
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            p = phases.setdefault(phase, [0.0, 0.0])
            p[0] += time.perf_counter() - t
            p[1] += time.process_time() - c
    setattr(mod, name, wrapper)
    return wrapper

timed(loop, "make_task", "data")
timed(loop, "build_model", "model")
timed(loop, "make_optimizer", "model")
timed(loop, "evaluate", "evaluations")
timed(loop, "save", "checkpoints")
timed(loop, "train", "train")
make_hooks = tracking.tracking_hooks

class Timed:
    def __init__(self, hook):
        self.hook = hook
    def __call__(self, *a, **k):
        t, c = time.perf_counter(), time.process_time()
        try:
            return self.hook(*a, **k)
        finally:
            p = phases.setdefault("tracking", [0.0, 0.0])
            p[0] += time.perf_counter() - t
            p[1] += time.process_time() - c
    def __getattr__(self, name):
        attr = getattr(self.hook, name)
        if name != "finish":
            return attr
        def finish(*a, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                return attr(*a, **k)
            finally:
                p = phases.setdefault("tracking", [0.0, 0.0])
                p[0] += time.perf_counter() - t
                p[1] += time.process_time() - c
        return finish

tracking.tracking_hooks = lambda run: tuple(Timed(h) for h in make_hooks(run))
sys.argv = ["probe"] + ARGS
try:
    probe.cli.app()
except SystemExit as e:
    if e.code not in (0, None):
        raise
phases["total_in_process"] = [time.perf_counter() - T0 + START_OFFSET, time.process_time() - C0]
print("PHASES " + json.dumps(phases))
print("MODULES " + " ".join(sorted({m.split(".")[0] for m in sys.modules})))
sys.stdout.flush()
if getattr(probe.cli, "_quick_exit", None):  # as probe.cli.main ends such a process
    os._exit(0)
"""


def load_average() -> float:
    return os.getloadavg()[0]


def run_process(code_root: Path, args: list[str], out: Path, child: str | None = None) -> dict:
    """One fresh `probe train` process with ``code_root`` first on PYTHONPATH: its wall and CPU seconds."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    load = load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    if child is None:
        cmd = [sys.executable, "-m", "probe.cli", *args, "--out", str(out)]
    else:
        cmd = [sys.executable, "-c", child]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code_root)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"probe train failed ({code_root}): {proc.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "load": load, "stdout": proc.stdout}


def same_run(a: Path, b: Path) -> bool:
    """metrics.jsonl (but the timing-free rows are compared whole) and every checkpoint byte for byte."""
    files = ["metrics.jsonl", "reference.json",
             *sorted(str(p.relative_to(a)) for p in (a / "checkpoints").glob("*.pt"))]
    other = sorted(str(p.relative_to(b)) for p in (b / "checkpoints").glob("*.pt"))
    if sorted(f for f in files if f.endswith(".pt")) != other:
        return False
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files if (a / f).exists() or (b / f).exists())


def phases(args: list[str], tmp: Path, root: Path = ROOT) -> dict:
    out = tmp / "phases"
    child = CHILD.replace("ARGS", repr([*args, "--out", str(out)])).replace("START_OFFSET", "0.0")
    res = run_process(root, args, out, child=child)
    line = next(ln for ln in res["stdout"].splitlines() if ln.startswith("PHASES "))
    p = {k: tuple(v) for k, v in json.loads(line[len("PHASES "):]).items()}
    inner = sum(p.get(k, (0, 0))[0] for k in ("evaluations", "checkpoints", "tracking"))
    inner_cpu = sum(p.get(k, (0, 0))[1] for k in ("evaluations", "checkpoints", "tracking"))
    train = p.pop("train")
    # references are written after train() returns, inside run_training: only the hooks called in train() are inside
    p["training"] = (train[0] - inner, train[1] - inner_cpu)
    total = p.pop("total_in_process")
    # the process beyond the in-process clock: interpreter start-up before the first line, and exit
    p["other"] = (res["wall"] - sum(v[0] for v in p.values()), res["cpu"] - sum(v[1] for v in p.values()))
    p["_process"] = (res["wall"], res["cpu"])
    p["_in_process"] = total
    p["_load"] = (res["load"], 0.0)
    mods = next((ln for ln in res["stdout"].splitlines() if ln.startswith("MODULES ")), "MODULES ")
    return p, mods[len("MODULES "):].split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--against", type=Path, help="another checkout: whole processes of both, alternating")
    ap.add_argument("--no-phases", action="store_true", help="only the whole-process comparison")
    ap.add_argument("--modules", action="store_true", help="also list the top-level packages the run imported")
    ap.add_argument("--keep", type=Path, help="keep the run folders here")
    opts, extra = ap.parse_known_args()
    args = ["train", *extra, "-q"] if extra else DEFAULT_ARGS
    with tempfile.TemporaryDirectory() as td:
        tmp = opts.keep or Path(td)
        tmp.mkdir(parents=True, exist_ok=True)
        trees = [("this", ROOT)] + ([("against", opts.against.resolve())] if opts.against else [])
        for r in range(0 if opts.no_phases else opts.repeats):
            for label, root in trees:
                shutil_rm(tmp / "phases")
                p, mods = phases(args, tmp, root)
                print(f"phases of `probe {' '.join(args)}`, {label} ({root}; repeat {r + 1}, load "
                      f"{p['_load'][0]:.2f} at start)")
                for k, (w, c) in p.items():
                    if not k.startswith("_"):
                        print(f"  {k:<12} {w:7.2f} s wall {c:7.2f} s CPU")
                w, c = p["_process"]
                print(f"  {'process':<12} {w:7.2f} s wall {c:7.2f} s CPU; "
                      f"not training: {w - p['training'][0]:.2f} s wall, {c - p['training'][1]:.2f} s CPU")
                if opts.modules:
                    print("  packages imported: " + " ".join(m for m in mods if not m.startswith("_")))
                sys.stdout.flush()
        if opts.against is None:
            return
        rows = []
        for r in range(opts.repeats):
            for label, root in (("this", ROOT), ("against", opts.against.resolve())):
                out = tmp / f"{label}{r}"
                shutil_rm(out)
                res = run_process(root, args, out)
                rows.append((label, r, res))
                print(f"{label:<8} repeat {r + 1}: {res['wall']:6.2f} s wall {res['cpu']:6.2f} s CPU "
                      f"(load {res['load']:.2f} at start)", flush=True)
            same = same_run(tmp / f"this{r}", tmp / f"against{r}")
            print(f"  repeat {r + 1}: metrics.jsonl, reference.json and checkpoints identical: {same}", flush=True)
        for label in ("this", "against"):
            w = sorted(res["wall"] for lab, _, res in rows if lab == label)
            c = sorted(res["cpu"] for lab, _, res in rows if lab == label)
            print(f"{label:<8} median {w[len(w) // 2]:.2f} s wall, {c[len(c) // 2]:.2f} s CPU "
                  f"(range {w[0]:.2f}-{w[-1]:.2f} wall, {c[0]:.2f}-{c[-1]:.2f} CPU)")


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
