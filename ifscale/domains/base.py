"""A domain of data: one object per domain owns everything the runner must not ask about.

A domain (images, translation, ...) loads its data with their noise, builds and trains its
models, gives the influence `Task` of a model, and says which columns describe a scored
example; it returns tables and the data of pictures, and the stages write them. The runner
(`ifscale.run`) runs its stages over a domain and never asks which one it has, so a new
domain is a new `Domain` subclass, its dataset schema and one `ifscale.domains.register`
call.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from ifscale.utils import check

if TYPE_CHECKING:
    import flax.linen as nn

    from ifscale.config import RunConfig, TrainConfig
    from ifscale.influence.task import Batch, Task
    from ifscale.train import TrainedModel


class Dataset(Protocol):
    """What the runner reads from a domain's loaded data."""

    #: [n] True where noise changed the training example (the ground truth of detection).
    is_noisy: np.ndarray
    #: [n] each training example's position in its source.
    train_index: np.ndarray

    @property
    def n_train(self) -> int: ...

    def train_batch(self, index: np.ndarray) -> Batch:
        """The training examples at `index`, as the model's batch."""
        ...


@dataclasses.dataclass(frozen=True)
class Retraining:
    """What retraining a domain's model many times needs (`ifscale.retraining`, the ground
    truth of the linear datamodeling score).

    Attributes:
      init: `key -> params` of an untrained model.
      loss: `(params, batch, key) -> scalar` mean training loss of a batch (a tuple of row
        slices of `arrays`; `key` seeds dropout).
      arrays: the training set.
      output: `(params, batch) -> [b]` what is measured on test examples (higher is better).
      measurement: the task whose per-example function is minus `output`: the test side of
        an attribution (`InfluenceMethod.measuring`), so that a positive attribution
        predicts a higher output.
    """

    init: Any
    loss: Any
    arrays: tuple
    output: Any
    measurement: Task


class Domain(abc.ABC):
    """One domain of data and the models trained on it."""

    #: `dataset.kind` of its configs.
    name: ClassVar[str]
    #: the models it can train (`model.name`).
    models: ClassVar[tuple[str, ...]]
    #: the noise it can add (`noise.kind`).
    noise_kinds: ClassVar[tuple[str, ...]]
    #: whether its models predict one class per example (`correct`, `predicted_batch`), so
    #: that `explain.select=misclassified` and `explain.target=prediction` are defined.
    predicts_classes: ClassVar[bool] = False
    #: whether its models output a logit per class, so that the methods defined for
    #: classifiers only (EL2N, the area under the margin, TRAK: the task's `error_norm`,
    #: `logit_margin`, `output`) are allowed; others are refused before training.
    classifier: ClassVar[bool] = False
    #: whether it defines a data cleaning (`stage=select`, `select`).
    selects: ClassVar[bool] = False
    #: whether its models can be retrained many at a time (`retraining`), so that the
    #: linear datamodeling score is defined (`stage=retrain`, `stage=lds`).
    retrains: ClassVar[bool] = False

    def check(self, cfg: RunConfig) -> None:
        """Refuses (ConfigError naming the key) a run whose other parts do not fit this
        domain; a domain extends it for its own options."""
        check(
            cfg.model.name in self.models,
            "model.name",
            f"{cfg.model.name} does not fit {self.name} data ({cfg.dataset.name}); "
            f"{self.name} models: {list(self.models)}",
        )
        check(
            cfg.noise.kind in self.noise_kinds,
            "noise.kind",
            f"{self.name} data take noise {self.noise_kinds}, got {cfg.noise.kind!r}",
        )
        check(
            cfg.stage != "select" or self.selects,
            "select.method",
            f"data cleaning (stage=select) is not defined for {self.name} data",
        )
        check(
            cfg.stage not in ("retrain", "lds") or self.retrains,
            "stage",
            f"the linear datamodeling score (stage={cfg.stage}) is defined for classifiers "
            f"(images), not {self.name} data",
        )
        if cfg.stage == "explain" and not self.predicts_classes:
            check(
                cfg.explain.target == "label",
                "explain.target",
                f"{self.name} models predict no single class: use explain.target=label",
            )
            check(
                cfg.explain.test_indices is not None or cfg.explain.select != "misclassified",
                "explain.select",
                f"{self.name} models predict no single class: use highest_loss or random",
            )

    @abc.abstractmethod
    def load(self, cfg: RunConfig) -> Dataset:
        """The training and test data of `cfg.dataset` with `cfg.noise` applied."""

    @abc.abstractmethod
    def arrays(self, data: Dataset) -> tuple[np.ndarray, ...]:
        """The arrays a model is trained and tested on (content-fingerprinted for caches)."""

    @abc.abstractmethod
    def n_test(self, data: Dataset) -> int:
        """The number of test examples."""

    @abc.abstractmethod
    def build_model(self, cfg: RunConfig, data: Dataset) -> nn.Module:
        """The untrained Flax module of `cfg.model` for `data`."""

    @abc.abstractmethod
    def train(
        self,
        model: nn.Module,
        data: Dataset,
        train: TrainConfig,
        seed: int,
        progress: bool = True,
        evaluate_at: tuple[int, ...] = (),
    ) -> TrainedModel:
        """Trains `model` on `data`'s training set; `info` carries its test metrics (also
        after each step count in `evaluate_at`)."""

    @abc.abstractmethod
    def task(self, model: nn.Module, cfg: RunConfig) -> Task:
        """The influence task of a trained `model` under `cfg.method`."""

    def init_params(self, model: nn.Module, data: Dataset, seed: int):
        """The untrained parameters of `model` for `data` (traced for their shapes only, to
        check `method.layers` before training); None: not checked."""
        return None

    def check_data(self, cfg: RunConfig, data: Dataset, model: nn.Module) -> None:
        """Refuses (ConfigError) loaded data that `model` cannot take; by default none."""
        return None

    def degenerate(self, model: nn.Module, params, data: Dataset) -> str | None:
        """Why the trained model is degenerate (e.g. outputs that do not depend on the input,
        so every gradient and the Hessian vanish), or None."""
        return None

    # ---- explaining test predictions (`stage=explain`, `ifscale.run.stages.explain`)

    @abc.abstractmethod
    def test_batch(self, data: Dataset, index: np.ndarray) -> Batch:
        """The test examples at `index`, as the model's batch."""

    def predicted_batch(self, model: nn.Module, params, data: Dataset, index) -> Batch | None:
        """The test examples at `index` with the model's own prediction as their label
        (`explain.target=prediction`); None where the domain does not define it."""
        return None

    def correct(self, model: nn.Module, params, data: Dataset) -> np.ndarray | None:
        """[m] whether the model predicts each test example right; None where the domain has
        no single right answer (translation), so `explain.select=misclassified` is refused."""
        return None

    def test_columns(self, model: nn.Module, params, data: Dataset, index) -> dict[str, Any]:
        """Columns of `explanations.csv` that describe the test examples at `index` (their
        labels and predictions, or their text and translation)."""
        return {}

    def pictures(self, data: Dataset, split: str, index: np.ndarray) -> np.ndarray | None:
        """[len(index), h, w, c] the examples at `index` of `split` ("train" or "test") as
        images, for the figure of `stage=explain`; None where the domain's examples are not
        pictures (its explanations are then written as a table of text)."""
        return None

    def retraining(self, model: nn.Module, data: Dataset, cfg: RunConfig) -> Retraining:
        """What retraining `model` on subsets of `data` needs, measuring `cfg.lds.output`;
        defined where `retrains`."""
        raise NotImplementedError

    def select(self, cfg: RunConfig, prep, score_pool) -> tuple[dict[str, Any], Any]:
        """`stage=select`: the domain's data cleaning (`SelectConfig`), as (metrics, the
        scores table of the pool or None); `score_pool(index)` scores the pool's
        self-influence. By default the domain has none (refused in `check`)."""
        raise NotImplementedError

    def strata(self, data: Dataset) -> np.ndarray:
        """[n] labels within which scored subsets are stratified; by default one stratum."""
        return np.zeros(data.n_train, np.int64)

    @abc.abstractmethod
    def score_columns(self, data: Dataset, index: np.ndarray) -> dict[str, Any]:
        """Columns of `scores.csv` that describe the training examples at `index`."""

    def run_metrics(self, cfg: RunConfig, data: Dataset, info: dict[str, Any]) -> dict[str, Any]:
        """Metrics of the domain beyond test accuracy, from the data and the training `info`;
        by default none."""
        return {}
