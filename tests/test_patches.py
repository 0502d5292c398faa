"""The `patches` task: natural-image patches with disjoint training and test regions."""

import importlib.util

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probe.cli import app
from probe.config import ConfigError
from probe.tasks import make_task
from probe.seeding import stream
from probe.tasks.patches import IMAGES, _rngs, load_gray

runner = CliRunner()
HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Ten small images under the names the task reads: gray PNGs, RGB PNGs and a JPEG, of different sizes."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k, (_, fname) in enumerate(IMAGES):
        h, w = 96 + 8 * k, 128 - 4 * k
        a = rng.integers(0, 256, (h, w, 3) if k % 3 == 1 else (h, w), dtype=np.uint8)
        Image.fromarray(a).save(d / fname)
    return str(d)


def opts(folder, **kw):
    return {"data_dir": folder, "block": 32, "size": 8, "n_train": 400, "n_test": 200, **kw}


def covered(where, h, w, shapes):
    """Per image, the pixels that the patches at ``where`` (image, top, left) cover."""
    masks = [np.zeros(s, bool) for s in shapes]
    for k, r, c in np.asarray(where)[:, :3]:
        masks[k][r:r + h, c:c + w] = True
    return masks


@pytest.mark.parametrize("rows", [False, True])
def test_no_test_patch_overlaps_a_training_region(folder, rows):
    t = make_task("patches", opts(folder, rows=rows, fresh=True), seed=0)
    src, h = t.source, 1 if rows else 8
    shapes = [load_gray(f"{folder}/{f}").shape for _, f in IMAGES]
    train_region = covered([(k, r, c) for k, b in enumerate(src.blocks["train"]) for r, c in b], 32, 32, shapes)
    test_region = covered([(k, r, c) for k, b in enumerate(src.blocks["test"]) for r, c in b], 32, 32, shapes)
    assert not any((a & b).any() for a, b in zip(train_region, test_region))
    fresh = [t.sampler.source.draw(_rngs(s), 300, "train")[2] for s in range(3)]  # what fresh batches cut
    seen = covered(np.concatenate([t.extras["where_train"].numpy(), *fresh]), h, 8, shapes)
    tested = covered(t.extras["where_test"].numpy(), h, 8, shapes)
    for k in range(len(IMAGES)):
        assert not (seen[k] & tested[k]).any()  # no test pixel was ever part of a training patch
        assert not (seen[k] & ~train_region[k]).any() and not (tested[k] & ~test_region[k]).any()
    assert all(m.any() for m in tested) and all(m.any() for m in seen)  # every image gives patches to both


def test_patches_are_the_standardized_image_pixels_at_their_place(folder):
    for rows in (False, True):
        t = make_task("patches", opts(folder, rows=rows), seed=0)
        h = 1 if rows else 8
        assert t.geometry.spatial == ((8,) if rows else (8, 8))
        assert (t.geometry.channels, t.geometry.periodic, t.n_outputs) == (1, False, len(IMAGES))
        for x, y, (k, r, c) in zip(t.x_test[:20], t.y_test[:20], t.extras["where_test"][:20, :3].tolist()):
            assert int(y) == k
            img = load_gray(f"{folder}/{IMAGES[k][1]}")
            want = (img[r:r + h, c:c + 8] - t.info["mean"]) / t.info["std"]
            np.testing.assert_allclose(x.numpy(), want.ravel(), atol=1e-5)


def test_standardization_uses_the_training_regions_only(folder):
    t = make_task("patches", opts(folder), seed=0)
    src = t.source
    means, sqs = [], []
    for k, (_, f) in enumerate(IMAGES):
        img = load_gray(f"{folder}/{f}")
        px = np.concatenate([img[r:r + 32, c:c + 32].ravel() for r, c in src.blocks["train"][k]])
        means.append(px.mean())
        sqs.append((px**2).mean())
    mu = np.mean(means)
    assert t.info["mean"] == pytest.approx(mu) and t.info["std"] == pytest.approx(np.sqrt(np.mean(sqs) - mu**2))


def test_training_sets_are_nested_and_depend_on_data_seed_only(folder):
    small, big = make_task("patches", opts(folder, n_train=50), seed=0), make_task("patches", opts(folder), seed=5)
    assert torch.equal(small.x_train, big.x_train[:50]) and torch.equal(small.x_test, big.x_test)
    other = make_task("patches", opts(folder, data_seed=1), seed=0)
    assert not torch.equal(other.x_test, big.x_test)
    assert other.info["test_blocks"] != big.info["test_blocks"]


def test_fresh_batches_are_a_pure_function_of_seed_and_step(folder):
    t = make_task("patches", opts(folder, fresh=True), seed=0)
    a, b, c = t.sampler(0, 7, 64), t.sampler(0, 7, 64), t.sampler(0, 8, 64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (64, 64) and a[1].dtype == torch.long
    assert make_task("patches", opts(folder), seed=0).sampler is None


@pytest.mark.parametrize("rows", [False, True])
def test_shift_augmentation_cuts_real_translations_inside_the_training_blocks(folder, rows):
    t = make_task("patches", opts(folder, rows=rows, augment_shift=3), seed=0)
    plain = make_task("patches", opts(folder, rows=rows), seed=0)
    assert torch.equal(t.x_train, plain.x_train) and plain.sampler is None
    where = t.extras["where_train"].numpy()
    h, src = (1 if rows else 8), t.source
    moved = 0
    for step in range(8):  # one epoch of 400 patches in batches of 50
        x, y = t.sampler(0, step, 50)
        idx = torch.randperm(400, generator=stream(0, 0))[step * 50:(step + 1) * 50]
        assert torch.equal(y, plain.y_train[idx])  # the trainer's epoch order, labels kept
        for xi, (k, r, c, br, bc) in zip(x.numpy(), where[idx.numpy()]):
            hits = [(r2, c2) for r2 in range(br, br + 33 - h) for c2 in range(bc, bc + 33 - 8)
                    if abs(r2 - r) <= 3 and abs(c2 - c) <= 3 and (not rows or r2 == r)
                    and np.array_equal(src.cut([k], [r2], [c2])[0], xi)]
            assert hits  # the patch is the image at a corner within k of the original, inside its own block
            moved += (r, c) not in hits
    assert moved > 100  # most patches were shifted
    again = t.sampler(0, 3, 50)
    assert torch.equal(again[0], t.sampler(0, 3, 50)[0])


@pytest.mark.parametrize("bad,message", [
    ({"augment_shift": 2, "fresh": True}, "applies to the fixed training set"),
    ({"size": 40}, "patch size 40 is larger than the blocks"),
    ({"block": 200, "size": 8}, "fewer than two blocks"),
    ({"test_frac": 1.0}, "test_frac must be in"),
    ({"n_train": 0}, "n_train and n_test must be >= 1"),
])
def test_bad_options_are_config_errors(folder, bad, message):
    with pytest.raises(ConfigError, match=message):
        make_task("patches", opts(folder, **bad))


def test_without_scikit_image_or_a_folder_it_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match="needs scikit-image .*pip install scikit-image"):
        make_task("patches", {"n_train": 10, "n_test": 10})


def test_cli_patch_larger_than_its_region_is_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["train", "--task", "patches", "--task-opt", "size=80", "--steps", "1", "-q",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "patch size 80 is larger than the blocks (64x64 pixels)" in lines[0]


@pytest.mark.skipif(not HAS_SKIMAGE, reason="scikit-image (which ships the images) is not installed")
def test_the_images_ship_in_scikit_image_and_load_without_a_download():
    t = make_task("patches", {"n_train": 500, "n_test": 500}, seed=0)
    assert (t.x_train.shape, t.x_test.shape) == ((500, 256), (500, 256))
    assert sorted(set(t.y_test.tolist())) == list(range(10))
    assert abs(float(t.x_train.mean())) < 0.2 and 0.8 < float(t.x_train.std()) < 1.2
    assert len(t.info["test_blocks"]["camera"]) == 16  # 512x512 in 64 blocks, a quarter of them held out
