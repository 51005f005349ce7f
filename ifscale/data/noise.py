"""Synthetic label noise: the ground truth that self-influence is asked to recover."""

from __future__ import annotations

import dataclasses

import numpy as np

from ifscale.data.images import ImageData
from ifscale.utils import check, stream_rng

KINDS = ("none", "mislabel")


def mislabel(
    labels: np.ndarray, num_classes: int, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Replaces the labels of a seeded `rate` share of examples by a different random class.

    Exactly `round(rate * n)` examples are chosen without replacement; each gets a class
    drawn uniformly from the `num_classes - 1` classes other than its own.

    Args:
      labels: [n] int labels.
      num_classes: number of classes (>= 2).
      rate: share of examples to corrupt, in [0, 1).
      seed: seeds the choice.

    Returns:
      (noisy_labels [n], is_noisy [n] bool).
    """
    check(0 <= rate < 1, "noise.rate", f"must be in [0, 1), got {rate}")
    check(num_classes >= 2, "noise", "mislabeling needs at least two classes")
    n = len(labels)
    rng = stream_rng(seed, "noise")
    chosen = rng.choice(n, size=round(rate * n), replace=False)
    # An offset in 1..C-1 modulo C is uniform over the other classes and never 0.
    offset = rng.integers(1, num_classes, size=len(chosen))
    noisy = np.array(labels, copy=True)
    noisy[chosen] = (labels[chosen] + offset) % num_classes
    is_noisy = np.zeros(n, bool)
    is_noisy[chosen] = True
    return noisy.astype(labels.dtype), is_noisy


def apply_label_noise(data: ImageData, kind: str, rate: float, seed: int) -> ImageData:
    """Returns a copy of `data` with noisy training labels and its `is_noisy` mask."""
    check(kind in KINDS, "noise.kind", f"must be one of {KINDS} for images, got {kind!r}")
    if kind == "none":
        return data
    noisy, is_noisy = mislabel(data.y_train_clean, data.num_classes, rate, seed)
    return dataclasses.replace(data, y_train=noisy, is_noisy=is_noisy)
