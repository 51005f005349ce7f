"""Baselines that are not influence: per-example scores at the final parameters.

A network that has not memorised its mislabeled examples gives them a high loss, and no
curvature is needed to find them. These scores are what every influence method must beat to
be worth its cost, so they run behind the same interface as the methods (the same pipeline,
streaming engine, caches, `metrics.json` and `scores.csv`):

  loss  the per-example training loss (for translation the pair's summed token loss, or
        the per-token mean with `method.sequence_loss=mean`);
  el2n  ‖softmax(f(x)) − onehot(y)‖₂ (EL2N, Paul et al. 2021, a standard data-pruning
        score), for classifiers.

Neither is an influence between two examples: `influence` refuses, naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ifscale.influence.protocol import Checkpoints, InfluenceMethod
from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError, check


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BaselineState:
    view: ParamView  # the final parameters (no curvature, no checkpoints)


class _Baseline(InfluenceMethod):
    uses_fit_data: ClassVar[bool] = False
    pairwise: ClassVar[bool] = False

    def fit(self, task, params, batches, key, checkpoints: Checkpoints | None = None):
        return BaselineState(ParamView.create(task, params))

    def influence(self, state, train_batch: Batch, test_batch: Batch):
        per_example_only(self.name)


@dataclasses.dataclass(frozen=True)
class LossBaseline(_Baseline):
    """The per-example training loss at the final parameters (the task's loss: for
    translation `method.sequence_loss` picks the summed or per-token mean loss)."""

    progress: bool = True  # nothing slow to show
    name: ClassVar[str] = "loss"

    def self_influence(self, state: BaselineState, batch: Batch) -> jnp.ndarray:
        return _losses(state.view, batch)


@dataclasses.dataclass(frozen=True)
class EL2N(_Baseline):
    """EL2N (Paul et al. 2021): the L2 norm of softmax(logits) − onehot(label) at the final
    parameters, for classifiers (tasks with `Task.error_norm`)."""

    progress: bool = True  # nothing slow to show
    name: ClassVar[str] = "el2n"
    classifiers_only: ClassVar[bool] = True

    def fit(self, task, params, batches, key, checkpoints: Checkpoints | None = None):
        check(
            task.error_norm is not None,
            "method.name",
            "el2n is defined for classifiers (softmax over classes); this task has none",
        )
        return super().fit(task, params, batches, key, checkpoints)

    def self_influence(self, state: BaselineState, batch: Batch) -> jnp.ndarray:
        return _error_norms(state.view, batch)


def per_example_only(name: str):
    """Refuses pairwise use of a per-example score (ConfigError naming `method.name`)."""
    raise ConfigError(
        f"method.name: {name} is a per-example score, not an influence between two "
        "examples; use arnoldi, randproj, exact, lissa, tracin or trak"
    )


@jax.jit
def _losses(view: ParamView, batch: Batch) -> jnp.ndarray:
    return view.losses(view.theta, batch)


@jax.jit
def _error_norms(view: ParamView, batch: Batch) -> jnp.ndarray:
    return view.task.error_norm(view.params(view.theta), batch)


def error_norm(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """[b] EL2N of classifier logits [b, classes] against integer labels [b]."""
    probabilities = jax.nn.softmax(logits, axis=-1)
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=probabilities.dtype)
    return jnp.linalg.norm(probabilities - one_hot, axis=-1)
