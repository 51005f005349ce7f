"""What Exact, Arnoldi and RandProj share: one state and its scoring.

The state is directions U [k, p] and a symmetric inner matrix M [k, k], with
influence(x, z) = (U g_z)ᵀ M (U g_x).

With `tail` (the option of that name), the directions the method drops are not dropped: they
get one curvature κ = tail · (the smallest kept curvature), so the inverse becomes
U M Uᵀ + (I − P)/κ with P = Uᵀ(UUᵀ)⁻¹U the projector on the kept directions, and
influence(x, z) = (U g_z)ᵀ (M − W/κ) (U g_x) + ⟨g_z, g_x⟩/κ with W = (UUᵀ)⁻¹ (I for the
orthonormal eigenvectors of Arnoldi and Exact). Self-influence needs one more number per
example, ‖g_x‖²; pairwise influence needs the per-example gradients of both sides (the cost
of a gradient dot product). For Arnoldi and Exact, U holds eigenvectors of H and
M = diag(1/λ); for RandProj, U = Qᵀ G and M = diag(1/λ) from the eigendecomposition
H̃ = G H Gᵀ = Q Λ Qᵀ, which equals ⟨G g_z, H̃⁻¹ G g_x⟩ exactly. A subclass implements
`spectrum` (the expensive, stored part) and `select` (which values to keep and how to invert
them).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifscale.influence import layerwise
from ifscale.influence.projection import (
    ROUTES,
    choose_route,
    grad_route_is_wrong,
    per_example_grads,
    per_example_sq_norms,
    project,
    project_prepared,
    rule_route,
)
from ifscale.influence.protocol import SpectralMethod, Spectrum
from ifscale.influence.sharding import Layout
from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError, check

log = logging.getLogger(__name__)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProjectedState:
    """influence(x, z) = (U g_z)ᵀ M (U g_x).

    Attributes:
      view: the perturbed parameters at the trained values.
      directions: U [k, p].
      inner: M [k, k], symmetric.
      eigvals: [k] the curvature values behind M (eigenvalues of H, Ritz values, or
        eigenvalues of H̃), for inspection (Figure 2).
      route: the projection route ("grad", "jvp", "layerwise"), or "auto"/"fastest"
        until `prepare` chooses one.
      layout: how `directions` are laid out on the mesh (sharded over `model`, padded).
      prepared: U laid out per layer for the layerwise route (set by `prepare`).
      measure: the view whose loss the test side differentiates (`measuring`); None: the
        training loss.
      tail: 1/κ, the inverse curvature given to the directions not kept (`tail` option);
        None: they are dropped.
      tail_gram: W = (UUᵀ)⁻¹ [k, k], with `tail`.
    """

    view: ParamView
    directions: jnp.ndarray
    inner: jnp.ndarray
    eigvals: jnp.ndarray
    route: str = dataclasses.field(default="auto", metadata={"static": True})
    layout: Layout | None = dataclasses.field(default=None, metadata={"static": True})
    prepared: dict | None = None
    measure: ParamView | None = None
    tail: jnp.ndarray | None = None
    tail_gram: jnp.ndarray | None = None


def inverse_of_eigenvalues(values: np.ndarray, rcond: float, what: str) -> np.ndarray:
    """1/λ, with 0 for |λ| <= rcond · max|λ| (a pseudo-inverse: singular directions carry no
    curvature information and would blow the score up)."""
    values = np.asarray(values, np.float64)
    cutoff = rcond * np.abs(values).max(initial=0.0)
    keep = np.abs(values) > cutoff
    if not keep.all():
        log.warning(
            "%s: %d of %d eigenvalues are below rcond=%g x max|λ| and are dropped from the inverse",
            what,
            int((~keep).sum()),
            len(values),
            rcond,
        )
    return np.where(keep, 1.0 / np.where(keep, values, 1.0), 0.0)


@jax.jit
def _quadratic(p: jnp.ndarray, inner: jnp.ndarray) -> jnp.ndarray:
    return jnp.sum((p @ inner) * p, axis=-1)


def by_abs_value(values: np.ndarray, vectors) -> Spectrum:
    order = np.argsort(-np.abs(values), kind="stable")
    return Spectrum(np.asarray(values, np.float64)[order], jnp.asarray(vectors)[order])


def check_tail(tail: float | None) -> None:
    check(tail is None or tail > 0, "method.tail", f"must be > 0 or null, got {tail}")


class ProjectedScoring:
    """The scoring of a `ProjectedState`, whatever made it: the projection route chosen
    once (`prepare`), self-influence, the test side and pairwise influence. `Projected`
    methods inherit it; TRAK applies it to each model of its ensemble."""

    def prepare(
        self,
        state: ProjectedState,
        batch: Batch,
        choices: dict[str, Any] | None = None,
        mesh=None,
    ) -> ProjectedState:
        """Fixes the projection route and lays the directions out once for the layerwise
        route. "auto" and "fastest" take the route recorded in `choices` (an earlier job of
        the same scoring), else "auto" applies `rule_route` and "fastest" times the routes
        on `batch`. The grad route is never chosen, and refused when asked for, where it
        would be wrong on `mesh` (`grad_route_is_wrong`)."""
        route = state.route
        if route in ("auto", "fastest"):
            route = (choices or {}).get("route", route)
        # Per-layer products need every direction whole on each device: not with a
        # parameter axis sharded over `model`.
        per_layer = state.view.per_layer and (state.layout is None or state.layout.model == 1)
        grad = route in ("auto", "fastest", "grad") and not grad_route_is_wrong(
            state.view, batch, mesh
        )
        if route == "auto":
            route = rule_route(state.view, batch, per_layer, grad)
        elif route == "fastest":
            route = choose_route(state.view, state.directions, batch, per_layer, grad)
        if route == "grad" and not grad:
            raise ConfigError(
                "method.route: 'grad' gives wrong per-example gradients of a convolution "
                "when several CPU devices share the batch (an XLA CPU fault); use "
                "method.route=jvp (or layerwise), or mesh.data=1"
            )
        if state.tail is not None and state.layout is not None and state.layout.model > 1:
            raise ConfigError(
                "method.tail: the dropped directions need whole per-example gradients, "
                "not a parameter axis sharded over mesh.model; use mesh.model=1"
            )
        if route == "layerwise" and not per_layer:
            raise ConfigError(
                "method.route: 'layerwise' needs every perturbed parameter to be a "
                "kernel or bias of a Flax Dense or Conv layer (stride 1), and mesh.model=1"
            )
        prepared = state.prepared
        if route == "layerwise" and prepared is None:
            prepared = jax.jit(layerwise.prepare)(state.view, state.directions)
        return dataclasses.replace(state, route=route, prepared=prepared)

    def choices(self, state: ProjectedState) -> dict[str, Any]:
        return {"route": state.route}

    def fitted_metrics(self, state: ProjectedState) -> dict[str, Any]:
        return {"eigenvalues": np.asarray(state.eigvals, np.float64).tolist()}

    def projections(self, state: ProjectedState, batch: Batch) -> jnp.ndarray:
        """[b, k] U·g of each example of `batch` on the route `prepare` chose."""
        if state.route == "layerwise" and state.prepared is not None:
            return project_prepared(state.view, state.prepared, state.directions.shape[0], batch)
        return project(state.view, state.directions, batch, state.route)

    def self_influence(self, state: ProjectedState, batch: Batch) -> jnp.ndarray:
        projected = self.projections(state, batch)
        scores = _quadratic(projected, state.inner)
        if state.tail is None:
            return scores
        rest = per_example_sq_norms(state.view, batch) - _quadratic(projected, state.tail_gram)
        return scores + state.tail * rest

    def influence(self, state: ProjectedState, train_batch: Batch, test_batch: Batch):
        return self.influence_on(state, train_batch, self.test_side(state, test_batch))

    def measuring(self, state: ProjectedState, task) -> ProjectedState:
        return dataclasses.replace(state, measure=state.view.measuring(task))

    def test_side(self, state: ProjectedState, test_batch: Batch) -> jnp.ndarray:
        if state.measure is not None:
            state = dataclasses.replace(state, view=state.measure, measure=None)
        projected = self.projections(state, test_batch)
        if state.tail is None:
            return projected @ state.inner  # [m, k]: M·(U g_z)
        # [m, k + p]: (M − W/κ)·(U g_z), then g_z/κ (against [U g_x, g_x]).
        kept = projected @ (state.inner - state.tail * state.tail_gram)
        return jnp.concatenate([kept, state.tail * per_example_grads(state.view, test_batch)], 1)

    def influence_on(self, state: ProjectedState, train_batch: Batch, test_side: jnp.ndarray):
        projected = self.projections(state, train_batch)
        if state.tail is not None:
            grads = per_example_grads(state.view, train_batch)
            projected = jnp.concatenate([projected, grads.astype(projected.dtype)], 1)
        return test_side @ projected.T


class Projected(ProjectedScoring, SpectralMethod):
    """What the methods with a `ProjectedState` share: a subclass implements `spectrum`
    and `select` (which values to keep and how to invert them)."""

    route: str = "auto"
    tail: float | None = None

    def select(self, spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices into the spectrum to keep, the curvature values used for them, and
        their inverses)."""
        raise NotImplementedError

    def from_spectrum(
        self, view: ParamView, spectrum: Spectrum, layout: Layout | None = None
    ) -> ProjectedState:
        keep, values, inverse = self.select(spectrum)
        dtype = view.dtype
        if np.array_equal(keep, np.arange(len(spectrum.vectors))):
            directions = spectrum.vectors  # all of them, in order: no copy (k x p is large)
        else:
            directions = spectrum.vectors[jnp.asarray(keep, jnp.int32)]
        # Directions of a bfloat16 basis (`basis_dtype`) stay narrow, at half the memory:
        # every route widens them and sums in the parameters' dtype.
        if directions.dtype != jnp.bfloat16:
            directions = jnp.asarray(directions, dtype)
        tail, tail_gram = None, None
        if self.tail is not None:
            tail, tail_gram = _tail(self.tail, directions, values, inverse)
        return ProjectedState(
            view=view,
            directions=directions,
            inner=jnp.asarray(np.diag(inverse), dtype),
            eigvals=jnp.asarray(values, dtype),
            route=self.route,
            layout=layout or Layout.create(view.size),
            tail=None if tail is None else jnp.asarray(tail, dtype),
            tail_gram=None if tail_gram is None else jnp.asarray(tail_gram, dtype),
        )


def _tail(
    tail: float, directions: jnp.ndarray, values: np.ndarray, inverse: np.ndarray
) -> tuple[float, np.ndarray]:
    """(1/κ, W = (UUᵀ)⁻¹) for the dropped directions: κ = tail times the smallest curvature
    among the kept directions that are inverted, each direction's curvature being
    |value| / ‖u‖² (its Rayleigh quotient: the eigenvalue itself for unit eigenvectors; for
    RandProj's U = QᵀG, λ̃ / ‖u‖²)."""
    products = np.asarray(gram(directions, directions), np.float64)
    used = np.asarray(inverse) != 0
    check(used.any(), "method.tail", "no kept direction is inverted: nothing to scale from")
    curvature = np.abs(np.asarray(values, np.float64))[used] / np.diag(products)[used]
    kappa = tail * curvature.min()
    check(kappa > 0, "method.tail", "the smallest kept curvature is 0: nothing to scale from")
    return 1.0 / kappa, np.linalg.pinv(products, hermitian=True)


@jax.jit
def gram(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    return a @ b.T  # [k, k]: the contraction over the (sharded) parameter axis


def stack_rows(layout: Layout, rows: list[jnp.ndarray]) -> jnp.ndarray:
    return jax.jit(lambda *r: jnp.stack(r), out_shardings=layout.rows())(*rows)


def check_route(route: str) -> None:
    check(route in ROUTES, "method.route", f"must be one of {ROUTES}, got {route!r}")
