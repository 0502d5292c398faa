"""Natural-image patches: which of ten photographs or textures a grayscale patch was cut from.

The images are the ones scikit-image ships inside its wheel (``skimage/data``: read from that folder with Pillow,
so nothing is downloaded and skimage itself is never imported): five photographs (camera, astronaut, coffee,
chelsea, rocket), four textures or close-ups (brick, grass, gravel, moon) and one scene of objects (coins). RGB
images become gray with the weights of ``skimage.color.rgb2gray`` (0.2125 R + 0.7154 G + 0.0721 B); pixels are in
[0, 1] before standardization. Unlike NLGP, their higher-order statistics are those of real scenes.

Train/test split, per image: the image is tiled by squares of ``block`` x ``block`` pixels (the ragged margin
beyond the last whole block is never used); ``test_frac`` of each image's blocks (at least one, never all), chosen
by ``data_seed``, are the test region, the rest the training region. A patch lies inside one block, so every
test patch lies in test blocks and every training patch in training blocks: no test pixel is ever part of a
training example. A patch is ``size`` x ``size`` pixels (geometry 1 x size x size), or with ``rows`` a 1-D row of
``size`` pixels (geometry 1 x size): the same draw with a height of one pixel.

A draw: the class (image) uniform among the ten, a block uniform among that image's blocks of the split, the
patch's corner uniform among the positions that keep it inside the block. The fixed training and test sets are
such draws from ``data_seed`` (the first n training patches are the same for every ``n_train``, so data-size
sweeps grow one nested set); with ``fresh`` every step draws a new batch from the training blocks (an unlimited
stream, a pure function of the run's seed and the step).

Augmentation (``augment_shift`` = k > 0): the fixed training set in the trainer's epoch order, each patch cut again
at its corner moved by a shift uniform in [-k, k] per axis (along the row only with ``rows``), clipped to stay
inside its own training block: real translations of the image (no wrap-around), never a test pixel.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.seeding import AUGMENT, PATCH_SPLIT_STREAM, SAMPLER, EpochOrder, stream
from probe.tasks.registry import Task, register

# class index -> (name, file in skimage/data)
IMAGES = (("camera", "camera.png"), ("astronaut", "astronaut.png"), ("coffee", "coffee.png"),
          ("chelsea", "chelsea.png"), ("rocket", "rocket.jpg"), ("brick", "brick.png"), ("grass", "grass.png"),
          ("gravel", "gravel.png"), ("moon", "moon.png"), ("coins", "coins.png"))
RGB2GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray's weights (ITU-R BT.709)


def image_dir(data_dir: str = "") -> Path:
    """The folder of the images: ``data_dir`` if given, else the ``data`` folder of the installed skimage package
    (found without importing it)."""
    if data_dir:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"task patches: data_dir {folder}: not a folder")
        return folder
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("task patches needs scikit-image (its wheel ships the images; nothing is downloaded): "
                          "pip install scikit-image (or probe[images]), or give --task-opt data_dir=FOLDER holding "
                          + ", ".join(f for _, f in IMAGES))
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@functools.lru_cache(maxsize=16)
def load_gray(path: str) -> np.ndarray:
    """One image as float64 gray levels in [0, 1], (H, W)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im)
    except (OSError, ValueError) as e:
        raise ConfigError(f"task patches: cannot read image {path} ({e})") from None
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else max(1.0, float(a.max())))
    if a.ndim == 3:  # RGB(A): drop alpha, weight the colours as rgb2gray does
        a = a[..., :3] @ RGB2GRAY
    a.setflags(write=False)  # cached: nobody may change it
    return a


def split_blocks(shape, block: int, test_frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (k, 2) of the training blocks and of the test blocks of an image of ``shape``: its whole
    ``block`` x ``block`` tiles, ``round(test_frac * tiles)`` of them (at least 1, at most tiles - 1) for test."""
    nr, nc = shape[0] // block, shape[1] // block
    corners = np.stack(np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij"), -1).reshape(-1, 2) * block
    n = len(corners)
    if n < 2:
        raise ConfigError(f"task patches: block {block} leaves fewer than two blocks in a {shape[0]}x{shape[1]} image; "
                          "a smaller block is needed to split it into training and test regions")
    n_test = min(max(int(round(test_frac * n)), 1), n - 1)
    order = rng.permutation(n)
    return corners[np.sort(order[n_test:])], corners[np.sort(order[:n_test])]


class PatchSource:
    """The standardized images and their block splits; cuts patches.

    ``draw(rngs, n, split)`` returns inputs (n, features), labels (n,) and where each patch lies, (n, 5) rows of
    (image, top row, left column, its block's top row, its block's left column)."""

    def __init__(self, images: list[np.ndarray], block: int, size: int, rows: bool, test_frac: float, data_seed: int):
        self.block, self.size, self.rows = int(block), int(size), bool(rows)
        self.h, self.w = (1, self.size) if rows else (self.size, self.size)
        split_rng = np.random.default_rng([int(data_seed), PATCH_SPLIT_STREAM])
        self.blocks = {"train": [], "test": []}
        for img in images:
            tr, te = split_blocks(img.shape, self.block, test_frac, split_rng)
            self.blocks["train"].append(tr)
            self.blocks["test"].append(te)
        # standardize with the training regions' statistics, each image weighted as the draws weight it (equally)
        m1 = [np.mean([img[r:r + block, c:c + block].mean() for r, c in tr])
              for img, tr in zip(images, self.blocks["train"])]
        m2 = [np.mean([(img[r:r + block, c:c + block] ** 2).mean() for r, c in tr])
              for img, tr in zip(images, self.blocks["train"])]
        self.mean = float(np.mean(m1))
        self.std = float(np.sqrt(max(np.mean(m2) - self.mean**2, 0.0))) + 1e-8
        H, W = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
        stack = np.zeros((len(images), H, W), dtype=np.float32)  # padding is never cut: blocks lie inside images
        for k, img in enumerate(images):
            stack[k, : img.shape[0], : img.shape[1]] = (img - self.mean) / self.std
        self.stack = stack

    @property
    def n_classes(self) -> int:
        return len(self.stack)

    def draw(self, rngs, n: int, split: str):
        """``n`` patches from ``split`` ("train" or "test"); ``rngs``: four numpy Generators (class, block, row,
        column), each used once, so that the first n patches of a larger draw are these."""
        r_cls, r_blk, r_row, r_col = rngs
        y = r_cls.integers(0, self.n_classes, n)
        counts = np.array([len(b) for b in self.blocks[split]])
        pick = np.minimum((r_blk.random(n) * counts[y]).astype(np.int64), counts[y] - 1)
        corner = np.stack([self.blocks[split][k][j] for k, j in zip(y, pick)]) if n else np.zeros((0, 2), np.int64)
        top = corner[:, 0] + r_row.integers(0, self.block - self.h + 1, n)
        left = corner[:, 1] + r_col.integers(0, self.block - self.w + 1, n)
        return self.cut(y, top, left), y, np.concatenate([np.stack([y, top, left], 1), corner], 1)

    def cut(self, image, top, left) -> np.ndarray:
        """The patches (n, h * w) whose top-left corners are (top, left) in images ``image``."""
        rr = np.asarray(top)[:, None, None] + np.arange(self.h)[None, :, None]
        cc = np.asarray(left)[:, None, None] + np.arange(self.w)[None, None, :]
        return self.stack[np.asarray(image)[:, None, None], rr, cc].reshape(len(rr), -1)


def _rngs(*key) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence([int(k) for k in key]).spawn(4)]


class PatchSampler:
    """A fresh batch of training patches at every step, a pure function of (seed, step)."""

    def __init__(self, source: PatchSource):
        self.source = source

    def __call__(self, seed: int, step: int, batch: int, device="cpu"):
        key = int(torch.randint(0, 2**62, (1,), generator=stream(seed, SAMPLER + int(step))))
        x, y, _ = self.source.draw(_rngs(key), int(batch), "train")
        return torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)


class PatchShiftAugment:
    """Training batches with random real translations of up to ``k`` pixels (module docstring): the trainer's own
    epoch order (the same patches as without augmentation), the shifts a pure function of (seed, step)."""

    draws_from_train_set = True  # batches come from the fixed training set: a batch larger than it is the whole set

    def __init__(self, task: Task, source: PatchSource, where: np.ndarray, k: int):
        self.task, self.source, self.where, self.k = task, source, np.asarray(where), int(k)
        self.order = EpochOrder()

    def __call__(self, seed: int, step: int, batch: int, device="cpu"):
        idx = self.order(seed, step, len(self.where), batch).numpy()  # the batches of probe.run.loop.Batches
        k, top, left, b_top, b_left = self.where[idx, 0], *self.where[idx, 1:].T
        g = stream(seed, AUGMENT + step)
        shift = torch.randint(-self.k, self.k + 1, (len(idx), 2), generator=g).numpy()
        if self.source.rows:
            shift[:, 0] = 0
        src = self.source
        top = np.clip(top + shift[:, 0], b_top, b_top + src.block - src.h)
        left = np.clip(left + shift[:, 1], b_left, b_left + src.block - src.w)
        x = torch.from_numpy(src.cut(k, top, left)).to(device)
        return x, self.task.y_train[torch.from_numpy(idx)].to(device)


@register("patches", "grayscale patches of 10 natural images shipped in scikit-image, classified by their image; "
                     "training and test patches from disjoint blocks")
def patches(seed: int = 0, size: int = 16, rows: bool = False, n_train: int = 10000, n_test: int = 2000,
            fresh: bool = False, augment_shift: int = 0, block: int = 64, test_frac: float = 0.25,
            data_seed: int = 0, data_dir: str = "") -> Task:
    where = "task patches"
    if augment_shift < 0 or (augment_shift and fresh):
        raise ConfigError(f"{where}: augment_shift must be >= 0 and applies to the fixed training set (fresh=false), "
                          f"got augment_shift={augment_shift}, fresh={fresh}")
    if size < 1 or n_train < 1 or n_test < 1:
        raise ConfigError(f"{where}: size, n_train and n_test must be >= 1 (got {size}, {n_train}, {n_test})")
    if not 0 < test_frac < 1:
        raise ConfigError(f"{where}: test_frac must be in (0, 1), got {test_frac}")
    if size > block:
        raise ConfigError(f"{where}: patch size {size} is larger than the blocks ({block}x{block} pixels) "
                          f"that make the training and test regions; use size <= {block} or a larger block")
    folder = image_dir(data_dir)
    images = []
    for _, fname in IMAGES:
        path = folder / fname
        if not path.is_file():
            raise ConfigError(f"{where}: image {path} not found (the images ship in scikit-image's wheel)")
        images.append(load_gray(str(path)))
    source = PatchSource(images, block, size, rows, test_frac, data_seed)
    x_tr, y_tr, at_tr = source.draw(_rngs(data_seed, 0), int(n_train), "train")
    x_te, y_te, at_te = source.draw(_rngs(data_seed, 1), int(n_test), "test")
    geo = Geometry(channels=1, spatial=(size,) if rows else (size, size), periodic=False)
    info = {"images": [name for name, _ in IMAGES], "block": int(block), "mean": source.mean, "std": source.std,
            "test_blocks": {name: source.blocks["test"][k].tolist() for k, (name, _) in enumerate(IMAGES)}}
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    task = Task("patches", t(x_tr, torch.float32), t(y_tr, torch.long), t(x_te, torch.float32), t(y_te, torch.long),
                geometry=geo, n_outputs=len(IMAGES), info=info,
                extras={"where_train": t(at_tr, torch.long), "where_test": t(at_te, torch.long)})
    if fresh:
        task.sampler = PatchSampler(source)
    if augment_shift:
        task.sampler = PatchShiftAugment(task, source, at_tr, augment_shift)
    task.source = source  # for tests and analysis: the blocks and the cutter (not saved with the run)
    return task
