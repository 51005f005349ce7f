"""LISSA (Koh & Liang): an iterative inverse-HVP per example."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ifscale.influence.hvp import device_batches, hvp_many
from ifscale.influence.projection import per_example_grads
from ifscale.influence.protocol import InfluenceMethod
from ifscale.influence.task import Batch, ParamView, check_curvature, laid_out_views
from ifscale.utils import check


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LissaState:
    view: ParamView
    batches: list  # the HVP batches (equal sizes), cycled
    measure: ParamView | None = None  # the test side's loss (`measuring`); None: training


@dataclasses.dataclass(frozen=True)
class Lissa(InfluenceMethod):
    """LISSA (Koh & Liang): an iterative inverse-HVP per example.

    h_0 = v; h_j = v + (I - H_j/scale - damping·I) h_{j-1}; H⁻¹v ≈ h_r / scale, where H_j
    is the Hessian on fit batch j (cycled). It converges to (H + damping·scale·I)⁻¹ v when
    scale exceeds H's largest eigenvalue. Right-hand sides of a batch are solved together.

    Attributes:
      r: recursion depth (HVPs per example).
      scale: must exceed the largest eigenvalue of H for convergence.
      damping: shifts H by damping·scale (helps when H is indefinite).
      curvature: "hessian" (of the mean loss) or "ggn": its Gauss–Newton part Jᵀ H_f J
        (positive semi-definite for a loss convex in the outputs, e.g. cross-entropy; a
        JVP, an output-space product and a VJP per product). Part of the fit.
    """

    r: int = 10
    scale: float = 10.0
    damping: float = 0.001
    curvature: str = "hessian"
    progress: bool = True
    name: ClassVar[str] = "lissa"

    def __post_init__(self):
        check_curvature(self.curvature)
        check(self.r >= 1, "method.r", f"must be >= 1, got {self.r}")
        check(self.scale > 0, "method.scale", f"must be > 0, got {self.scale}")
        check(self.damping >= 0, "method.damping", "must be >= 0")

    def fit(self, task, params, batches, key, checkpoints=None) -> LissaState:
        view = ParamView.create(task, params, example=batches[0]).with_curvature(self.curvature)
        return LissaState(view, device_batches(batches))

    def prepare(self, state: LissaState, batch, choices=None, mesh=None) -> LissaState:
        """On `mesh`, the parameters laid out over its `model` axis (`ParamView.laid_out`);
        the iterates H⁻¹v stay [m, p] (each product pads them and cuts them back)."""
        return laid_out_views(state, mesh)

    def inverse_hvp(self, state: LissaState, vs: jnp.ndarray) -> jnp.ndarray:
        """[m, p] -> [m, p] approximations of H⁻¹ v for each row v."""
        return _lissa(state, vs, self.r, self.scale, self.damping)

    def self_influence(self, state: LissaState, batch: Batch) -> jnp.ndarray:
        g = per_example_grads(state.view, batch)
        return jnp.sum(g * self.inverse_hvp(state, g), axis=-1)

    def influence(self, state: LissaState, train_batch: Batch, test_batch: Batch):
        return self.influence_on(state, train_batch, self.test_side(state, test_batch))

    def measuring(self, state: LissaState, task) -> LissaState:
        return dataclasses.replace(state, measure=state.view.measuring(task))

    def test_side(self, state: LissaState, test_batch: Batch) -> jnp.ndarray:
        """H⁻¹∇L(z) [m, p] (Koh & Liang's s_test): r HVPs per test example, once."""
        return self.inverse_hvp(state, per_example_grads(state.measure or state.view, test_batch))

    def influence_on(self, state: LissaState, train_batch: Batch, test_side: jnp.ndarray):
        return test_side @ per_example_grads(state.view, train_batch).T


def _lissa(state: LissaState, vs, r: int, scale, damping):
    # A Python loop of jitted steps: XLA's CPU backend runs loops of convolutions inside
    # one jit (fori_loop) several times slower.
    batches = state.batches
    h = vs
    for j in range(r):
        h = _lissa_step(state.view, batches[j % len(batches)], vs, h, scale, damping)
    return h / scale


@jax.jit
def _lissa_step(view, batch, vs, h, scale, damping):
    return vs + (1.0 - damping) * h - hvp_many(view, batch, h) / scale
