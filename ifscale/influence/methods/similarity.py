"""Gradient similarity at the trained parameters, without curvature: the dot product
⟨∇L(z), ∇L(x)⟩ ("graddot", TracIn [1] without its learning rate) and the cosine of the two
gradients ("gradcos"): the baselines of attribution benchmarks (dattri's Grad-Dot and
Grad-Cos)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ifscale.influence.projection import per_example_grads, per_example_sq_norms
from ifscale.influence.protocol import InfluenceMethod
from ifscale.influence.task import Batch, ParamView


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SimilarityState:
    view: ParamView
    measure: ParamView | None = None  # the test side's loss (`measuring`); None: training


class _GradientSimilarity(InfluenceMethod):
    """⟨∇L(z), ∇L(x)⟩, or with `cosine` each gradient divided by its norm."""

    cosine: ClassVar[bool] = False

    def fit(self, task, params, batches, key, checkpoints=None) -> SimilarityState:
        return SimilarityState(ParamView.create(task, params, example=batches[0]))

    def _grads(self, view: ParamView, batch: Batch) -> jnp.ndarray:
        g = per_example_grads(view, batch)
        if self.cosine:
            g = g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-30)
        return g

    def self_influence(self, state: SimilarityState, batch: Batch) -> jnp.ndarray:
        norms = per_example_sq_norms(state.view, batch)
        return jnp.ones_like(norms) if self.cosine else norms

    def influence(self, state: SimilarityState, train_batch: Batch, test_batch: Batch):
        return self.influence_on(state, train_batch, self.test_side(state, test_batch))

    def measuring(self, state: SimilarityState, task) -> SimilarityState:
        return dataclasses.replace(state, measure=state.view.measuring(task))

    def test_side(self, state: SimilarityState, test_batch: Batch) -> jnp.ndarray:
        return self._grads(state.measure or state.view, test_batch)  # [m, p]

    def influence_on(self, state: SimilarityState, train_batch: Batch, test_side):
        return test_side @ self._grads(state.view, train_batch).T


@dataclasses.dataclass(frozen=True)
class GradientDot(_GradientSimilarity):
    """⟨∇L(z), ∇L(x)⟩ at the trained parameters (self-influence: ‖∇L(x)‖²)."""

    progress: bool = True
    name: ClassVar[str] = "graddot"


@dataclasses.dataclass(frozen=True)
class GradientCosine(_GradientSimilarity):
    """cos(∇L(z), ∇L(x)) at the trained parameters (self-influence: 1, uninformative)."""

    progress: bool = True
    name: ClassVar[str] = "gradcos"
    cosine: ClassVar[bool] = True
