"""A new kind of data plugs into the pipeline without touching it: a tiny tabular kind,
defined here, runs end to end (train, fit, score, metrics, scores.csv) through
`ifscale.run.pipeline.run`."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from pathlib import Path
from typing import ClassVar

import flax.linen as nn
import numpy as np
import pandas as pd
import pytest

import ifscale.run.pipeline
from ifscale.config import DataConfig, ModelConfig, NoiseConfig, RunConfig
from ifscale.data.noise import mislabel
from ifscale.domains import DOMAINS, Domain, register
from ifscale.domains.images import classification_task
from ifscale.run.compose import method_config, validate
from ifscale.train import TrainConfig, cross_entropy, train_loop
from ifscale.utils import ConfigError, stream_key, stream_rng


@dataclasses.dataclass
class BlobsConfig(DataConfig):
    """Three Gaussian blobs in `features` dimensions."""

    kind: str = "tabular"
    name: str = "blobs"
    source: str = "synthetic"
    n_train: int = 240
    features: int = 4

    KIND: ClassVar[str] = "tabular"

    def __post_init__(self):
        super().__post_init__()
        if self.n_train < 30:
            raise ConfigError("dataset.n_train: must be >= 30")


@dataclasses.dataclass(frozen=True)
class Blobs:
    x_train: np.ndarray
    y_train: np.ndarray
    y_clean: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    is_noisy: np.ndarray
    train_index: np.ndarray

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def train_batch(self, index):
        return self.x_train[index], self.y_train[index]


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.tanh(nn.Dense(8)(x)))


class TabularDomain(Domain):
    name: ClassVar[str] = "tabular"
    classifier: ClassVar[bool] = True  # classification_task: a logit per class
    models: ClassVar[tuple[str, ...]] = ("mlp",)
    noise_kinds: ClassVar[tuple[str, ...]] = ("none", "mislabel")

    def load(self, cfg) -> Blobs:
        rng = stream_rng(cfg.seed, "blobs")
        centers = rng.normal(scale=3.0, size=(3, cfg.dataset.features))

        def sample(n):
            y = np.arange(n) % 3
            return (centers[y] + rng.normal(size=(n, cfg.dataset.features))).astype(
                np.float32
            ), y.astype(np.int32)

        x, y = sample(cfg.dataset.n_train)
        x_test, y_test = sample(60)
        noisy, is_noisy = mislabel(y, 3, cfg.noise.rate, cfg.seed)
        return Blobs(x, noisy, y, x_test, y_test, is_noisy, np.arange(len(y)))

    def arrays(self, data):
        return data.x_train, data.y_train, data.x_test, data.y_test

    def test_batch(self, data, index):
        return data.x_test[index], data.y_test[index]

    def n_test(self, data):
        return len(data.y_test)

    def build_model(self, cfg, data):
        return MLP()

    def train(self, model, data, train, seed, progress=True, evaluate_at=()):
        params = model.init(stream_key(seed, "init"), data.x_train[:1])["params"]

        def loss_fn(p, batch, key):
            return cross_entropy(model.apply({"params": p}, batch[0]), batch[1]).mean()

        def evaluate(p):
            predicted = np.asarray(model.apply({"params": p}, data.x_test)).argmax(-1)
            return {"test_accuracy": float((predicted == data.y_test).mean())}

        arrays = (data.x_train, data.y_train)
        return train_loop(params, loss_fn, arrays, train, seed, evaluate, progress)

    def task(self, model, cfg):
        return classification_task(model, cfg.method.layers, cfg.train.l2)

    def score_columns(self, data, index):
        return {"label": data.y_train[index], "clean_label": data.y_clean[index]}


@pytest.fixture
def tabular_kind():
    register(TabularDomain(), BlobsConfig)
    yield
    DOMAINS.pop("tabular")


@pytest.mark.parametrize(
    "method",
    [
        method_config("arnoldi", n=12, pbar=6, fit_batch_size=40, fit_batches=2),
        method_config("tracin", checkpoints=2),
        method_config("lissa", r=4, scale=20.0, fit_batch_size=40, fit_batches=2),
    ],
    ids=lambda m: m.name,
)
def test_a_new_kind_runs_through_the_pipeline_untouched(tabular_kind, method, tmp_path):
    cfg = RunConfig(
        dataset=BlobsConfig(),
        model=ModelConfig(name="mlp"),
        noise=NoiseConfig(kind="mislabel", rate=0.1),
        train=TrainConfig(epochs=30, batch_size=40, learning_rate=0.1, kept_checkpoints=4),
        method=method,
        progress=False,
    )
    cfg.paths.cache_dir = str(tmp_path / "cache")
    metrics = ifscale.run.pipeline.run(cfg, tmp_path / "run")
    assert metrics["dataset"] == "blobs" and metrics["n_train"] == 240
    assert metrics["noise"]["n_noisy"] == 24 and metrics["n_scored"] == 240
    assert metrics["test_accuracy"] > 0.8  # separable blobs
    assert metrics["auc"] > 0.7  # mislabeled points stand out under every method
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    assert {"label", "clean_label", "is_noisy", "self_influence"} <= set(scores.columns)
    assert (scores["label"] != scores["clean_label"]).sum() == 24
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics


def test_the_domain_refuses_what_does_not_fit_it(tabular_kind):
    with pytest.raises(ConfigError, match="model.name"):
        validate(RunConfig(dataset=BlobsConfig(), model=ModelConfig(name="cnn_small")))
    with pytest.raises(ConfigError, match="noise.kind"):
        validate(
            RunConfig(
                dataset=BlobsConfig(), model=ModelConfig(name="mlp"), noise=NoiseConfig("permute")
            )
        )


def test_the_runner_never_asks_which_domain_or_method_it_has():
    import ifscale.run

    modules = [
        importlib.import_module(f"ifscale.run.{p.stem}")
        for p in Path(ifscale.run.__file__).parent.glob("*.py")
    ]
    modules += [
        importlib.import_module(f"ifscale.run.stages.{p.stem}")
        for p in (Path(ifscale.run.__file__).parent / "stages").glob("*.py")
    ]
    # No data types, no attribute sniffing: only the domain's and the method's declared members.
    for module in modules:
        source = inspect.getsource(module)
        for name in ("ImageData", "TextData", "kind ==", "hasattr(", 'getattr(method, "'):
            assert name not in source, (module.__name__, name)
