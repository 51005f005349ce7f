"""The images domain: labelled images with mislabeled examples, the MNIST CNNs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifscale.config import DataConfig, TrainConfig
from ifscale.data import ImageData, apply_label_noise, load_images
from ifscale.data.images import SOURCES as IMAGE_SOURCES
from ifscale.domains.base import Domain, Retraining
from ifscale.influence.layerwise import FlaxLayerwise
from ifscale.influence.methods.baselines import error_norm
from ifscale.influence.task import Task
from ifscale.models import MODELS, build_model, init_params
from ifscale.train import TrainedModel, cross_entropy, train
from ifscale.utils import check, stream_key


@dataclasses.dataclass
class ImageDataConfig(DataConfig):
    """Labelled images (`ifscale.data.images`).

    Attributes:
      source: "hub" (MNIST from a PyPI wheel) | "tfds" | "npz" (`path`: your own arrays).
      subset_fraction, subset_size: a seeded, stratified training subset (one or neither).
      subset_first: the subset is the first examples instead (dattri's benchmark).
      scale: map pixels to [0, 1].
      normalize: [mean, std]: standardise the pixels after scaling (null: as they are).
    """

    kind: str = "images"
    name: str = "mnist"
    source: str = "hub"
    subset_fraction: float | None = None
    subset_size: int | None = None
    subset_first: bool = False
    scale: bool = True
    normalize: list[float] | None = None

    KIND: ClassVar[str] = "images"

    def __post_init__(self):
        super().__post_init__()
        check(
            self.source in IMAGE_SOURCES,
            "dataset.source",
            f"must be one of {IMAGE_SOURCES}, got {self.source!r}",
        )
        check(
            self.subset_fraction is None or self.subset_size is None,
            "dataset",
            "give subset_fraction or subset_size, not both",
        )
        check(
            self.subset_fraction is None or 0 < self.subset_fraction <= 1,
            "dataset.subset_fraction",
            f"must be in (0, 1], got {self.subset_fraction}",
        )
        check(
            self.subset_size is None or self.subset_size >= 1,
            "dataset.subset_size",
            f"must be >= 1, got {self.subset_size}",
        )
        check(
            self.normalize is None or len(self.normalize) == 2,
            "dataset.normalize",
            f"must be [mean, std] or null, got {self.normalize}",
        )
        if self.source == "npz":
            check(self.path is not None, "dataset.path", "source 'npz' needs a .npz path")
            check(Path(self.path).is_file(), "dataset.path", f"{self.path} does not exist")


def margin(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """[b] the label's logit minus the log-sum-exp of the other logits: log p/(1 − p) of the
    label (TRAK's output of a classifier)."""
    label = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return label - jax.nn.logsumexp(others, axis=-1)


def logit_margin(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """[b] the label's logit minus the largest other logit (the margin of the area under
    the margin, Pleiss et al. 2020)."""
    label = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return label - others.max(axis=-1)


# What the linear datamodeling score measures on a test example, from its logits and label
# (`lds.output`; higher is better).
OUTPUTS = {
    "loss": lambda logits, labels: -cross_entropy(logits, labels),  # log p(label): dattri's
    "margin": margin,  # TRAK's
}


def measurement_task(model: nn.Module, output: str, layers=None, l2: float = 0.0) -> Task:
    """The task whose per-example function is minus `output` (`OUTPUTS`): the test side of
    the attributions scored by the linear datamodeling score. For "loss" it is the
    classification task itself."""
    if output == "loss":
        return classification_task(model, layers, l2)
    measured = OUTPUTS[output]

    def loss(params, batch):
        x, y = batch
        return -measured(model.apply({"params": params}, x), y)

    fast = FlaxLayerwise(
        model,
        loss_from_outputs=lambda logits, batch: -measured(logits, batch[1]),
        inputs_of=lambda batch: batch[0],
    )
    return Task(loss=loss, layers=layers, l2=l2, layerwise=fast)


def classification_task(model: nn.Module, layers=None, l2: float = 0.0) -> Task:
    """Per-example cross-entropy of an image classifier on batches (x, y)."""

    def loss(params, batch):
        x, y = batch
        return cross_entropy(model.apply({"params": params}, x), y)

    def errors(params, batch):
        x, y = batch
        return error_norm(model.apply({"params": params}, x), y)

    def margins(params, batch):
        x, y = batch
        return logit_margin(model.apply({"params": params}, x), y)

    def outputs(params, batch):
        return model.apply({"params": params}, batch[0])

    def loss_from_outputs(logits, batch):
        return cross_entropy(logits, batch[1])

    def sample_targets(params, batch, key):  # labels drawn from the model's softmax
        x, y = batch
        return x, jax.random.categorical(key, outputs(params, batch)).astype(y.dtype)

    fast = FlaxLayerwise(model, loss_from_outputs=loss_from_outputs, inputs_of=lambda b: b[0])
    return Task(
        loss=loss,
        layers=layers,
        l2=l2,
        layerwise=fast,
        error_norm=errors,
        logit_margin=margins,
        output=measurement_task(model, "margin", layers, l2),
        outputs=outputs,
        loss_from_outputs=loss_from_outputs,
        sample_targets=sample_targets,
    )


class ImagesDomain(Domain):
    """Images [n, h, w, c] with integer labels; noise relabels a share of them."""

    name: ClassVar[str] = "images"
    models: ClassVar[tuple[str, ...]] = tuple(MODELS)
    noise_kinds: ClassVar[tuple[str, ...]] = ("none", "mislabel")
    predicts_classes: ClassVar[bool] = True
    classifier: ClassVar[bool] = True
    retrains: ClassVar[bool] = True

    def check(self, cfg) -> None:
        super().check(cfg)
        check(
            not isinstance(cfg.method.layers, str),
            "method.layers",
            "named subsets are defined for translation models; give path prefixes",
        )
        check(
            cfg.method.sequence_loss == "sum",
            "method.sequence_loss",
            "a per-token mean is defined for translation data; image classifiers have one loss",
        )

    def load(self, cfg) -> ImageData:
        d = cfg.dataset
        data = load_images(
            d.source,
            data_dir=d.data_dir,
            path=d.path,
            subset_fraction=d.subset_fraction,
            subset_size=d.subset_size,
            scale=d.scale,
            seed=cfg.seed,
            first=d.subset_first,
            normalize=None if d.normalize is None else tuple(d.normalize),
        )
        return apply_label_noise(data, cfg.noise.kind, cfg.noise.rate, cfg.seed)

    def arrays(self, data: ImageData) -> tuple[np.ndarray, ...]:
        return data.x_train, data.y_train, data.x_test, data.y_test

    def n_test(self, data: ImageData) -> int:
        return len(data.y_test)

    def build_model(self, cfg, data: ImageData) -> nn.Module:
        return build_model(cfg.model.name, data.num_classes)

    def init_params(self, model: nn.Module, data: ImageData, seed: int):
        return init_params(model, data.input_shape, stream_key(seed, "init"))

    def check_data(self, cfg, data: ImageData, model: nn.Module) -> None:
        smallest = getattr(model, "min_image_size", 1)
        height, width = data.input_shape[:2]
        check(
            min(height, width) >= smallest,
            "dataset",
            f"images of {height}x{width} pixels are too small for model.name="
            f"{cfg.model.name}, which needs at least {smallest}x{smallest}",
        )

    def degenerate(self, model: nn.Module, params, data: ImageData) -> str | None:
        x = data.x_train[:256]
        logits = np.asarray(model.apply({"params": params}, x), np.float64)
        spread = float(np.ptp(logits, axis=0).max())
        if spread <= 1e-6 * max(1.0, float(np.abs(logits).max())):
            return (
                f"the trained {type(model).__name__} gives the same outputs for every image "
                "(its gradients and Hessian vanish, so influence is undefined). Training "
                "collapsed: lower train.learning_rate or check the data"
            )
        return None

    def train(
        self,
        model: nn.Module,
        data: ImageData,
        train_cfg: TrainConfig,
        seed: int,
        progress: bool = True,
        evaluate_at: tuple[int, ...] = (),
    ) -> TrainedModel:
        trained = train(
            model,
            data.x_train,
            data.y_train,
            train_cfg,
            seed,
            data.x_test,
            data.y_test,
            progress=progress,
        )
        trained.info.update(self._fitted_labels(model, trained.params, data))
        return trained

    def _fitted_labels(self, model: nn.Module, params, data: ImageData) -> dict[str, Any]:
        """How far training fitted its labels: the share of training examples predicted as
        labelled, and of the mislabeled ones (memorisation of the noise; None without)."""
        hit = self._predictions(model, params, data.x_train) == data.y_train
        noisy = np.asarray(data.is_noisy, bool)
        return {
            "train_accuracy": float(hit.mean()),
            "noisy_labels_fitted": float(hit[noisy].mean()) if noisy.any() else None,
        }

    def run_metrics(self, cfg, data: ImageData, info: dict[str, Any]) -> dict[str, Any]:
        # Models trained before these were measured have neither (None).
        return {key: info.get(key) for key in ("train_accuracy", "noisy_labels_fitted")}

    def task(self, model: nn.Module, cfg) -> Task:
        return classification_task(model, cfg.method.layers, cfg.train.l2)

    def retraining(self, model: nn.Module, data: ImageData, cfg) -> Retraining:
        measured = OUTPUTS[cfg.lds.output]

        def loss(params, batch, key):
            x, y = batch
            logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
            return cross_entropy(logits, y).mean()

        def output(params, batch):
            x, y = batch
            return measured(model.apply({"params": params}, x), y)

        return Retraining(
            init=lambda key: init_params(model, data.input_shape, key),
            loss=loss,
            arrays=(data.x_train, data.y_train),
            output=output,
            measurement=measurement_task(model, cfg.lds.output, cfg.method.layers, cfg.train.l2),
        )

    def test_batch(self, data: ImageData, index: np.ndarray):
        return data.x_test[index], data.y_test[index]

    def _predictions(self, model: nn.Module, params, x: np.ndarray) -> np.ndarray:
        predict = jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb), -1))
        return np.concatenate(
            [np.asarray(predict(params, x[i : i + 1000])) for i in range(0, len(x), 1000)]
        )

    def predicted_batch(self, model: nn.Module, params, data: ImageData, index):
        x = data.x_test[np.asarray(index)]
        return x, self._predictions(model, params, x).astype(np.int32)

    def correct(self, model: nn.Module, params, data: ImageData) -> np.ndarray:
        return self._predictions(model, params, data.x_test) == data.y_test

    def test_columns(self, model: nn.Module, params, data: ImageData, index) -> dict[str, Any]:
        index = np.asarray(index)
        predicted = self._predictions(model, params, data.x_test[index])
        return {"test_label": data.y_test[index], "test_prediction": predicted}

    def pictures(self, data: ImageData, split: str, index: np.ndarray) -> np.ndarray:
        return (data.x_train if split == "train" else data.x_test)[np.asarray(index)]

    def strata(self, data: ImageData) -> np.ndarray:
        return data.y_train

    def score_columns(self, data: ImageData, index: np.ndarray) -> dict[str, Any]:
        return {"label": data.y_train[index], "clean_label": data.y_train_clean[index]}
