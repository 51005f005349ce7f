"""The model of a run and how it is trained."""

from __future__ import annotations

import dataclasses
from typing import Any

from ifscale.utils import check

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class ModelConfig:
    """A registered model (`conf/model/*.yaml`); the domain of the data says which it
    accepts."""

    name: str = "cnn_large"


@dataclasses.dataclass
class CNNConfig(ModelConfig):
    """The MNIST classifiers (`ifscale.models.cnn`, `ifscale.models.mlp`): a name, no
    hyperparameters."""


@dataclasses.dataclass
class TransformerConfig(ModelConfig):
    """The encoder-decoder Transformer (`ifscale.models.transformer`).

    Attributes:
      width: model width; heads: attention heads (must divide width); hidden: feed-forward
        width; encoder_layers, decoder_layers: block counts; dropout: while training.
    """

    name: str = "transformer_small"
    width: int = 96
    heads: int = 4
    hidden: int = 384
    encoder_layers: int = 2
    decoder_layers: int = 4
    dropout: float = 0.1

    def __post_init__(self):
        for key in ("width", "heads", "hidden", "encoder_layers", "decoder_layers"):
            check(getattr(self, key) >= 1, f"model.{key}", "must be >= 1")
        check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        check(
            self.width % self.heads == 0,
            "model.heads",
            f"width {self.width} must be divisible by heads {self.heads}",
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


# The schema of each registered model (`ifscale.models.MODELS`), by `model.name`.
MODEL_SCHEMAS: dict[str, type[ModelConfig]] = {
    "cnn_small": CNNConfig,
    "cnn_large": CNNConfig,
    "logreg": CNNConfig,
    "mlp": CNNConfig,
    "transformer_tiny": TransformerConfig,
    "transformer_small": TransformerConfig,
}


@dataclasses.dataclass
class TrainConfig:
    """How a model is trained (`conf/train/default.yaml`; `ifscale.train`).

    Attributes:
      optimizer: "sgd" (with `momentum`) or "adam".
      learning_rate: peak learning rate.
      momentum: SGD momentum (0 for plain SGD).
      schedule: "constant" or "cosine" (decays to 0 over training).
      warmup_steps: linear warm-up from 0 to `learning_rate` over this many steps first
        (the Transformer's Adam warm-up); 0: none.
      batch_size: examples per step; the remainder of each shuffled epoch is dropped so
        every step has the same shape (one compilation).
      epochs: passes over the training set.
      steps: if set, train exactly this many steps instead (epochs as needed, the last
        one cut short): equal budgets on training sets of different sizes.
      kept_checkpoints: K evenly spaced checkpoints kept, the last being the final
        parameters (TracIn[k] uses k of them).
      l2: coefficient of 0.5 * l2 * ||params||^2 added to the training loss.
      log_every: steps between progress-bar updates (and non-finite-loss checks).
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_steps: int = 0
    batch_size: int = 128
    epochs: int = 2
    steps: int | None = None
    kept_checkpoints: int = 100
    l2: float = 0.0
    log_every: int = 20

    def __post_init__(self) -> None:
        check(
            self.optimizer in OPTIMIZERS,
            "train.optimizer",
            f"must be one of {OPTIMIZERS}, got {self.optimizer!r}",
        )
        check(
            self.schedule in SCHEDULES,
            "train.schedule",
            f"must be one of {SCHEDULES}, got {self.schedule!r}",
        )
        check(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        check(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check(self.epochs >= 1, "train.epochs", "must be >= 1")
        check(self.steps is None or self.steps >= 1, "train.steps", "must be >= 1 or null")
        check(self.kept_checkpoints >= 1, "train.kept_checkpoints", "must be >= 1")
        check(self.l2 >= 0, "train.l2", "must be >= 0")
        check(self.log_every >= 1, "train.log_every", "must be >= 1")
