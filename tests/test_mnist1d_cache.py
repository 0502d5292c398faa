"""Large MNIST-1D sets are generated once and read back from the cache folder (medium scale)."""

import numpy as np

from probe.tasks import images


def test_large_mnist1d_sets_are_cached_on_disk_and_read_back_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(images, "CACHE_MIN", 100)  # "large" from 100 examples, so the test stays fast
    images._mnist1d_arrays.cache_clear()
    try:
        made = images._mnist1d_arrays(7, 200)
        files = list(tmp_path.glob("mnist1d-*-seed7-n200.npz"))
        assert len(files) == 1
        images._mnist1d_arrays.cache_clear()
        def regenerate(*args):
            raise AssertionError("generated again instead of read from the cache")

        monkeypatch.setattr(images, "_generate_mnist1d", regenerate)
        read = images._mnist1d_arrays(7, 200)
        assert all(np.array_equal(a, b) for a, b in zip(made, read))
        assert list(tmp_path.glob("*.npz")) == files  # no temporary file left behind
    finally:
        images._mnist1d_arrays.cache_clear()


def test_small_sets_are_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_CACHE_DIR", str(tmp_path))
    images._mnist1d_arrays.cache_clear()
    try:
        images._mnist1d_arrays(7, 100)
        assert not list(tmp_path.iterdir())
    finally:
        images._mnist1d_arrays.cache_clear()
