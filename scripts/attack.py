"""Adversarial run: hundreds of attacks on probe's commands, each classified as held or broken.

    python scripts/attack.py --out DIR [--jobs 2] [--quick] [--only CLASS,...] [--seed 0]

Each attack runs in its own temporary folder (under DIR), in a child process forked from this one (probe and torch
already imported, so an attack costs its work, not an interpreter start) with a memory limit (RLIMIT_AS) and a CPU
limit (RLIMIT_CPU) set by resource.setrlimit, and a wall-clock limit enforced from here (the child is killed).
Commands run in-process through ``probe.cli.main`` (stdout and stderr captured), or as real ``python -m probe.cli``
processes where the attack is a signal (kills during training and checkpoint writes, Ctrl-C while modules load).

An attack **held** when the command gave a clear one-line error (``error: ...``, no traceback) with a non-zero exit,
or a correct result (checked against a reference: bit-identical weights and metrics rows after a resume, the file
unchanged, the damage harmless), and nothing was lost. It is **broken** on a traceback, a hang (wall limit), a kill
by the memory limit, a silent wrong answer, or data lost. The report prints counts per class and every broken
attack with its reason; ``DIR/attacks.jsonl`` holds one line per attack. Not part of the test suite.

Classes: checkpoint-damage (random byte damage, truncation), checkpoint-crafted (shared references, deep nesting,
pickles that would run code, whole models, huge claimed shapes, another run's weights, a renamed checksum key),
run-files (metrics, config, task, reference files damaged), kill-train (SIGKILL / SIGTERM / SIGINT mid-run, then
resume), kill-write (SIGKILL inside a checkpoint write, then resume), cli-values (sizes, counts, types out of
range), sweep-spec (hostile specs and damaged sweep folders), npz, idx-cifar (user data folders), locks, targets
(special files as --csv / --json targets), signals-edge (Ctrl-C while modules load).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
import probe.cli  # noqa: E402,F401  (imported once here: every child starts with it)
from probe.run.checkpoint import list_checkpoints, step_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEM_LIMIT = 4 * 2**30
CPU_LIMIT = 120
TINY = ["--task", "mnist1d", "--width", "16", "--depth", "1", "--steps", "50", "--batch-size", "50", "--eval-every",
        "25", "--log-every", "10", "--checkpoints", "4", "--track", "none", "-q"]


# -- running a command -----------------------------------------------------------------------------------------
class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    @property
    def text(self):
        return self.out + self.err

    def one_line_error(self) -> bool:
        """A non-zero exit with an ``error: ...`` (or ``interrupted``) line and no traceback."""
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        return (self.rc not in (0, None) and "Traceback" not in self.text and bool(lines)
                and (lines[-1].startswith("error:") or lines[-1].startswith("interrupted")))

    def __repr__(self):
        tail = (self.err.strip().splitlines() or self.out.strip().splitlines() or [""])[-1]
        return f"rc={self.rc}: {tail[:200]}"


def cli(*args) -> Result:
    """``probe ARGS`` in this process, as the console script runs it; an exception that escapes is a traceback."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["probe", *map(str, args)]
    rc = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                probe.cli.main(quick_exit=False)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - what escapes the command is what a user would see as a traceback
        err.write(traceback.format_exc())
        rc = 1
    finally:
        sys.argv = old
    return Result(rc, out.getvalue(), err.getvalue())


def proc(*args, timeout=300, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "probe.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def held(ok: bool, why: str):
    return ("held" if ok else "broken", why)


def error_or(res: Result, ok_when_zero=None):
    """Held: a one-line error, or exit 0 where ``ok_when_zero()`` confirms the result is right."""
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    if res.one_line_error():
        return held(True, repr(res))
    if res.rc == 0 and ok_when_zero is not None:
        ok = ok_when_zero()
        return held(ok, ("correct result" if ok else "silent wrong answer") + f" ({res!r})")
    return held(False, f"no one-line error: {res!r}")


# -- fixtures ------------------------------------------------------------------------------------------------------
def tensors(path):
    try:
        ck = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001
        return None
    return {k: v.clone() for k, v in ck["state_dict"].items()} if isinstance(ck, dict) and "state_dict" in ck else None


def same_tensors(a, b) -> bool:
    return a is not None and b is not None and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_run(a: Path, b: Path) -> bool:
    """Bit-identical metrics rows and weights at every checkpoint step."""
    if (a / "metrics.jsonl").read_text() != (b / "metrics.jsonl").read_text():
        return False
    sa, sb = [s for s, _ in list_checkpoints(a)], [s for s, _ in list_checkpoints(b)]
    return sa == sb and all(same_tensors(tensors(step_path(a, s)), tensors(step_path(b, s))) for s in sa)


def copy_run(base: Path, to: Path) -> Path:
    shutil.copytree(base, to, ignore=shutil.ignore_patterns(".lock"))
    return to


# -- attacks --------------------------------------------------------------------------------------------------------
def a_ckpt_damage(base, rng, how, command):
    run = copy_run(base, Path("r"))
    p = step_path(run, 50)
    data = bytearray(p.read_bytes())
    if how == "flip":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        data = data[: rng.randrange(1, len(data))]
    elif how == "zero-block":
        i, k = rng.randrange(len(data)), rng.randint(8, 256)
        data[i:i + k] = bytes(len(data[i:i + k]))
    elif how == "append":
        data += os.urandom(rng.randint(1, 100))
    p.write_bytes(bytes(data))
    orig = tensors(step_path(base, 50))
    if command == "check":
        res = cli("check", run)
        if "Traceback" in res.text:
            return held(False, f"traceback: {res!r}")
        if res.rc == 1 and "step_50" in res.text:
            return held(True, "reported by check")
        return held(res.rc == 0 and same_tensors(tensors(p), orig), f"check said sound: {res!r}")
    res = cli("analyze", run, "--no-data")
    return error_or(res, lambda: same_tensors(tensors(p), orig))


def _save(obj, path="c.pt"):
    torch.save(obj, path)
    return Path(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def a_ckpt_crafted(base, rng, kind, command):
    run = copy_run(base, Path("r"))
    target = step_path(run, 50)
    ck = torch.load(target, weights_only=True)
    x = [torch.zeros(2)]
    if kind == "shared-lists":
        for _ in range(rng.randint(30, 60)):
            x = [x, x]
        ck["junk"] = x
    elif kind == "deep":
        for _ in range(rng.randint(150, 900)):
            x = [x]
        ck["junk"] = x
        sys.setrecursionlimit(10_000)  # for torch.save's pickler, writing the attack
    elif kind == "self-list":
        x.append(x)
        ck["junk"] = x
    elif kind == "pickle-code":
        target.write_bytes(pickle.dumps({"state_dict": Evil()}))
        ck = None
    elif kind == "torch-code":
        torch.save({"state_dict": Evil()}, target)
        ck = None
    elif kind == "whole-model":
        torch.save(torch.nn.Linear(40, 16), target)
        ck = None
    elif kind == "stride0":
        ck["state_dict"]["layers.0.weight"] = torch.zeros(1).expand(10**6, 10**6)
    elif kind == "int-keys":
        ck = {0: torch.zeros(16, 40), 1: torch.zeros(10, 16)}
    elif kind == "renamed-checksums":
        torch.save(ck, target)
        data = target.read_bytes().replace(b"checksums", b"checksumz")
        target.write_bytes(data)
        ck = None
    elif kind == "other-width":
        ck = torch.load(step_path(OTHER_WIDTH, 50), weights_only=True)
    elif kind == "other-seed":
        ck = torch.load(step_path(OTHER_SEED, 50), weights_only=True)
    elif kind == "npz-as-pt":
        np.savez(target.with_suffix(".npz"), a=np.zeros(3))
        target.write_bytes(target.with_suffix(".npz").read_bytes())
        ck = None
    elif kind == "empty":
        target.write_bytes(b"")
        ck = None
    elif kind == "text":
        target.write_text("hello, not a checkpoint\n")
        ck = None
    elif kind == "folder":
        target.unlink()
        target.mkdir()
        ck = None
    elif kind == "fifo":
        target.unlink()
        os.mkfifo(target)
        ck = None
    if ck is not None:
        torch.save(ck, target)
    if command == "check":
        res = cli("check", run)
        ok = "Traceback" not in res.text and res.rc == 1 and not Path("PWNED").exists()
        if kind == "other-seed":  # a checkpoint written by another seed's run: check should say so
            ok = ok and "seed" in res.text
        return held(ok, f"{'PWNED ' if Path('PWNED').exists() else ''}{res!r}")
    if command == "resume":
        (run / "checkpoints" / "step_50.pt").rename(run / "checkpoints" / "step_60.pt") \
            if kind not in ("folder", "fifo") else None
        res = cli("train", "--resume", run)
    else:
        res = cli("analyze", run, "--no-data")
    if Path("PWNED").exists():
        return held(False, "code ran")
    if kind == "other-seed" and res.rc == 0:  # analyze must not measure movement against this folder's seed-0 start
        return held("not this" in res.text or "another" in res.text or "differs" in res.text
                    or "movement" not in res.text,
                    f"another seed's checkpoint measured against this folder's start without a note: {res!r}")
    if kind == "other-width" and res.rc == 0:
        return held("no init reference" in res.text, repr(res))
    if kind == "renamed-checksums" and res.rc == 0:
        return held(False, f"a checkpoint with its checksum key renamed loaded unverified: {res!r}")
    if kind in ("shared-lists", "deep", "self-list", "pickle-code", "torch-code", "whole-model", "stride0", "int-keys",
                "npz-as-pt", "empty", "text", "folder", "fifo"):
        return error_or(res)
    return error_or(res, lambda: True)


def a_run_files(base, rng, name, how, command):
    run = copy_run(base, Path("r"))
    p = run / name
    if not p.exists():  # a run without tracked measures has no reference.json: give it one to damage
        p.write_text(json.dumps({"step": 50, "gaussian": {"ipr": 0.07, "hoyer": 0.23}}))
    before = p.read_bytes() if p.is_file() else None
    good_rows = None
    if how == "junk":
        p.write_bytes(os.urandom(rng.randint(1, 200)))
    elif how == "not-json":
        p.write_text("{not json")
    elif how == "list":
        p.write_text("[1, 2, 3]")
    elif how == "deep":
        p.write_text("[" * 100_000)
    elif how == "folder":
        p.unlink()
        p.mkdir()
    elif how == "empty":
        p.write_text("")
    elif how == "wrong-types":
        d = json.loads(before)
        for k in list(d)[:3]:
            d[k] = {"x": [1]} if not isinstance(d[k], dict) else 5
        p.write_text(json.dumps(d))
    elif how == "bad-line":  # one middle metrics row damaged
        lines = before.decode().splitlines(keepends=True)
        i = rng.randrange(1, len(lines) - 1)
        good_rows = [ln for j, ln in enumerate(lines) if j != i]
        lines[i] = lines[i][: len(lines[i]) // 2] + "\x00garbage\n"
        p.write_text("".join(lines))
    elif how == "half-line":
        p.write_bytes(before + b'{"step": 51, "train_')
        good_rows = before.decode().splitlines(keepends=True)
    if command == "resume":  # drop the last checkpoint so that resume has steps to train
        ckpts = list_checkpoints(run)
        ckpts[-1][1].unlink()
    args = {"check": ("check", run), "analyze": ("analyze", run, "--no-data"),
            "figures": ("figures", run, "--out", "f"), "resume": ("train", "--resume", run),
            "summary": ("sweep", run.parent, "--summary")}[command]
    res = cli(*args)
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    if good_rows is not None and p.is_file():  # no good row may be lost
        now = p.read_text(errors="replace")
        aside = "".join(q.read_text(errors="replace") for q in run.glob("metrics*") if q != p and q.is_file())
        lost = [r for r in good_rows if r.strip() and r not in now and r not in aside]
        if lost:
            return held(False, f"{len(lost)} good metrics rows lost ({res!r})")
    if command == "check":
        return held(res.rc in (0, 1), repr(res))
    if res.rc == 0:
        return held(True, f"completed ({res!r})")
    return error_or(res)


def a_kill_train(base, rng, signum, ref):
    delay = rng.uniform(2.0, 12.0)
    p = proc("train", *TINY, "--steps", "400", "--checkpoints", "8", "--out", "r")
    time.sleep(delay)
    p.send_signal(signum)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        return held(False, "did not stop within 120 s of the signal")
    if "Traceback" in err:
        return held(False, f"traceback after {signum.name} at {delay:.1f} s")
    if signum != signal.SIGKILL and p.returncode not in (0, 128 + signum, 2, -signum):
        return held(False, f"{signum.name} at {delay:.1f} s: exit {p.returncode}")
    edge = signum != signal.SIGKILL and p.returncode == -signum
    run = Path("r")
    if list_checkpoints(run):
        res = cli("train", "--resume", run)
        if res.rc != 0 and "already finished" not in res.text and "done" not in res.text:
            if not list_checkpoints(run) or res.one_line_error():
                pass
            else:
                return held(False, f"resume failed: {res!r}")
    else:  # killed before the first checkpoint: start again
        shutil.rmtree(run, ignore_errors=True)
        res = cli("train", *TINY, "--steps", "400", "--checkpoints", "8", "--out", run)
    ok = same_run(run, ref)
    why = f"{signum.name} at {delay:.1f} s, exit {p.returncode}; resumed {'bit-identical' if ok else 'DIFFERENT'}"
    if edge:
        return held(False, why + f" (exit {p.returncode}: the signal killed it before its handler was set)")
    return held(ok, why)


def a_kill_write(base, rng, ref):
    """SIGKILL inside a checkpoint write (torch.save half-way), then resume: bit-identical to the reference."""
    at = rng.choice([0, 1, 2, 3, 4])
    pid = os.fork()
    if pid == 0:
        import probe.run.checkpoint as cp

        real, count = torch.save, [0]

        def dying(obj, f, *a, **k):
            count[0] += 1
            if count[0] > at:
                buf = io.BytesIO()
                real(obj, buf, *a, **k)
                f.write(buf.getvalue()[: rng.randrange(1, len(buf.getvalue()))])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(obj, f, *a, **k)

        cp.torch.save = dying
        try:
            with open(os.devnull, "w") as dn, redirect_stdout(dn), redirect_stderr(dn):
                sys.argv = ["probe", "train", *TINY, "--steps", "400", "--checkpoints", "8", "--out", "r"]
                probe.cli.main(quick_exit=False)
        finally:
            os._exit(3)
    os.waitpid(pid, 0)
    run = Path("r")
    if list_checkpoints(run):
        res = cli("train", "--resume", run)
    else:
        shutil.rmtree(run, ignore_errors=True)
        res = cli("train", *TINY, "--steps", "400", "--checkpoints", "8", "--out", run)
    if "Traceback" in res.text:
        return held(False, f"traceback on resume: {res!r}")
    ok = same_run(run, ref)
    return held(ok, f"killed in write {at + 1}; resumed {'bit-identical' if ok else 'DIFFERENT'} ({res!r})")


def a_cli_values(base, rng, args):
    res = cli("train", *args, "--out", "r")
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    made = Path("r").exists() and list_checkpoints(Path("r"))
    if res.rc == 0:
        return held(False, f"accepted: {res!r}")
    return held(res.one_line_error() and not made, repr(res) + (" (a run folder was left)" if made else ""))


def a_sweep(base, rng, text, extra):
    Path("s.toml").write_text(text)
    res = cli("sweep", "s.toml", "--out", "sw", *extra)
    here = set(os.listdir("."))  # a run name like ../x must stay inside the sweep folder (names are made safe)
    return error_or(res, lambda: here <= {"s.toml", "sw", "deep.json", "list.json", "result.json"}
                    and not Path("../x").exists())


def a_sweep_folder(base, rng, fname, text):
    shutil.copytree(SWEEP, "sw")
    p = Path("sw") / fname
    p.write_text(text)
    before = sorted(str(q) for q in Path("sw").rglob("step_*.pt"))
    res = cli("sweep", "sw.toml" if Path("sw.toml").exists() else SWEEP_SPEC, "--out", "sw")
    res2 = cli("sweep", "sw", "--summary")
    after = sorted(str(q) for q in Path("sw").rglob("step_*.pt"))
    for r in (res, res2):
        if "Traceback" in r.text:
            return held(False, f"traceback: {r!r}")
    if not set(before) <= set(after):
        return held(False, "checkpoints lost")
    return held((res.rc == 0 or res.one_line_error()) and (res2.rc == 0 or res2.one_line_error()),
                f"{res!r} / summary {res2!r}")


def a_npz(base, rng, kind):
    x = np.random.default_rng(0).normal(size=(60, 40)).astype(np.float32)
    y = np.arange(60) % 3
    arrays = dict(x=x, y=y, input_shape=np.array([1, 40]))
    if kind == "missing-y":
        arrays.pop("y")
    elif kind == "nan":
        arrays["x"][3, 3] = np.nan
    elif kind == "inf-y":
        arrays["y"] = np.full(60, np.inf)
    elif kind == "labels-negative":
        arrays["y"] = y - 2
    elif kind == "labels-huge":
        arrays["y"] = y * 10**12
    elif kind == "shape-mismatch":
        arrays["input_shape"] = np.array([1, 41])
    elif kind == "shape-zero":
        arrays["input_shape"] = np.array([0, 40])
    elif kind == "shape-neg":
        arrays["input_shape"] = np.array([-1, -40])
    elif kind == "shape-4d":
        arrays["input_shape"] = np.array([1, 2, 2, 10])
    elif kind == "len-mismatch":
        arrays["y"] = y[:50]
    elif kind == "one-sample":
        arrays = dict(x=x[:1], y=y[:1], input_shape=np.array([1, 40]))
    elif kind == "empty":
        arrays = dict(x=x[:0], y=y[:0], input_shape=np.array([1, 40]))
    elif kind == "object":
        arrays["y"] = np.array([{"a": 1}] * 60, dtype=object)
    elif kind == "strings":
        arrays["y"] = np.array(["a"] * 60)
    elif kind == "complex":
        arrays["x"] = x.astype(np.complex64)
    elif kind == "x-test-only":
        arrays["x_test"] = x
    elif kind == "periodic-bad":
        arrays["periodic"] = np.array([1, 0, 1])
    elif kind == "x-1d":
        arrays["x"] = x[:, 0]
    elif kind == "huge-float":
        arrays["x"] = (x.astype(np.float64) * 1e300)
    if kind == "bomb":
        buf = io.BytesIO()
        np.savez_compressed(buf, x=np.zeros((20_000, 40_000), np.float32), y=np.zeros(20_000, np.int64),
                            input_shape=np.array([1, 40_000]))
        Path("d.npz").write_bytes(buf.getvalue())
    elif kind == "not-zip":
        Path("d.npz").write_bytes(os.urandom(500))
    elif kind == "truncated":
        np.savez(Path("d.npz"), **arrays)
        Path("d.npz").write_bytes(Path("d.npz").read_bytes()[:300])
    elif kind == "fifo":
        os.mkfifo("d.npz")
    elif kind == "folder":
        os.mkdir("d.npz")
    else:
        np.savez(Path("d.npz"), **arrays)
    res = cli("train", "--task", "npz:d.npz", "--steps", "2", "--width", "8", "--depth", "1", "-q", "--out", "r")
    made = Path("r").exists()
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    if res.rc == 0:
        return held(kind in ("labels-huge",) and False or kind in ("one-sample",) and False, f"accepted: {res!r}")
    return held(res.one_line_error() and not made, repr(res) + (" (a run folder was made)" if made else ""))


def _idx(data: np.ndarray, magic_dims=None) -> bytes:
    dims = data.shape if magic_dims is None else magic_dims
    return struct.pack(">HBB", 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + data.tobytes()


def a_idx(base, rng, kind):
    d = Path("mnist")
    d.mkdir()
    n = 50
    imgs, labels = np.zeros((n, 28, 28), np.uint8), (np.arange(n) % 10).astype(np.uint8)
    files = {"train-images-idx3-ubyte": _idx(imgs), "train-labels-idx1-ubyte": _idx(labels),
             "t10k-images-idx3-ubyte": _idx(imgs[:20]), "t10k-labels-idx1-ubyte": _idx(labels[:20])}
    if kind == "labels-10":
        files["train-labels-idx1-ubyte"] = _idx(labels + 1)
    elif kind == "labels-255":
        files["train-labels-idx1-ubyte"] = _idx(np.full(n, 255, np.uint8))
    elif kind == "short-header":
        files["train-images-idx3-ubyte"] = b"\x00\x00\x08"
    elif kind == "not-28":
        files["train-images-idx3-ubyte"] = _idx(np.zeros((n, 20, 20), np.uint8))
    elif kind == "empty":
        files["train-images-idx3-ubyte"] = b""
    elif kind == "truncated":
        files["train-images-idx3-ubyte"] = _idx(imgs)[:1000]
    elif kind == "dims-huge":
        files["train-images-idx3-ubyte"] = _idx(imgs[:1], magic_dims=(10**9, 28, 28))
    elif kind == "count-mismatch":
        files["train-labels-idx1-ubyte"] = _idx(labels[:30])
    elif kind == "bad-dtype":
        files["train-images-idx3-ubyte"] = struct.pack(">HBB", 0, 0x42, 3) + struct.pack(">III", n, 28, 28)
    if kind == "gz-bomb":
        files.pop("train-images-idx3-ubyte")
        big = struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 3_000_000, 28, 28)
        with gzip.open(d / "train-images-idx3-ubyte.gz", "wb", compresslevel=9) as f:
            f.write(big)
            chunk = bytes(2**24)
            for _ in range(140):
                f.write(chunk)
    for k, v in files.items():
        (d / k).write_bytes(v)
    res = cli("train", "--task", "mnist", "--task-opt", f"data_dir={d}", "--steps", "2", "--width", "8", "--depth",
              "1", "-q", "--out", "r")
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    return held(res.rc != 0 and res.one_line_error() and not Path("r").exists(),
                repr(res) + (" (a run folder was made)" if Path("r").exists() else ""))


class _Reconstruct:
    def __reduce__(self):
        return (np.core.multiarray._reconstruct, (np.ndarray, (10**13,), b"b"))


def a_cifar(base, rng, kind):
    d = Path("cifar")
    d.mkdir()
    n = 30
    batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(np.arange(n) % 10)}
    test = dict(batch)
    if kind == "data-300":
        batch[b"data"] = np.zeros(300, np.uint8)
    elif kind == "labels-bad":
        batch[b"labels"] = [10] * n
    elif kind == "labels-neg":
        batch[b"labels"] = [-1] * n
    elif kind == "not-pickle":
        pass
    elif kind == "missing-labels":
        batch.pop(b"labels")
    elif kind == "labels-count":
        batch[b"labels"] = [1] * 5
    for name, obj in (("data_batch_1", batch), ("test_batch", test)):
        (d / name).write_bytes(pickle.dumps(obj))
    if kind == "not-pickle":
        (d / "data_batch_1").write_bytes(os.urandom(400))
    elif kind == "reconstruct-huge":
        (d / "data_batch_1").write_bytes(pickle.dumps({b"data": _Reconstruct(), b"labels": [0]}))
    elif kind == "code":
        (d / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    res = cli("train", "--task", "cifar10", "--task-opt", f"data_dir={d}", "--steps", "2", "--width", "8", "--depth",
              "1", "-q", "--out", "r")
    if Path("PWNED").exists():
        return held(False, "code ran")
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    return held(res.rc != 0 and res.one_line_error() and not Path("r").exists(), repr(res))


def a_lock(base, rng, kind):
    run = copy_run(base, Path("r"))
    step_path(run, 50).unlink()
    lock = run / ".lock"
    if kind == "invalid-utf8":
        lock.write_bytes(b"\xff\xfe\x00garbage")
    elif kind == "dead-pid":
        lock.write_text(json.dumps({"pid": 999_999_9, "host": os.uname().nodename}))
    elif kind == "folder":
        lock.mkdir()
    elif kind == "empty":
        lock.write_text("")
    elif kind == "live-pid":
        lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "started": time.time()}))
    elif kind == "garbage-json":
        lock.write_text('{"pid": "abc"}')
    elif kind == "pid-1":
        lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    res = cli("train", "--resume", run)
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    if res.rc == 0:
        return held(same_tensors(tensors(step_path(run, 50)), tensors(step_path(base, 50))), f"resumed ({res!r})")
    return held(res.one_line_error(), repr(res))


def a_target(base, rng, option, kind):
    run = copy_run(base, Path("r"))
    t = Path("target")
    if kind == "fifo":
        os.mkfifo(t)
    elif kind == "folder":
        t.mkdir()
    elif kind == "missing-parent":
        t = Path("no/such/dir/x")
    elif kind == "socket":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(t))
    res = cli("analyze", run, "--no-data", option, t)
    if "Traceback" in res.text:
        return held(False, f"traceback: {res!r}")
    if kind in ("fifo", "socket") and not (t.exists() and not t.is_file()):
        return held(False, f"the {kind} was replaced by a regular file ({res!r})")
    return held(res.one_line_error(), repr(res))


def a_signal_edge(base, rng, delay):
    p = proc("train", *TINY, "--out", "r")
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        return held(False, "hang after Ctrl-C")
    if "Traceback" in err:
        return held(False, f"Ctrl-C at {delay:.2f} s: traceback ({err.strip().splitlines()[-1][:120]})")
    if p.returncode not in (0, 130, 2):
        return held(False, f"Ctrl-C at {delay:.2f} s: exit {p.returncode}")
    return held(True, f"Ctrl-C at {delay:.2f} s: exit {p.returncode}")


# -- the list of attacks ---------------------------------------------------------------------------------------------
CLI_VALUES = [
    ["--task", "nlgp", "--task-opt", "size=200000"], ["--task", "mqar", "--task-opt", "vocab=100000000"],
    ["--task", "mqar", "--task-opt", "length=1000000000"], ["--task", "mqar", "--task-opt", "n_train=1000000000000"],
    ["--task", "modadd", "--task-opt", "p=10000000"], ["--task", "add", "--task-opt", "D=1000000000"],
    ["--task", "mnist1d", "--task-opt", "num_samples=1000000000"], ["--task", "mnist1d", "--task-opt", "n_train=-1"],
    ["--task", "mnist1d", "--model", "cnn", "--model-opt", "stride=0"],
    ["--task", "mnist1d", "--model", "cnn", "--model-opt", "kernel=100000"],
    ["--task", "mnist1d", "--model", "cnn", "--model-opt", "layers=100000"],
    ["--task", "mnist1d", "--model", "cnn", "--model-opt", "channels=-2"],
    ["--task", "mnist1d", "--model", "lcn", "--model-opt", "channels=1000000"],
    ["--task", "nlgp", "--task-opt", "fresh=true", "--batch-size", "1000000000"],
    ["--task", "mnist1d", "--threads", "100000"], ["--task", "mnist1d", "--steps", "18446744073709551616"],
    ["--task", "mnist1d", "--steps", "0"], ["--task", "mnist1d", "--steps", "-5"], ["--task", "mnist1d", "--lr", "abc"],
    ["--task", "mnist1d", "--lr", "nan"], ["--task", "mnist1d", "--lr", "inf"], ["--task", "mnist1d", "--lr", "-1"],
    ["--task", "mnist1d", "--seed", "-1"], ["--task", "mnist1d", "--seed", "4294967296"],
    ["--task", "mnist1d", "--width", "0"], ["--task", "mnist1d", "--width", "1000000000"],
    ["--task", "mnist1d", "--depth", "100000"], ["--task", "nosuchtask"], ["--task", "mnist1d", "--model", "nosuch"],
    ["--task", "mnist1d", "--optimizer", "lbfgs"], ["--task", "mnist1d", "--track", "bogus"],
    ["--task", "mnist1d", "--checkpoints", "0"], ["--task", "mnist1d", "--checkpoints", "100000"],
    ["--task", "mnist1d", "--eval-every", "-1"], ["--task", "mnist1d", "--task-opt", "nonsense"],
    ["--task", "mnist1d", "--task-opt", "colour=3"], ["--task", "mnist1d", "--task-opt", "num_samples=abc"],
    ["--task", "mnist1d", "--task-opt", "data_seed=-3"], ["--task", "mnist1d", "--model-opt", "activation=bogus"],
    ["--task", "mnist1d", "--device", "cuda"], ["--task", "mnist1d", "--device", "tpu"],
    ["--task", "mnist1d", "--beta-lasso", "0.1"], ["--task", "mnist1d", "--warmup", "-1"],
    ["--task", "mnist1d", "--batch-size", "1e9"], ["--task", "mnist1d", "--log", "wandb"],
    ["--task", "mqar", "--task-opt", "vocab=3"], ["--task", "nlgp", "--task-opt", "size=1"],
    ["--task", "nlgp", "--task-opt", "dim=7"], ["--task", "parity", "--task-opt", "k=50"],
    ["--task", "modadd", "--task-opt", "train_frac=2"], ["--task", "npz:/no/such/file.npz"],
    ["--task", "mnist1d", "--config", "/no/such.toml"], ["--config", "deep.json"], ["--config", "list.json"],
    ["--task", "mnist1d", "--resume", "/no/such/run"], ["--task", "mnist1d", "--model", "transformer"],
    ["--task", "mqar", "--model", "cnn"], ["--task", "mnist1d", "--model", "cnn", "--width", "64"],
    ["--task", "mnist1d", "--task-opt", "clone=maybe"], ["--task", "mnist1d", "--on-nan", "explode"],
]

SPECS = {
    "huge-grid": '[base]\ntask = "mnist1d"\n[grid]\nseed = [' + ",".join(map(str, range(1000))) + ']\nlr = [' +
                 ",".join(["0.1"] * 1000) + "]\n",
    "final-5": 'final_measures = 5\n[base]\ntask = "mnist1d"\n',
    "final-bogus": 'final_measures = ["bogus"]\n[base]\ntask = "mnist1d"\n',
    "deep-toml": "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "long-name": '[base]\ntask = "mnist1d"\n[[variants]]\nname = "' + "x" * 300 + '"\n',
    "unknown-key": 'colour = 3\n[base]\ntask = "mnist1d"\n',
    "grid-not-list": '[base]\ntask = "mnist1d"\n[grid]\nseed = 3\n',
    "grid-empty": '[base]\ntask = "mnist1d"\n[grid]\nseed = []\n',
    "dup-names": ('[base]\ntask = "mnist1d"\n[[variants]]\nname = "a"\nwidth = 8\n'
                  '[[variants]]\nname = "a"\nwidth = 16\n'),
    "bad-task": '[base]\ntask = "nosuch"\n',
    "bad-type": '[base]\ntask = "mnist1d"\nsteps = "many"\n',
    "bad-procedure": '[base]\ntask = "mnist1d"\nprocedure = "magic"\n',
    "procedure-opts-type": '[base]\ntask = "mnist1d"\nprocedure = "imp"\nprocedure_opts = { rounds = "x" }\n',
    "variants-not-tables": '[base]\ntask = "mnist1d"\nvariants = [1, 2]\n',
    "dotted-bad": '[base]\ntask = "mnist1d"\n[grid]\n"config.x" = [1]\n',
    "not-toml": "this is { not toml",
    "binary": "\x00\x01\x02",
    "scale-missing": '[base]\ntask = "mnist1d"\n',
    "huge-task-in-grid": '[base]\ntask = "nlgp"\n[grid]\n"task_opts.size" = [200000]\n',
    "threads-grid": '[base]\ntask = "mnist1d"\n[grid]\nthreads = [100000]\n',
    "steps-huge": '[base]\ntask = "mnist1d"\nsteps = 18446744073709551616\n',
    "name-slash": 'name = "../../etc"\n[base]\ntask = "mnist1d"\n[[variants]]\nname = "../x"\n',
}
SPEC_EXTRA = {"scale-missing": ["--scale", "full"]}


def attacks(rng: random.Random, quick: bool):
    out = []
    n = (lambda k: max(1, k // 4)) if quick else (lambda k: k)
    for i in range(n(40)):
        out.append(("checkpoint-damage", f"{i}", a_ckpt_damage, (rng.choice(["flip", "flip", "truncate", "zero-block",
                                                                            "append"]), "check")))
    for i in range(n(24)):
        out.append(("checkpoint-damage", f"analyze-{i}", a_ckpt_damage, (rng.choice(["flip", "truncate", "zero-block"]),
                                                                         "analyze")))
    kinds = ["shared-lists", "deep", "self-list", "pickle-code", "torch-code", "whole-model", "stride0", "int-keys",
             "renamed-checksums", "other-width", "other-seed", "npz-as-pt", "empty", "text", "folder", "fifo"]
    for k in kinds:
        for c in ("analyze", "check", "resume")[: 1 if quick else 3]:
            out.append(("checkpoint-crafted", f"{k}/{c}", a_ckpt_crafted, (k, c)))
    files = {"metrics.jsonl": ["junk", "folder", "empty", "bad-line", "half-line"],
             "config.json": ["junk", "not-json", "list", "deep", "folder", "wrong-types"],
             "task.json": ["junk", "not-json", "list", "deep", "folder"],
             "reference.json": ["junk", "not-json", "list", "deep", "folder", "wrong-types"]}
    for name, hows in files.items():
        for how in hows:
            for c in ("check", "analyze", "figures", "resume")[: 2 if quick else 4]:
                out.append(("run-files", f"{name}/{how}/{c}", a_run_files, (name, how, c)))
    for i in range(n(12)):
        out.append(("kill-train", f"SIGKILL-{i}", a_kill_train, (signal.SIGKILL,)))
    for i in range(n(5)):
        out.append(("kill-train", f"SIGTERM-{i}", a_kill_train, (signal.SIGTERM,)))
        out.append(("kill-train", f"SIGINT-{i}", a_kill_train, (signal.SIGINT,)))
    for i in range(n(10)):
        out.append(("kill-write", f"{i}", a_kill_write, ()))
    for _i, args in enumerate(CLI_VALUES if not quick else CLI_VALUES[::3]):
        out.append(("cli-values", " ".join(args)[:80], a_cli_values, (args,)))
    for name, text in SPECS.items():
        for extra in (["--dry-run"], []) if not quick else (["--dry-run"],):
            out.append(("sweep-spec", f"{name}{' '.join(extra)}", a_sweep, (text, SPEC_EXTRA.get(name, []) + extra)))
    for fname, texts in (("sweep.json", ["not json", "[1]", '{"runs": 5}', '{"name": "x", "runs": [{"name": 3}]}',
                                         "[" * 100_000]),
                         ("run/sweep_run.json", ["not json", "[1]", '{"config": 5}', '{"config": {"task": 3}}']),
                         ("run/result.json", ["[1]", '{"measures": "abc"}', '{"status": 5}']),
                         ("run/procedure.json", ["[1]", '{"measures": "x"}', "5"])):
        for t in texts:
            out.append(("sweep-spec", f"{fname}={t[:20]}", a_sweep_folder, (fname, t)))
    for kind in ["missing-y", "nan", "inf-y", "labels-negative", "labels-huge", "shape-mismatch", "shape-zero",
                 "shape-neg", "shape-4d", "len-mismatch", "one-sample", "empty", "object", "strings", "complex",
                 "x-test-only", "periodic-bad", "x-1d", "huge-float", "bomb", "not-zip", "truncated", "fifo", "folder"]:
        out.append(("npz", kind, a_npz, (kind,)))
    for kind in ["labels-10", "labels-255", "short-header", "not-28", "empty", "truncated", "dims-huge",
                 "count-mismatch", "bad-dtype", "gz-bomb"]:
        out.append(("idx-cifar", f"idx/{kind}", a_idx, (kind,)))
    for kind in ["data-300", "labels-bad", "labels-neg", "not-pickle", "missing-labels", "labels-count",
                 "reconstruct-huge", "code"]:
        out.append(("idx-cifar", f"cifar/{kind}", a_cifar, (kind,)))
    for kind in ["invalid-utf8", "dead-pid", "folder", "empty", "live-pid", "garbage-json", "pid-1"]:
        out.append(("locks", kind, a_lock, (kind,)))
    for option in ("--csv", "--json"):
        for kind in ("fifo", "folder", "missing-parent", "socket"):
            out.append(("targets", f"{option}/{kind}", a_target, (option, kind)))
    for i in range(n(6)):
        out.append(("signals-edge", f"{i}", a_signal_edge, (0.2 + 0.25 * i,)))
    return out


# -- running them -------------------------------------------------------------------------------------------------
def run_child(fn, args, base, seed, folder: Path, result_file: Path):
    os.chdir(folder)
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT, CPU_LIMIT))
    os.setsid()
    try:
        verdict, why = fn(base, random.Random(seed), *args)
    except BaseException as e:  # noqa: BLE001 - the harness's own failure is reported, not hidden
        verdict, why = "broken", f"attack raised {type(e).__name__}: {str(e)[:200]}"
        if isinstance(e, MemoryError):
            why = "MemoryError (memory limit)"
    result_file.write_text(json.dumps({"verdict": verdict, "why": why}))
    os._exit(0)


def main(argv=None):
    global OTHER_WIDTH, OTHER_SEED, SWEEP, SWEEP_SPEC
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="working folder (one subfolder per attack)")
    ap.add_argument("--jobs", type=int, default=2, help="attacks at once")
    ap.add_argument("--quick", action="store_true", help="about a quarter of the attacks (a few minutes)")
    ap.add_argument("--only", default=None, help="comma-separated classes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=240, help="wall-clock seconds per attack")
    a = ap.parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    fx = out / "fixtures"
    if not (fx / "done").exists():
        shutil.rmtree(fx, ignore_errors=True)
        fx.mkdir()
        for name, extra in (("base", []), ("wide", ["--width", "32"]), ("seed1", ["--seed", "1"]),
                            ("long", ["--steps", "400", "--checkpoints", "8"])):
            r = subprocess.run([sys.executable, "-m", "probe.cli", "train", *TINY, *extra, "--out", fx / name],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"error: fixture {name} failed: {r.stderr.strip()[-300:]}")
        (fx / "sw.toml").write_text('[base]\ntask = "mnist1d"\nsteps = 4\nwidth = 8\ndepth = 1\ncheckpoints = 2\n'
                                    'track = "none"\n[[variants]]\nname = "run"\n')
        r = subprocess.run([sys.executable, "-m", "probe.cli", "sweep", fx / "sw.toml", "--out", fx / "sweep"],
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"error: sweep fixture failed: {r.stderr.strip()[-300:]}")
        (fx / "done").write_text("")
    base, OTHER_WIDTH, OTHER_SEED = fx / "base", fx / "wide", fx / "seed1"
    SWEEP, SWEEP_SPEC = fx / "sweep", fx / "sw.toml"
    long_ref = fx / "long"
    (fx / "deep.json").write_text("[" * 100_000)
    (fx / "list.json").write_text("[1, 2]")
    rng = random.Random(a.seed)
    todo = attacks(rng, a.quick)
    if a.only:
        keep = set(a.only.split(","))
        todo = [t for t in todo if t[0] in keep]
    print(f"{len(todo)} attacks, {a.jobs} at once (fixtures {time.time() - t0:.0f} s)", flush=True)
    results, running = [], {}
    log = open(out / "attacks.jsonl", "w")
    queue = list(enumerate(todo))
    while queue or running:
        while queue and len(running) < a.jobs:
            i, (cls, name, fn, args) = queue.pop(0)
            folder = out / f"a{i:04d}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for f in ("deep.json", "list.json"):
                shutil.copy(fx / f, folder / f)
            if fn in (a_kill_train, a_kill_write):
                args = (*args, long_ref)
            pid = os.fork()
            if pid == 0:
                run_child(fn, args, base, a.seed * 100_003 + i, folder, folder / "result.json")
            running[pid] = (i, cls, name, folder, time.time())
        time.sleep(0.05)
        for pid, (i, cls, name, folder, started) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            timed_out = not done and time.time() - started > a.timeout
            if timed_out:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
            if not done and not timed_out:
                continue
            del running[pid]
            rf = folder / "result.json"
            if timed_out:
                rec = {"verdict": "broken", "why": f"hang: killed after {a.timeout:.0f} s"}
            elif rf.exists():
                rec = json.loads(rf.read_text())
            else:
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                rec = {"verdict": "broken",
                       "why": "the attack process died "
                              f"({'signal ' + str(sig) if sig else 'exit ' + str(os.WEXITSTATUS(status))}; "
                              "memory or CPU limit?)"}
            rec.update(index=i, cls=cls, name=name, seconds=round(time.time() - started, 1))
            results.append(rec)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if rec["verdict"] == "held":
                shutil.rmtree(folder, ignore_errors=True)
            print(f"[{len(results)}/{len(todo)}] {rec['verdict']:6s} {cls}: {name} ({rec['seconds']} s)"
                  + ("" if rec["verdict"] == "held" else f": {rec['why']}"), flush=True)
    log.close()
    print(f"\n{'class':20s} {'held':>5s} {'broken':>6s}")
    classes = dict.fromkeys(r["cls"] for r in sorted(results, key=lambda r: r["index"]))
    for cls in classes:
        rs = [r for r in results if r["cls"] == cls]
        print(f"{cls:20s} {sum(r['verdict'] == 'held' for r in rs):5d} {sum(r['verdict'] != 'held' for r in rs):6d}")
    nh = sum(r["verdict"] == "held" for r in results)
    print(f"{'total':20s} {nh:5d} {len(results) - nh:6d}   "
          f"({time.time() - t0:.0f} s; folders of broken attacks kept in {out})")
    broken = sorted((r for r in results if r["verdict"] != "held"), key=lambda r: r["index"])
    if broken:
        print("\nbroken:")
        for r in broken:
            print(f"  a{r['index']:04d} {r['cls']}: {r['name']}: {r['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
