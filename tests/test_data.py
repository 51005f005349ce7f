"""MNIST sources, the restricted unpickler, subsetting and label noise."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from ifscale.data import apply_label_noise, load_images, mislabel, stratified_subset
from ifscale.data import images as images_mod
from ifscale.data.fetch import MNIST_FILENAME
from ifscale.data.images import DataIntegrityError
from ifscale.data.safe_pickle import UnsafePickleError, load_arrays_pickle
from ifscale.utils import ConfigError

MNIST_TRAIN = 60_000
MNIST_TEST = 10_000


def test_hub_source_is_the_standard_mnist(mnist_dir):
    data = load_images("hub", data_dir=mnist_dir)
    assert data.x_train.shape == (MNIST_TRAIN, 28, 28, 1)
    assert data.x_test.shape == (MNIST_TEST, 28, 28, 1)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert data.num_classes == 10
    # The standard training set is balanced to within a few hundred per class.
    counts = np.bincount(data.y_train)
    assert counts.sum() == MNIST_TRAIN and counts.min() > 5000
    # First labels of the standard MNIST training set.
    np.testing.assert_array_equal(data.y_train[:5], [5, 0, 4, 1, 9])
    assert not data.is_noisy.any()

    raw = load_images("hub", data_dir=mnist_dir, scale=False)
    assert raw.x_train.max() == 255.0
    # Pixels were bytes k/256 in the file: scaling divides the recovered bytes by 255.
    np.testing.assert_allclose(raw.x_train[:50] / 255.0, data.x_train[:50], rtol=1e-6)


def test_hash_mismatch_is_a_clear_error(tmp_path):
    (tmp_path / MNIST_FILENAME).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_images("hub", data_dir=tmp_path)


def test_missing_file_says_how_to_fetch(tmp_path):
    with pytest.raises(ConfigError, match="make setup"):
        load_images("hub", data_dir=tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_other_callables():
    with pytest.raises(UnsafePickleError, match="system"):
        load_arrays_pickle(pickle.dumps(_RunsCode(), protocol=2))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_restricted_unpickler_loads_arrays(protocol):
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64)),)
    out = load_arrays_pickle(pickle.dumps(arrays, protocol=protocol))
    np.testing.assert_array_equal(out[0][0], arrays[0][0])
    np.testing.assert_array_equal(out[0][1], arrays[0][1])


def _write_npz(path, n_train=60, n_test=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, (n_test, 8, 8), dtype=np.uint8),
        "y_test": np.arange(n_test) % classes,
    }
    np.savez(path, **arrays)
    return arrays


def test_npz_source_round_trips(tmp_path):
    arrays = _write_npz(tmp_path / "mine.npz")
    data = load_images("npz", path=tmp_path / "mine.npz", scale=False)
    np.testing.assert_array_equal(data.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(data.y_train, arrays["y_train"])
    np.testing.assert_array_equal(data.x_test[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    assert data.num_classes == 3
    scaled = load_images("npz", path=tmp_path / "mine.npz")
    np.testing.assert_allclose(scaled.x_train[..., 0], arrays["x_train"] / 255.0, rtol=1e-6)


def test_npz_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="dataset.path"):
        load_images("npz", path=tmp_path / "absent.npz")
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((3, 4, 4)))
    with pytest.raises(ConfigError, match="lacks arrays"):
        load_images("npz", path=tmp_path / "partial.npz")


def test_tfds_source_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24):
        data = load_images("tfds", subset_size=12, seed=0)
    assert data.x_train.shape == (12, 28, 28, 1)
    assert data.x_test.shape[1:] == (28, 28, 1)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1
    assert data.y_train.min() >= 0 and data.y_train.max() < 10


def test_stratified_subset_keeps_class_shares_and_is_seeded():
    labels = np.repeat(np.arange(10), [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
    index = stratified_subset(labels, 550, seed=3)
    assert len(index) == 550 and len(np.unique(index)) == 550
    np.testing.assert_array_equal(np.bincount(labels[index]), np.arange(1, 11) * 10)
    np.testing.assert_array_equal(index, stratified_subset(labels, 550, seed=3))
    assert not np.array_equal(index, stratified_subset(labels, 550, seed=4))


def test_subset_by_fraction_and_errors(mnist_dir):
    data = load_images("hub", data_dir=mnist_dir, subset_fraction=0.1, seed=0)
    assert data.n_train == 6000
    assert data.train_index.max() < MNIST_TRAIN
    with pytest.raises(ConfigError, match="subset_size.*larger than the 60000"):
        load_images("hub", data_dir=mnist_dir, subset_size=70_000)
    with pytest.raises(ConfigError, match="not both"):
        images_mod.subset_size_for(100, 0.5, 10)


@pytest.mark.parametrize("rate", [0.0, 0.06, 0.1, 0.37])
def test_mislabel_flips_exactly_and_to_another_class(rate):
    labels = np.arange(1000) % 10
    noisy, is_noisy = mislabel(labels, 10, rate, seed=0)
    assert is_noisy.sum() == round(rate * 1000)
    assert (noisy[is_noisy] != labels[is_noisy]).all()
    np.testing.assert_array_equal(noisy[~is_noisy], labels[~is_noisy])
    assert noisy.min() >= 0 and noisy.max() < 10


def test_mislabel_is_seeded_and_uniform_over_other_classes():
    labels = np.zeros(20_000, np.int32)
    noisy, mask = mislabel(labels, 10, 0.5, seed=1)
    again, mask_again = mislabel(labels, 10, 0.5, seed=1)
    np.testing.assert_array_equal(mask, mask_again)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(mask, mislabel(labels, 10, 0.5, seed=2)[1])
    # New classes are 1..9, each about 1/9 of the flips (10,000 flips: 4-sigma band).
    share = np.bincount(noisy[mask], minlength=10)[1:] / mask.sum()
    assert np.abs(share - 1 / 9).max() < 0.013


def test_noise_rate_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="noise.rate"):
        mislabel(np.zeros(10, np.int32), 10, 1.0, seed=0)
    with pytest.raises(ConfigError, match="noise.rate"):
        mislabel(np.zeros(10, np.int32), 10, -0.1, seed=0)


def test_apply_label_noise_keeps_clean_labels(mnist_small):
    data = mnist_small
    assert data.is_noisy.sum() == 200
    np.testing.assert_array_equal(data.y_train != data.y_train_clean, data.is_noisy)
    assert apply_label_noise(data, "none", 0.0, seed=0) is data
