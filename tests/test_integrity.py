"""Nothing lost, nothing silently wrong: damaged metrics lines, damaged checksums, deleted checkpoints, a checkpoint
of another run, special files as outputs, a poisoned data cache (docs/design.md §5). Each test failed before the
change it guards."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from probe.config import RunConfig
from probe.run.checkpoint import step_path
from probe.run.metrics_file import DAMAGED_FILE, read_metrics
from probe.run.loop import run_training

TINY = dict(task="mnist1d", width=16, depth=1, steps=50, batch_size=50, eval_every=10, log_every=5, checkpoints=6)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, slow_setup):
    out = tmp_path_factory.mktemp("finished") / "run"
    run_training(RunConfig(**TINY, track="default", track_every=10), out, progress=False)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def damage_line(run: Path, index: int) -> str:
    """Replace one byte in line ``index`` of metrics.jsonl so it is no longer JSON; returns the damaged line."""
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[index] = lines[index].replace('"step"', '"st\x01p', 1).replace("{", "[", 1)
    (run / "metrics.jsonl").write_text("".join(lines))
    return lines[index].rstrip("\n")


# -- a damaged metrics line ------------------------------------------------------------------------------------
def test_resume_of_a_finished_run_keeps_every_good_row_around_a_damaged_line(tmp_path, finished):
    """Before: resume read rows up to the damaged line and rewrote metrics.jsonl with those only, deleting the
    good rows after it (steps 20-50) for good, with exit 0."""
    run = copy_run(finished, tmp_path / "r")
    before = read_metrics(finished)
    bad = damage_line(run, 3)
    run_training(RunConfig(**TINY, track="default", track_every=10), run, progress=False, resume=True)
    after = read_metrics(run)
    assert after == [r for i, r in enumerate(before) if i != 3]  # only the damaged row is gone from the rows ...
    assert (run / DAMAGED_FILE).read_text() == bad + "\n"  # ... and it is kept aside, byte for byte


def test_resume_of_a_partial_run_keeps_rows_after_a_damaged_line_and_writes_the_rest(tmp_path, finished):
    """Before: a partial run resumed from step 19 lost the rows between a damaged line and its checkpoint (steps
    10-15), never rewritten."""
    run = copy_run(finished, tmp_path / "r")
    step_path(run, 50).unlink()  # a run killed after its row of step 30, its last checkpoint at step 19
    rows = [r for r in read_metrics(run) if r["step"] <= 30]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "reference.json").unlink()
    bad = damage_line(run, 1)  # step 5
    run_training(RunConfig(**TINY, track="default", track_every=10), run, progress=False, resume=True)
    assert read_metrics(run) == [r for r in read_metrics(finished) if r["step"] != 5]
    assert (run / DAMAGED_FILE).read_text() == bad + "\n"


# -- a damaged byte in the checksums' key name -------------------------------------------------------------------
def damage_checksums_key_and_a_weight(path: Path) -> None:
    """Change one byte of the key name ``checksums`` and one byte of the first weight, in place in the file."""
    data = bytearray(path.read_bytes())
    i = data.find(b"checksums")
    assert i > 0 and data.find(b"checksums", i + 1) < 0
    data[i + 3] ^= 0x01  # checksums -> chedksums
    W = torch.load(path, weights_only=True)["state_dict"]["layers.0.weight"]
    j = data.find(W.contiguous().view(torch.uint8).numpy().tobytes()[:32])
    assert j > 0
    data[j + 3] ^= 0x40  # one weight's exponent byte
    path.write_bytes(bytes(data))


def test_a_checkpoint_whose_checksums_key_is_damaged_is_refused_everywhere(tmp_path, finished):
    """Before: it read as an old checkpoint without checksums, and its damaged weight was accepted by load_checkpoint,
    `probe check` (a note only), analyze and --resume."""
    from probe.analysis.load import read_source
    from probe.run.check import check_run
    from probe.run.checkpoint import CheckpointError, load_checkpoint

    run = copy_run(finished, tmp_path / "r")
    path = step_path(run, 50)
    damage_checksums_key_and_a_weight(path)
    with pytest.raises(CheckpointError, match="key probe never writes"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="key probe never writes"):
        read_source(path)
    rep = check_run(run)
    assert [f.what for f in rep.problems] == ["checkpoints/step_50.pt"]
    with pytest.raises(CheckpointError, match="key probe never writes"):
        run_training(RunConfig(**TINY, track="default", track_every=10), run, progress=False, resume=True)


def test_checkpoints_written_before_checksums_still_load_unverified():
    from probe.run.checkpoint import CHECKSUMS, load_checkpoint

    ck = load_checkpoint(Path(__file__).parent / "data" / "run_v1" / "checkpoints" / "step_20.pt")
    assert CHECKSUMS not in ck and ck["step"] == 20


# -- probe check cross-checks checkpoints, rows and references -----------------------------------------------------
@pytest.mark.parametrize("how", ["all deleted", "folder replaced by a file", "last deleted", "last deleted, no refs"])
def test_check_reports_checkpoints_that_rows_or_references_show_were_written(tmp_path, finished, how):
    """Before: every checkpoint deleted (or checkpoints/ replaced by a file) in a finished run read "sound (fresh, no
    checkpoint yet)" though its metrics reach step 50 and reference.json exists."""
    from probe.run.check import check_run

    run = copy_run(finished, tmp_path / "r")
    if how == "all deleted":
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").mkdir()
    elif how == "folder replaced by a file":
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").write_text("x")
    else:
        step_path(run, 50).unlink()
        if how.endswith("no refs"):  # then rows reach step 50 only: an interrupt between row 50 and its checkpoint
            (run / "reference.json").unlink()
            rows = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
            (run / "metrics.jsonl").write_text("".join(rows[:-1]))  # rows to 45: step 50's checkpoint never came
    rep = check_run(run)
    if how.endswith("no refs"):
        assert rep.ok and rep.state.startswith("partial"), rep.lines()
        return
    assert not rep.ok and rep.state == "checkpoints lost", rep.lines()
    assert any("deleted or lost" in f.message for f in rep.problems), rep.lines()


def _recheck(ck: dict) -> dict:
    from probe.run.checkpoint import checksums

    ck["checksums"] = checksums(ck)
    return ck


@pytest.mark.parametrize("part", ["optimizer lr", "optimizer state shape", "scheduler step", "rng", "loss_accum"])
def test_check_refuses_crafted_training_state_as_resume_would(tmp_path, finished, part):
    """Before: check accepted a checkpoint whose (checksummed) optimizer, schedule or RNG state --resume refuses."""
    from probe.run.check import check_run
    from probe.run.checkpoint import load_checkpoint

    run = copy_run(finished, tmp_path / "r")
    path = step_path(run, 19)
    ck = load_checkpoint(path)
    if part == "optimizer lr":
        ck["optimizer"]["param_groups"][0]["lr"] = 10.0
    elif part == "optimizer state shape":
        st = ck["optimizer"]["state"][0]
        st["exp_avg"] = st["exp_avg"][:1]
    elif part == "scheduler step":
        ck["scheduler"]["last_epoch"] = 3
    elif part == "rng":
        ck["rng"]["numpy"]["pos"] = 9999
    else:
        ck["loss_accum"]["n"] = 7
    torch.save(_recheck(ck), path)
    rep = check_run(run)
    assert [f.what for f in rep.problems] == ["checkpoints/step_19.pt"], rep.lines()
    with pytest.raises(Exception, match="cannot resume"):
        step_path(run, 50).unlink()
        (run / "reference.json").unlink()
        rows = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
        (run / "metrics.jsonl").write_text("".join(r for r in rows if json.loads(r)["step"] <= 19))
        run_training(RunConfig(**TINY, track="default", track_every=10), run, progress=False, resume=True)


# -- analyze never mixes two runs ---------------------------------------------------------------------------------
def test_analyze_does_not_measure_a_checkpoint_of_another_run_against_this_runs_start(tmp_path, finished):
    """Before: with step_50.pt replaced by a seed-1 checkpoint, analyze reported its movement against this folder's
    seed-0 step_0.pt (1.976 where its own is 1.424), without a word."""
    from probe.analysis.report import analyze_checkpoint, analyze_steps

    other = tmp_path / "seed1"
    run_training(RunConfig(**TINY, seed=1, track="default", track_every=10), other, progress=False)
    run = copy_run(finished, tmp_path / "r")
    shutil.copy(step_path(other, 50), step_path(run, 50))
    rep = analyze_checkpoint(run, data=False)
    first = next(iter(rep.layers.values()))
    assert "movement" not in first and not rep.reference.get("init"), rep.reference.get("init")
    assert any("differs in seed" in n and "not this run's start" in n for n in rep.notes), rep.notes
    own = next(iter(analyze_checkpoint(other, data=False).layers.values()))
    assert own["movement"] > 0  # its own run measures it against its own start
    steps = analyze_steps(run, data=False)
    assert [r.step for r in steps] == [0, 1, 3, 7, 19]  # step 50 left out, with a note
    assert any("step(s) 50 left out" in n and "differs in seed" in n for n in steps[0].notes), steps[0].notes


# -- special files as outputs ---------------------------------------------------------------------------------------
def _special_files(tmp_path: Path) -> list[Path]:
    import os
    import stat

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    found = [fifo]
    try:  # a device node (a copy of /dev/null's numbers) where this user may make one
        dev = tmp_path / "null.json"
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        found.append(dev)
    except (PermissionError, OSError):
        pass
    return found


def test_atomic_write_refuses_a_special_file_and_leaves_it_as_it_was(tmp_path):
    """Before: the write renamed a regular file over the target, replacing a device node or a pipe."""
    import stat

    from probe.run.checkpoint import atomic_write

    for p in _special_files(tmp_path):
        mode = p.stat().st_mode
        with pytest.raises(OSError, match="not a regular file"):
            atomic_write(p, lambda f: f.write(b"x"))
        assert p.stat().st_mode == mode and not stat.S_ISREG(mode)
        assert not list(tmp_path.glob(".*tmp-*"))
    atomic_write(tmp_path / "plain.csv", lambda f: f.write(b"x"))  # a new or regular file is written as before
    atomic_write(tmp_path / "plain.csv", lambda f: f.write(b"y"))
    assert (tmp_path / "plain.csv").read_bytes() == b"y"


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--csv", "--json"])
def test_analyze_refuses_a_special_file_as_its_output_before_measuring(tmp_path, finished, option):
    import stat

    from typer.testing import CliRunner

    from probe.cli import app

    for p in _special_files(tmp_path):
        res = CliRunner().invoke(app, ["analyze", str(finished), "--no-data", option, str(p)])
        assert res.exit_code == 2 and "not a file" in res.output and "Traceback" not in res.output, res.output
        assert not stat.S_ISREG(p.stat().st_mode)


# -- the data cache ---------------------------------------------------------------------------------------------------
@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    from probe.tasks import images

    monkeypatch.setenv("PROBE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(images, "CACHE_MIN", 100)  # "large" from 100 examples, so the test stays fast
    images._mnist1d_arrays.cache_clear()
    yield tmp_path
    images._mnist1d_arrays.cache_clear()


def _entry(cache: Path) -> Path:
    (path,) = cache.glob("mnist1d-*-seed42-n500.npz")
    return path


def test_a_poisoned_cache_entry_is_regenerated_not_trained_on(small_cache):
    """Before: an entry for num_samples=500 holding 10 examples was read as the data set (a run trained on 10
    examples and reported test_acc 1.0)."""
    import numpy as np

    from probe.tasks import images, make_task

    task = make_task("mnist1d", {"num_samples": 500}, seed=0)
    assert len(task.x_train) == 400 and len(task.x_test) == 100
    path = _entry(small_cache)
    z = dict(np.load(path))
    poisoned = {k: v[:5] for k, v in z.items() if k != "crc"}  # 5 + 5 examples, a checksum of its own or none
    for with_crc in (False, True):
        crc = with_crc and images._arrays_crc(tuple(poisoned[k] for k in ("x", "y", "x_test", "y_test")))
        np.savez(path, **poisoned, **({"crc": np.array(crc)} if crc else {}))
        images._mnist1d_arrays.cache_clear()
        again = make_task("mnist1d", {"num_samples": 500}, seed=0)
        assert torch.equal(again.x_train, task.x_train) and torch.equal(again.y_test, task.y_test)
    labels = dict(np.load(path))  # a changed label under the old checksum
    labels["y"] = labels["y"].copy()
    labels["y"][0] = (labels["y"][0] + 1) % 10
    np.savez(path, **labels)
    images._mnist1d_arrays.cache_clear()
    assert torch.equal(make_task("mnist1d", {"num_samples": 500}, seed=0).y_train, task.y_train)


def test_a_cache_entry_written_without_a_checksum_is_regenerated_and_rewritten(small_cache, monkeypatch):
    import numpy as np

    from probe.tasks import images

    made = images._mnist1d_arrays(42, 500)
    path = _entry(small_cache)
    np.savez(path, **dict(zip(("x", "y", "x_test", "y_test"), made)))  # as probe wrote it before checksums
    images._mnist1d_arrays.cache_clear()
    calls = []
    real = images._generate_mnist1d
    monkeypatch.setattr(images, "_generate_mnist1d", lambda *a: calls.append(a) or real(*a))
    again = images._mnist1d_arrays(42, 500)
    assert calls and all(np.array_equal(a, b) for a, b in zip(made, again))
    assert "crc" in np.load(path)  # rewritten with one: read without generating next time
    images._mnist1d_arrays.cache_clear()
    calls.clear()
    images._mnist1d_arrays(42, 500)
    assert not calls


# -- decompression bombs --------------------------------------------------------------------------------------------
def _peak(fn) -> int:
    """Peak bytes traced (numpy's allocations included) while ``fn`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except Exception:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_an_npz_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    """Before: a 2.3 MB npz peaked at 5.4 GB; here 200 MB of zeros in a ~200 KB file, with a 20 MB limit."""
    import numpy as np

    from probe.config import ConfigError
    from probe.tasks import make_task

    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros((50_000, 1000), np.float32), y=np.zeros(50_000, np.int64),
                        input_shape=np.array([1, 1000]))
    assert bomb.stat().st_size < 2_000_000
    monkeypatch.setenv("PROBE_MAX_DATA_BYTES", str(20_000_000))
    with pytest.raises(ConfigError, match=r"would take 0\.2 GB in memory, more than the 0\.02 GB allowed"):
        make_task("npz", {"path": str(bomb)})
    assert _peak(lambda: make_task("npz", {"path": str(bomb)})) < 5_000_000
    monkeypatch.setenv("PROBE_MAX_DATA_BYTES", "1e9")  # within the limit it reads as before
    assert make_task("npz", {"path": str(bomb)}).x_train.shape[1] == 1000


def _idx(dims, dtype=0x08, body=None) -> bytes:
    import struct

    import numpy as np

    head = bytes([0, 0, dtype, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    return head + (bytes(int(np.prod(dims))) if body is None else body)


def test_a_gzipped_idx_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    """Before: a 2.3 MB gzip'd MNIST IDX peaked at 4.7 GB; here 100 MB of zeros, with a 20 MB limit."""
    import gzip

    from probe.config import ConfigError
    from probe.tasks.images import read_idx

    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx((127_551, 28, 28)), 9))
    assert p.stat().st_size < 2_000_000
    monkeypatch.setenv("PROBE_MAX_DATA_BYTES", str(20_000_000))
    with pytest.raises(ConfigError, match="more than the 0.02 GB allowed"):
        read_idx(p)
    assert _peak(lambda: read_idx(p)) < 5_000_000
    small = tmp_path / "small.gz"
    small.write_bytes(gzip.compress(_idx((10, 28, 28))))
    assert read_idx(small).shape == (10, 28, 28)


# -- MNIST and CIFAR folders a user names ---------------------------------------------------------------------------
def _mnist_folder(folder: Path, n=6, images=None, labels=None, label_type=0x08, gz=False) -> Path:
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    imgs = _idx((n, 28, 28)) if images is None else images
    labs = _idx((n,), label_type, bytes([i % 10 for i in range(n)])) if labels is None else labels
    for part in ("train", "t10k"):
        for kind, raw in (("images-idx3", imgs), ("labels-idx1", labs)):
            name = f"{part}-{kind}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


MNIST_BAD = {
    "label 10": (dict(labels=_idx((6,), 0x08, bytes([0, 1, 2, 3, 4, 10]))), "labels must be integers 0-9"),
    "label -1": (dict(labels=_idx((6,), 0x09, bytes([0, 1, 2, 3, 4, 255]))), "labels must be integers 0-9"),
    "short header": (dict(images=bytes([0, 0, 8, 3, 0, 0])), "IDX header cut short"),
    "27x27 images": (dict(images=_idx((6, 27, 27))), "MNIST images are N x 28 x 28"),
    "empty": (dict(n=0), "hold no images"),
    "empty file": (dict(images=b""), "not an IDX file"),
    "rank 0": (dict(images=bytes([0, 0, 8, 0])), "rank 0"),
    "damaged gzip": (dict(images=b"\x1f\x8b" + bytes(40)), "gzip"),
}


@pytest.mark.parametrize("how", list(MNIST_BAD))
def test_a_bad_mnist_folder_is_one_config_error_naming_the_problem(tmp_path, how):
    """Before: labels >= 10 or -1 crashed inside training after the run folder existed; a short header, images not
    28x28, an empty IDX: tracebacks."""
    from probe.config import ConfigError
    from probe.tasks import make_task

    kwargs, message = MNIST_BAD[how]
    folder = _mnist_folder(tmp_path / "mnist", **kwargs)
    with pytest.raises(ConfigError, match=message):
        make_task("mnist", {"data_dir": str(folder)})


@pytest.mark.slow
def test_probe_train_on_a_bad_mnist_folder_makes_no_run_folder(tmp_path):
    from typer.testing import CliRunner

    from probe.cli import app

    folder = _mnist_folder(tmp_path / "mnist", **MNIST_BAD["label 10"][0], gz=True)
    res = CliRunner().invoke(app, ["train", "--task", "mnist", "--task-opt", f"data_dir={folder}", "--steps", "5",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "labels must be integers 0-9" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


class _Huge:
    """Pickles as numpy's ``_reconstruct`` asked for an array of 10^13 bytes."""

    def __reduce__(self):
        import numpy as np

        return (np.ndarray.__reduce__(np.zeros(1, np.uint8))[0], (np.ndarray, (10**13,), b"b"))


def _cifar_folder(folder: Path, bad: dict | None = None) -> Path:
    import pickle

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "test_batch"):
        d = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        if name == "data_batch_1" and bad is not None:
            d = bad(d) if callable(bad) else bad
        (folder / name).write_bytes(pickle.dumps(d, protocol=4))
    return folder


CIFAR_BAD = {
    "pixel 300": (lambda d: {**d, b"data": d[b"data"].astype(np.int16) + 300 * (np.arange(3072) == 0)},
                  "pixel values must be 0-255"),
    "label 10": (lambda d: {**d, b"labels": [0, 1, 2, 10]}, "labels must be 0-9"),
    "label -1": (lambda d: {**d, b"labels": [0, 1, 2, -1]}, "labels must be 0-9"),
    "10^13 elements": (lambda d: {**d, b"data": _Huge()}, "claiming 10,000,000,000,000 bytes"),
    "not a dict": ([1, 2, 3], "not a dict"),
    "no data": ({b"labels": [0]}, "not a CIFAR-10 python batch"),
    "float data": (lambda d: {**d, b"data": d[b"data"].astype(np.float32)}, "not an array of integers"),
    "no images": (lambda d: {b"data": d[b"data"][:0], b"labels": []}, "holds no images"),
}
import numpy as np  # noqa: E402  (the table above builds arrays when called)


@pytest.mark.parametrize("how", list(CIFAR_BAD))
def test_a_bad_cifar_folder_is_one_config_error_naming_the_problem(tmp_path, how):
    """Before: data of 300 read as uint8 wrapped silently or raised; a pickle using the allowed _reconstruct to ask for
    10^13 elements, labels out of range, a batch that is not a dict: tracebacks or a crash in training."""
    from probe.config import ConfigError
    from probe.tasks import make_task

    bad, message = CIFAR_BAD[how]
    folder = _cifar_folder(tmp_path / "cifar", bad)
    with pytest.raises(ConfigError, match=message):
        make_task("cifar10", {"data_dir": str(folder)})
    assert _peak(lambda: make_task("cifar10", {"data_dir": str(folder)})) < 50_000_000


# -- a disk that fills up -------------------------------------------------------------------------------------------
FULL = dict(task="mnist1d", width=8, depth=1, steps=1000, batch_size=50, eval_every=500, log_every=1, checkpoints=3,
            track="none")


@pytest.fixture(scope="module")
def full_reference(tmp_path_factory, slow_setup):
    out = tmp_path_factory.mktemp("full") / "run"
    run_training(RunConfig(**FULL), out, progress=False)
    return out


def _file_size_limit(nbytes: int):
    """Within the block, no file grows past ``nbytes`` (writes past it fail with EFBIG, as on a full disk)."""
    import contextlib
    import resource
    import signal

    @contextlib.contextmanager
    def limited():
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
            signal.signal(signal.SIGXFSZ, handler)

    return limited()


@pytest.mark.parametrize("limit", [32_000, 24_000], ids=["metrics-row", "inside-torch.save"])
def test_a_disk_filling_up_stops_with_the_file_named_no_half_row_and_resume_is_identical(tmp_path, full_reference,
                                                                                          limit):
    """Files may grow to ``limit`` bytes only (as on a disk filling up). Before: a row cut by the limit stayed as a
    half line and the OSError from closing metrics.jsonl replaced the message naming it (the metrics-row case); the
    limit inside torch.save was already a StorageError and stays one."""
    from probe.run.errors import StorageError

    out = tmp_path / "r"
    with _file_size_limit(limit), pytest.raises(StorageError) as e:
        run_training(RunConfig(**FULL), out, progress=False)
    msg = str(e.value)
    assert ("metrics.jsonl" if limit == 32_000 else "step_") in msg and f"--resume {out}" in msg, msg
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())  # no half row
    run_training(RunConfig(**FULL), out, progress=False, resume=True)
    assert (out / "metrics.jsonl").read_text() == (full_reference / "metrics.jsonl").read_text()
    for s in (0, 1000):
        a = torch.load(step_path(out, s), weights_only=True)["state_dict"]
        b = torch.load(step_path(full_reference, s), weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_full_disk_reported_by_torchs_zip_writer_is_a_storage_error_and_resume_is_identical(tmp_path, monkeypatch,
                                                                                                full_reference):
    """Before: torch.save on a full disk raised RuntimeError("... unexpected pos 64 vs 0"), uncaught (a traceback).
    Here torch.save writes part of step 1's file and fails as torch's zip writer does there."""
    from probe.run.errors import StorageError

    real = torch.save

    def full_at_step_1(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 1:
            f.write(b"PK\x03\x04" + bytes(60))
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed\nunexpected pos 64 vs 0")
        return real(obj, f, *args, **kwargs)

    out = tmp_path / "r"
    monkeypatch.setattr(torch, "save", full_at_step_1)
    with pytest.raises(StorageError, match=r"cannot write .*step_1\.pt .*is the disk full.*--resume"):
        run_training(RunConfig(**FULL), out, progress=False)
    monkeypatch.undo()
    assert not list((out / "checkpoints").glob(".*")) and not step_path(out, 1).exists()
    run_training(RunConfig(**FULL), out, progress=False, resume=True)
    assert (out / "metrics.jsonl").read_text() == (full_reference / "metrics.jsonl").read_text()


# -- stale locks ----------------------------------------------------------------------------------------------------
def _old(path: Path) -> None:
    import os

    os.utime(path, (1, 1))  # written long ago: not one being written right now


def test_a_stale_lock_of_invalid_utf8_is_taken_over(tmp_path):
    """Before: reading it back during the take-over raised UnicodeDecodeError (a traceback)."""
    from probe.run.lock import RunLock, lock_holder

    (tmp_path / ".lock").write_bytes(b"\xff\xfe{pid: \x80}")
    _old(tmp_path / ".lock")
    assert lock_holder(tmp_path) == "an unreadable lock"
    lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == lock.info["pid"]
    lock.release()
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("how", ["a folder", "immutable"])
def test_a_lock_that_cannot_be_taken_over_is_one_config_error(tmp_path, monkeypatch, how):
    """Before: a .lock folder was renamed aside and then read as a file (IsADirectoryError); an immutable stale lock
    (chattr +i: renaming it fails with EPERM) raised PermissionError; both tracebacks."""
    import errno
    import os

    from probe.config import ConfigError
    from probe.run.lock import RunLock

    lock = tmp_path / ".lock"
    if how == "a folder":
        lock.mkdir()
        (lock / "inside").write_text("kept")
        message = "is a folder, not a lock probe wrote"
    else:
        lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname(), "start": None}))
        _old(lock)
        real = os.rename

        def immutable(src, dst, *a, **k):
            if Path(src) == lock:
                raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
            return real(src, dst, *a, **k)

        monkeypatch.setattr(os, "rename", immutable)
        message = r"cannot take over the stale lock .*Operation not permitted.*remove it by hand"
    with pytest.raises(ConfigError, match=message):
        RunLock(tmp_path).acquire()
    assert lock.exists() and (how != "a folder" or (lock / "inside").read_text() == "kept")
