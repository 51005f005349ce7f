"""Training learns, keeps the right checkpoints, stops on divergence, and caches."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from ifscale.cache.arrays import ArrayStore
from ifscale.models import build_model
from ifscale.train import (
    TrainConfig,
    TrainedModel,
    TrainingDivergedError,
    accuracy,
    checkpoint_steps,
    train,
)
from ifscale.utils import ConfigError

QUICK = TrainConfig(epochs=6, batch_size=64, kept_checkpoints=4, log_every=10)


@pytest.fixture(scope="module")
def trained_small(mnist_small):
    d = mnist_small
    return train(
        build_model("cnn_small"),
        d.x_train,
        d.y_train,
        QUICK,
        seed=0,
        x_test=d.x_test[:2000],
        y_test=d.y_test[:2000],
        progress=False,
    )


def test_tiny_training_run_learns(trained_small):
    # 10 classes: chance is 10%. 2,000 noisy examples, 6 epochs of a 2.7k-param CNN.
    assert trained_small.info["test_accuracy"] > 0.75


def test_checkpoints_are_evenly_spaced_and_end_at_the_final_params(trained_small):
    steps_per_epoch = 2000 // 64
    total = 6 * steps_per_epoch
    np.testing.assert_array_equal(trained_small.checkpoint_steps, checkpoint_steps(total, 4))
    assert trained_small.checkpoint_steps[-1] == total
    np.testing.assert_allclose(np.diff(trained_small.checkpoint_steps), total / 4, atol=1)
    np.testing.assert_allclose(trained_small.checkpoint_lrs, QUICK.learning_rate)
    last = jax.tree_util.tree_map(lambda x: x[3], trained_small.checkpoint_params)
    for a, b in zip(
        jax.tree_util.tree_leaves(last),
        jax.tree_util.tree_leaves(trained_small.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    first = jax.tree_util.tree_map(lambda x: x[0], trained_small.checkpoint_params)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(last), strict=True
        )
    )


def test_cosine_schedule_records_the_learning_rate_in_force():
    assert list(checkpoint_steps(100, 4)) == [25, 50, 75, 100]
    with pytest.raises(ConfigError, match="train.kept_checkpoints"):
        checkpoint_steps(10, 11)


def test_divergence_names_the_step_and_the_keys(mnist_small):
    d = mnist_small
    cfg = TrainConfig(
        learning_rate=1e12, momentum=0.9, epochs=2, batch_size=64, kept_checkpoints=1, log_every=5
    )
    with pytest.raises(TrainingDivergedError, match=r"at step \d+ of 62.*train.learning_rate"):
        train(build_model("cnn_small"), d.x_train, d.y_train, cfg, seed=0, progress=False)


def test_bad_train_config_names_the_key(mnist_small):
    d = mnist_small
    with pytest.raises(ConfigError, match="train.batch_size"):
        train(
            build_model("cnn_small"),
            d.x_train[:10],
            d.y_train[:10],
            TrainConfig(batch_size=64),
            seed=0,
            progress=False,
        )
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="lbfgs")  # checked on construction


def _tiny_training(mnist_small, cache, key, cfg=None):
    d = mnist_small
    cfg = cfg or TrainConfig(epochs=1, batch_size=100, kept_checkpoints=2)
    return cache.get_or_build(
        key,
        lambda: train(
            build_model("cnn_small"), d.x_train[:500], d.y_train[:500], cfg, 0, progress=False
        ),
        lambda t: (t.to_arrays(), t.info),
        TrainedModel.from_arrays,
    )


def test_cache_is_reused_then_refused_when_config_or_file_changes(mnist_small, tmp_path):
    cache = ArrayStore(tmp_path, "trained", version=1)
    key = {"model": "cnn_small", "seed": 0}
    first, hit = _tiny_training(mnist_small, cache, key)
    assert not hit
    again, hit = _tiny_training(mnist_small, cache, key)
    assert hit
    for a, b in zip(
        jax.tree_util.tree_leaves(first.params),
        jax.tree_util.tree_leaves(again.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.checkpoint_steps, again.checkpoint_steps)

    # A different config is a different key: trained anew.
    _, hit = _tiny_training(mnist_small, cache, {**key, "seed": 1})
    assert not hit

    folder = cache.path(key)
    # Stored config differs from the request (e.g. a hand-copied folder): refused.
    meta = json.loads((folder / "meta.json").read_text())
    meta["key"]["config"]["seed"] = 99
    (folder / "meta.json").write_text(json.dumps(meta))
    assert cache.load(key) is None
    _, hit = _tiny_training(mnist_small, cache, key)
    assert not hit and cache.load(key) is not None

    # A truncated array file: refused and rebuilt.
    array_file = folder / "0000.npy"
    blob = array_file.read_bytes()
    array_file.write_bytes(blob[: len(blob) // 2])
    assert cache.load(key) is None
    _, hit = _tiny_training(mnist_small, cache, key)
    assert not hit and cache.load(key) is not None

    # Same size, one byte changed (the checksum recorded at save catches it): refused.
    blob = bytearray(array_file.read_bytes())
    blob[-1] ^= 0xFF
    array_file.write_bytes(bytes(blob))
    assert cache.load(key) is None
    _, hit = _tiny_training(mnist_small, cache, key)
    assert not hit and cache.load(key) is not None

    # Another key version (code whose keys changed): not found, so trained anew.
    assert ArrayStore(tmp_path, "trained", version=2).load(key) is None

    # Garbage meta.json: refused.
    (folder / "meta.json").write_text("{not json")
    assert cache.load(key) is None


def test_accuracy_pads_the_last_batch(trained_small, mnist_small):
    d = mnist_small
    model = build_model("cnn_small")
    full = accuracy(model, trained_small.params, d.x_test[:1234], d.y_test[:1234], 1000)
    per_batch = accuracy(model, trained_small.params, d.x_test[:1234], d.y_test[:1234], 1234)
    assert full == pytest.approx(per_batch)


def test_train_config_checks_on_replace_too():
    with pytest.raises(ConfigError, match="train.epochs"):
        dataclasses.replace(QUICK, epochs=0)
