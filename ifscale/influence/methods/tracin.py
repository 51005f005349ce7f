"""TracIn (Pruthi et al.): gradient dot products summed over training checkpoints."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ifscale.influence.projection import per_example_grads, per_example_sq_norms
from ifscale.influence.protocol import Checkpoints, InfluenceMethod
from ifscale.influence.sharding import rows_over_model
from ifscale.influence.task import Batch, ParamView, laid_out_views, view_of_params
from ifscale.utils import check


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TracInState:
    view: ParamView
    # [k, p] the perturbed parameters at each checkpoint; prepared for a mesh with `model` > 1,
    # [k, padded] split over `model` (`rows_over_model`), each row kept split when used.
    thetas: jnp.ndarray
    lrs: jnp.ndarray  # [k]
    measure: ParamView | None = None  # the test side's loss (`measuring`); None: training


@dataclasses.dataclass(frozen=True)
class TracIn(InfluenceMethod):
    """TracIn (Pruthi et al.): Σ_t η_t ⟨∇L(x; θ_t), ∇L(z; θ_t)⟩ over training checkpoints.

    Attributes:
      checkpoints: k = 1 uses the last checkpoint; k > 1 uses k evenly spaced checkpoints
        of those kept by training, ending with the last.
    """

    checkpoints: int = 1
    progress: bool = True  # nothing slow to show: TracIn's fit only gathers checkpoints
    name: ClassVar[str] = "tracin"

    def __post_init__(self):
        check(self.checkpoints >= 1, "method.checkpoints", "must be >= 1")

    def checkpoints_needed(self) -> int:
        return self.checkpoints

    def fit(self, task, params, batches, key, checkpoints: Checkpoints | None = None):
        check(
            checkpoints is not None, "method.checkpoints", "TracIn needs the training checkpoints"
        )
        available = len(checkpoints.lrs)
        check(
            self.checkpoints <= available,
            "method.checkpoints",
            f"{self.checkpoints} requested but training kept {available} "
            "(raise train.kept_checkpoints)",
        )
        chosen = checkpoints.evenly_spaced(self.checkpoints)
        view = ParamView.create(task, params, example=batches[0] if batches else None)
        thetas = [
            view_of_params(
                task, jax.tree_util.tree_map(lambda a, i=i: a[i], checkpoints.params), view
            ).theta
            for i in chosen
        ]
        return TracInState(
            view,
            jnp.stack(thetas),
            jnp.asarray(np.asarray(checkpoints.lrs)[chosen], view.dtype),
        )

    def prepare(self, state: TracInState, batch, choices=None, mesh=None) -> TracInState:
        thetas = rows_over_model(state.thetas, state.view.size, mesh)
        return laid_out_views(dataclasses.replace(state, thetas=thetas), mesh)

    def self_influence(self, state: TracInState, batch: Batch) -> jnp.ndarray:
        return _tracin_self(state, batch)

    def influence(self, state: TracInState, train_batch: Batch, test_batch: Batch):
        return self.influence_on(state, train_batch, self.test_side(state, test_batch))

    def measuring(self, state: TracInState, task) -> TracInState:
        return dataclasses.replace(state, measure=state.view.measuring(task))

    def test_side(self, state: TracInState, test_batch: Batch) -> list[jnp.ndarray]:
        """η_t ∇L(z; θ_t) [m, p] at each checkpoint t."""
        view = state.measure or state.view
        return [
            per_example_grads(view.with_theta(theta), test_batch) * lr
            for theta, lr in zip(state.thetas, state.lrs, strict=True)
        ]

    def influence_on(self, state: TracInState, train_batch: Batch, test_side):
        total = 0.0
        for theta, side in zip(state.thetas, test_side, strict=True):
            view = state.view.with_theta(theta)
            total = total + _dots(side, view, train_batch)
        return total


# Python loops over checkpoints of jitted per-checkpoint work (see `_lissa`).
def _tracin_self(state: TracInState, batch):
    total = 0.0
    for theta, lr in zip(state.thetas, state.lrs, strict=True):
        view = state.view.with_theta(theta)
        total = total + per_example_sq_norms(view, batch) * lr
    return total


@jax.jit
def _dots(test_side, view, train_batch):
    return test_side @ per_example_grads(view, train_batch).T
