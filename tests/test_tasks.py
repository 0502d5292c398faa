import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from probe.config import ConfigError
from probe.tasks import make_task
from probe.tasks.nlgp import gp_covariance, nlgp_covariance

SMALL = {
    "mnist1d": {},
    "mnist1d-shuffled": {},
    "mnist": {},
    "digits": {},
    "nlgp": {"n_train": 200, "n_test": 50},
    "nlgp-gauss": {"n_train": 200, "n_test": 50, "dim": 2, "size": 6},
}


@pytest.mark.parametrize("name", list(SMALL))
def test_task_shapes_dtypes_and_geometry(name):
    t = make_task(name, SMALL[name], seed=0)
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.long
    assert t.x_train.shape[1] == t.x_test.shape[1] == t.geometry.n_inputs
    assert len(t.x_train) == len(t.y_train) and len(t.x_test) == len(t.y_test)
    assert int(t.y_train.max()) < t.n_outputs and int(t.y_train.min()) >= 0
    assert torch.isfinite(t.x_train).all()


@pytest.mark.parametrize("name", list(SMALL))
def test_task_is_deterministic_under_its_seed(name):
    a, b = make_task(name, SMALL[name], seed=3), make_task(name, SMALL[name], seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_nlgp_seed_changes_the_samples():
    a, b = make_task("nlgp", SMALL["nlgp"], seed=0), make_task("nlgp", SMALL["nlgp"], seed=1)
    assert not torch.equal(a.x_train, b.x_train)


def test_mnist1d_has_the_published_split():
    t = make_task("mnist1d")
    assert (len(t.x_train), len(t.x_test), t.geometry.spatial) == (4000, 1000, (40,))


def test_mnist1d_shuffled_is_a_stored_permutation_of_the_clean_task():
    clean, shuf = make_task("mnist1d"), make_task("mnist1d-shuffled")
    perm = shuf.info["perm"]
    assert sorted(perm) == list(range(40)) and perm != list(range(40))
    assert tuple(perm) == shuf.geometry.perm
    assert torch.equal(shuf.x_train, clean.x_train[:, perm])


@pytest.mark.parametrize("dim,size", [(1, 30), (2, 6)])
def test_gaussian_clone_has_the_nlgp_covariance(dim, size):
    opts = {"dim": dim, "size": size, "gain": 3.0, "n_train": 60000, "n_test": 10}
    a, b = make_task("nlgp", opts, seed=0), make_task("nlgp-gauss", opts, seed=0)
    n = a.geometry.n_inputs
    Cz = gp_covariance(a.geometry.spatial, 3.0, True)
    exact = nlgp_covariance(Cz, 3.0)
    for task in (a, b):
        x = task.x_train[task.y_train == 1].double().numpy()
        emp = np.cov(x.T)
        assert np.abs(emp - exact).max() < 0.05, task.name
    # the two differ in higher-order statistics: erf saturates, so NLGP pixels have kurtosis < 3
    kurt = lambda x: float((x.double() ** 4).mean() / (x.double() ** 2).mean() ** 2)  # noqa: E731
    assert kurt(a.x_train) < 2.5 < kurt(b.x_train)
    assert n == size**dim


def test_nlgp_pixels_have_unit_variance():
    t = make_task("nlgp", {"n_train": 20000, "gain": 10.0}, seed=0)
    assert abs(float(t.x_train.var()) - 1) < 0.03


def test_nlgp_fresh_batches_are_a_function_of_seed_and_step():
    t = make_task("nlgp", {"fresh": True, "n_train": 10, "n_test": 10}, seed=0)
    x1, y1 = t.sampler(0, 5, 32)
    x2, y2 = t.sampler(0, 5, 32)
    x3, _ = t.sampler(0, 6, 32)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)


def test_unknown_task_and_options_are_refused_with_the_valid_choices():
    with pytest.raises(ConfigError, match="valid tasks: .*mnist1d"):
        make_task("mnist2d")
    with pytest.raises(ConfigError, match="valid options: .*gain"):
        make_task("nlgp", {"gian": 2})
    with pytest.raises(ConfigError, match="gain must be float"):
        make_task("nlgp", {"gain": "high"})


# -- loaders on tiny files written in the real formats ---------------------------------------------------
def _write_idx(path, arr, gz=False):
    code = {np.uint8: 0x08}[arr.dtype.type]
    raw = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def test_mnist_loads_full_idx_files_from_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), rng.integers(0, 10, 12).astype(np.uint8)
    xte, yte = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5).astype(np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", xtr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", ytr)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xte, gz=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte, gz=True)
    t = make_task("mnist", {"data_dir": str(tmp_path)})
    assert t.x_train.shape == (12, 784) and t.x_test.shape == (5, 784)
    assert t.y_train.tolist() == ytr.tolist() and t.y_test.tolist() == yte.tolist()
    # standardization keeps pixel order: the brightest training pixel stays the brightest
    assert int(t.x_train.flatten().argmax()) == int(xtr.reshape(-1).argmax())


def test_truncated_idx_file_is_refused(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        _write_idx(tmp_path / name, np.zeros(3, np.uint8))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ConfigError, match="truncated IDX"):
        make_task("mnist", {"data_dir": str(tmp_path)})


def _write_cifar(folder, n_batches=2, per=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for name in [f"data_batch_{i + 1}" for i in range(n_batches)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, per).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
        batches.append(d)
    return batches


def test_cifar10_loads_python_batches_from_a_folder(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py")
    t = make_task("cifar10", {"data_dir": str(tmp_path)})
    assert t.x_train.shape == (8, 3072) and t.x_test.shape == (4, 3072)
    assert t.geometry.channels == 3 and t.geometry.spatial == (32, 32)
    assert t.y_train.tolist() == batches[0][b"labels"] + batches[1][b"labels"]
    # per-channel standardization: each channel of the training set has mean 0
    means = t.x_train.reshape(-1, 3, 1024).mean(dim=(0, 2))
    assert torch.allclose(means, torch.zeros(3), atol=1e-4)


def test_cifar10_batch_that_would_run_code_is_refused(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ConfigError, match="not a CIFAR-10 python batch"):
        make_task("cifar10", {"data_dir": str(tmp_path)})
    assert not marker.exists()


def test_cifar10_without_a_folder_says_what_it_needs():
    with pytest.raises(ConfigError, match="data_dir"):
        make_task("cifar10")


def test_npz_task_with_a_good_file(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "mine.npz"
    np.savez(p, x=rng.normal(size=(50, 2, 3, 4)), y=rng.integers(0, 3, 50), input_shape=np.array([2, 3, 4]),
             periodic=np.array(True))
    t = make_task(f"npz:{p}")
    assert t.geometry.channels == 2 and t.geometry.spatial == (3, 4) and t.geometry.periodic
    assert len(t.x_train) + len(t.x_test) == 50 and t.n_outputs == 3


def test_npz_with_real_targets_is_a_regression_task(tmp_path):
    p = tmp_path / "reg.npz"
    np.savez(p, x=np.ones((10, 8)), y=np.linspace(0, 1, 10), input_shape=np.array([1, 8]))
    assert make_task(f"npz:{p}").loss == "mse"


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.ones((5, 40)), "y": np.zeros(5, int)}, "missing input_shape"),
    ({"x": np.ones((5, 39)), "y": np.zeros(5, int), "input_shape": np.array([1, 40])}, "needs 40"),
    ({"x": np.ones((5, 40)), "y": np.zeros(4, int), "input_shape": np.array([1, 40])}, "5 samples but y has 4"),
])
def test_npz_task_with_a_bad_file_says_what_is_wrong(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(ConfigError, match=message):
        make_task(f"npz:{p}")


def test_npz_that_is_not_an_npz_file(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_text("hello")
    with pytest.raises(ConfigError, match="cannot read"):
        make_task(f"npz:{p}")
