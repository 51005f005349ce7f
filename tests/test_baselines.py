"""The per-example loss and EL2N baselines: equal to an independent computation from the
model's `apply`, run through the pipeline like every method, refuse pairwise influence."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

import ifscale.run.pipeline
from ifscale.config import ModelConfig, NoiseConfig, RunConfig
from ifscale.domains.images import classification_task
from ifscale.influence import EL2N, LossBaseline, self_influence_scores
from ifscale.run.compose import method_config
from ifscale.train import TrainConfig
from ifscale.utils import ConfigError
from tests.test_kinds import BlobsConfig, tabular_kind  # noqa: F401  (a fixture)


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.tanh(nn.Dense(6)(x)))


@pytest.fixture
def tiny():
    model = Tiny()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 5)).astype(np.float32)
    y = rng.integers(0, 4, size=37).astype(np.int32)
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    return model, params, (x, y)


def test_the_loss_baseline_is_the_per_example_cross_entropy(tiny):
    model, params, (x, y) = tiny
    task = classification_task(model)
    method = LossBaseline(progress=False)
    state = method.fit(task, params, [], None)
    got = self_influence_scores(method, state, (x, y), batch_size=8, progress=False).scores
    logits = np.asarray(model.apply({"params": params}, x), np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, -log_softmax[np.arange(len(y)), y], rtol=1e-5)


def test_el2n_is_the_norm_of_softmax_minus_one_hot(tiny):
    model, params, (x, y) = tiny
    method = EL2N(progress=False)
    state = method.fit(classification_task(model), params, [], None)
    got = self_influence_scores(method, state, (x, y), batch_size=8, progress=False).scores
    logits = np.asarray(model.apply({"params": params}, x), np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    np.testing.assert_allclose(got, np.linalg.norm(p, axis=-1), rtol=1e-5)
    assert ((got >= 0) & (got <= np.sqrt(2) + 1e-6)).all()


def test_baselines_have_no_pairwise_influence(tiny):
    model, params, data = tiny
    for method in (LossBaseline(), EL2N()):
        state = method.fit(classification_task(model), params, [], None)
        with pytest.raises(ConfigError, match="per-example score, not an influence"):
            method.influence(state, data, data)


def test_el2n_needs_a_classifier():
    from ifscale.influence.task import Task

    task = Task(loss=lambda params, batch: batch[0].sum(-1))
    with pytest.raises(ConfigError, match="el2n is defined for classifiers"):
        EL2N().fit(task, {}, [], None)


@pytest.mark.parametrize("name", ["loss", "el2n"])
def test_baselines_run_through_the_pipeline(tabular_kind, tmp_path, name):  # noqa: F811
    cfg = RunConfig(
        dataset=BlobsConfig(),
        model=ModelConfig(name="mlp"),
        noise=NoiseConfig(kind="mislabel", rate=0.1),
        train=TrainConfig(epochs=30, batch_size=40, learning_rate=0.1, kept_checkpoints=4),
        method=method_config(name),
        progress=False,
    )
    cfg.paths.cache_dir = str(tmp_path / "cache")
    metrics = ifscale.run.pipeline.run(cfg, tmp_path / "run")
    assert metrics["method"] == name and metrics["n_scored"] == 240
    assert metrics["auc"] > 0.9  # flipped labels on separable blobs: a high loss
    assert (tmp_path / "run" / "scores.csv").exists()
