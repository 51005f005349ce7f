"""Synthetic label noise: the ground truth that self-influence is asked to recover."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ifscale.data.images import ImageData
from ifscale.utils import check, stream_rng


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
    image_kinds = ("none", "mislabel")
    check(kind in image_kinds, "noise.kind", f"images take {image_kinds}, got {kind!r}")
    if kind == "none":
        return data
    noisy, is_noisy = mislabel(data.y_train_clean, data.num_classes, rate, seed)
    return dataclasses.replace(data, y_train=noisy, is_noisy=is_noisy)


def permute_references(
    targets: Sequence[str], rate: float, seed: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Permutation noise of the translation experiment: a seeded `rate` share of the pairs
    get the reference of another chosen pair (a random derangement: no chosen pair keeps
    its own).

    Exactly `round(rate * n)` pairs are chosen. A pair whose new reference happens to be
    the same text as its own (duplicate sentences) is not counted as noisy.

    Args:
      targets: [n] reference sentences.
      rate: share of pairs to permute, in [0, 1).
      seed: seeds the choice and the permutation.

    Returns:
      (noisy targets [n], is_noisy [n] bool, source_of [n]: the index whose reference each
      pair now carries).
    """
    check(0 <= rate < 1, "noise.rate", f"must be in [0, 1), got {rate}")
    n = len(targets)
    k = round(rate * n)
    check(k != 1, "noise.rate", f"permuting needs at least 2 pairs; rate {rate} of {n} chooses 1")
    rng = stream_rng(seed, "noise")
    chosen = rng.choice(n, size=k, replace=False)
    order = np.arange(k)
    while k and np.any(order == np.arange(k)):  # a uniform derangement, about e tries
        order = rng.permutation(k)
    source_of = np.arange(n)
    source_of[chosen] = chosen[order]
    noisy = [targets[i] for i in source_of]
    is_noisy = np.array([noisy[i] != targets[i] for i in range(n)], bool)
    return noisy, is_noisy, source_of
