"""Training-dynamics baselines: per-example scores read off the kept training checkpoints at
the cost of a forward pass each, the fair rivals of TracIn over the same checkpoints.

  checkpoint_loss  the per-example training loss averaged over the checkpoints (an example
                   the network fits late, or never, keeps a high mean loss);
  aum              minus the area under the margin (Pleiss et al., NeurIPS 2020): the mean
                   over the checkpoints of the label's logit minus the largest other logit,
                   negated so that, like every score here, higher is more suspect (a
                   mislabeled example's label is outvoted by its true class for most of
                   training: a low, often negative, margin). For classifiers.

Each uses `checkpoints` evenly spaced kept checkpoints ending with the last (null: all of
them), at least two (one checkpoint is the final model: use `loss`); neither is an influence
between two examples.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp

from ifscale.influence.methods.baselines import per_example_only
from ifscale.influence.protocol import Checkpoints, InfluenceMethod
from ifscale.influence.sharding import rows_over_model
from ifscale.influence.task import Batch, ParamView, laid_out_views, view_of_params
from ifscale.utils import check


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DynamicsState:
    view: ParamView
    # [K, p] the perturbed parameters at each chosen checkpoint ([K, padded] split over
    # `model` once prepared for such a mesh).
    thetas: jnp.ndarray


class _Dynamics(InfluenceMethod):
    uses_fit_data: ClassVar[bool] = False
    pairwise: ClassVar[bool] = False
    checkpoints: int | None = None

    def _check_checkpoints(self) -> None:
        check(
            self.checkpoints is None or self.checkpoints >= 2,
            "method.checkpoints",
            f"must be >= 2 or null (all kept), got {self.checkpoints}: one checkpoint is the "
            "final model (use method=loss)",
        )

    def checkpoints_needed(self) -> int:
        return self.checkpoints or 2

    def fit(self, task, params, batches, key, checkpoints: Checkpoints | None = None):
        check(checkpoints is not None, "method.name", f"{self.name} needs the training checkpoints")
        available = len(checkpoints.lrs)
        wanted = self.checkpoints or available
        check(
            2 <= wanted <= available,
            "method.checkpoints",
            f"{self.name} needs at least 2 checkpoints and at most the {available} kept "
            "(raise train.kept_checkpoints)",
        )
        view = ParamView.create(task, params)
        thetas = [
            view_of_params(
                task, jax.tree_util.tree_map(lambda a, i=i: a[i], checkpoints.params), view
            ).theta
            for i in checkpoints.evenly_spaced(wanted)
        ]
        return DynamicsState(view, jnp.stack(thetas))

    def prepare(self, state: DynamicsState, batch, choices=None, mesh=None) -> DynamicsState:
        thetas = rows_over_model(state.thetas, state.view.size, mesh)
        return laid_out_views(dataclasses.replace(state, thetas=thetas), mesh)

    def influence(self, state, train_batch: Batch, test_batch: Batch):
        per_example_only(self.name)


@dataclasses.dataclass(frozen=True)
class CheckpointLoss(_Dynamics):
    """The per-example training loss averaged over the kept checkpoints."""

    checkpoints: int | None = None
    progress: bool = True  # nothing slow to show
    name: ClassVar[str] = "checkpoint_loss"

    def __post_init__(self):
        self._check_checkpoints()

    def self_influence(self, state: DynamicsState, batch: Batch) -> jnp.ndarray:
        return _mean_over(state, batch, _losses)


@dataclasses.dataclass(frozen=True)
class AreaUnderMargin(_Dynamics):
    """Minus the area under the margin (Pleiss et al. 2020): −mean over the kept
    checkpoints of (the label's logit − the largest other logit), for classifiers."""

    checkpoints: int | None = None
    progress: bool = True  # nothing slow to show
    name: ClassVar[str] = "aum"
    classifiers_only: ClassVar[bool] = True

    def __post_init__(self):
        self._check_checkpoints()

    def fit(self, task, params, batches, key, checkpoints: Checkpoints | None = None):
        check(
            task.logit_margin is not None,
            "method.name",
            "aum is defined for classifiers (a logit per class); this task has none",
        )
        return super().fit(task, params, batches, key, checkpoints)

    def self_influence(self, state: DynamicsState, batch: Batch) -> jnp.ndarray:
        return -_mean_over(state, batch, _margins)


def _mean_over(state: DynamicsState, batch: Batch, score) -> jnp.ndarray:
    """[b] the mean over the checkpoints of `score(view at the checkpoint, batch)`."""
    total = 0.0
    for theta in state.thetas:  # a Python loop of one compiled forward pass each
        total = total + _forward(score, state.view.with_theta(theta), batch)
    return total / state.thetas.shape[0]


@functools.partial(jax.jit, static_argnums=0)
def _forward(score, view: ParamView, batch: Batch) -> jnp.ndarray:
    return score(view, batch)


def _losses(view: ParamView, batch: Batch) -> jnp.ndarray:
    return view.losses(view.theta, batch)


def _margins(view: ParamView, batch: Batch) -> jnp.ndarray:
    return view.task.logit_margin(view.params(view.theta), batch)
