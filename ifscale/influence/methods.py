"""Influence methods behind one interface (`ifscale.influence.protocol.InfluenceMethod`):
the projected methods (Exact, Arnoldi, RandProj) here, LISSA and TracIn in their own
modules, and the registry of all of them.

Every method is a frozen dataclass of hyperparameters whose `__post_init__` checks them
(raising `ConfigError` naming the config key); the pipeline, the tests and the benchmarks
never special-case a method.

Exact, Arnoldi and RandProj share one state: directions U [k, p] and a symmetric inner
matrix M [k, k], with influence(x, z) = (U g_z)ᵀ M (U g_x). For Arnoldi and Exact, U holds
eigenvectors of H and M = diag(1/λ); for RandProj, U = Qᵀ G and M = diag(1/λ) from the
eigendecomposition H̃ = G H Gᵀ = Q Λ Qᵀ, which equals ⟨G g_z, H̃⁻¹ G g_x⟩ exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ifscale.influence import layerwise
from ifscale.influence.arnoldi import ArnoldiProgress, _combine, arnoldi
from ifscale.influence.baselines import EL2N, LossBaseline
from ifscale.influence.hvp import dense_hessian, hvp, hvp_block
from ifscale.influence.lissa import Lissa
from ifscale.influence.projection import (
    ROUTES,
    choose_route,
    grad_route_is_wrong,
    project,
    project_prepared,
    rule_route,
)
from ifscale.influence.protocol import SpectralMethod, Spectrum
from ifscale.influence.sharding import Layout
from ifscale.influence.task import Batch, ParamView
from ifscale.influence.tracin import TracIn
from ifscale.utils import ConfigError, check

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- projected


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
    """

    view: ParamView
    directions: jnp.ndarray
    inner: jnp.ndarray
    eigvals: jnp.ndarray
    route: str = dataclasses.field(default="auto", metadata={"static": True})
    layout: Layout | None = dataclasses.field(default=None, metadata={"static": True})
    prepared: dict | None = None


def _inverse_of_eigenvalues(values: np.ndarray, rcond: float, what: str) -> np.ndarray:
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


def _by_abs_value(values: np.ndarray, vectors) -> Spectrum:
    order = np.argsort(-np.abs(values), kind="stable")
    return Spectrum(np.asarray(values, np.float64)[order], jnp.asarray(vectors)[order])


class _Projected(SpectralMethod):
    """What the methods with a `ProjectedState` share: a subclass implements `spectrum`
    and `select` (which values to keep and how to invert them)."""

    route: str = "auto"

    def select(self, spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices into the spectrum to keep, the curvature values used for them, and
        their inverses)."""
        raise NotImplementedError

    def from_spectrum(
        self, view: ParamView, spectrum: Spectrum, layout: Layout | None = None
    ) -> ProjectedState:
        keep, values, inverse = self.select(spectrum)
        dtype = view.theta.dtype
        if np.array_equal(keep, np.arange(len(spectrum.vectors))):
            directions = spectrum.vectors  # all of them, in order: no copy (k x p is large)
        else:
            directions = spectrum.vectors[jnp.asarray(keep, jnp.int32)]
        return ProjectedState(
            view=view,
            directions=jnp.asarray(directions, dtype),
            inner=jnp.asarray(np.diag(inverse), dtype),
            eigvals=jnp.asarray(values, dtype),
            route=self.route,
            layout=layout or Layout.create(view.size),
        )

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

    def _project(self, state: ProjectedState, batch: Batch) -> jnp.ndarray:
        if state.route == "layerwise" and state.prepared is not None:
            return project_prepared(state.view, state.prepared, state.directions.shape[0], batch)
        return project(state.view, state.directions, batch, state.route)

    def self_influence(self, state: ProjectedState, batch: Batch) -> jnp.ndarray:
        return _quadratic(self._project(state, batch), state.inner)

    def influence(self, state: ProjectedState, train_batch: Batch, test_batch: Batch):
        return self.influence_on(state, train_batch, self.test_side(state, test_batch))

    def test_side(self, state: ProjectedState, test_batch: Batch) -> jnp.ndarray:
        return self._project(state, test_batch) @ state.inner  # [m, k]: M·(U g_z)

    def influence_on(self, state: ProjectedState, train_batch: Batch, test_side: jnp.ndarray):
        return test_side @ self._project(state, train_batch).T


@jax.jit
def _gram(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    return a @ b.T  # [k, k]: the contraction over the (sharded) parameter axis


def _stack_rows(layout: Layout, rows: list[jnp.ndarray]) -> jnp.ndarray:
    return jax.jit(lambda *r: jnp.stack(r), out_shardings=layout.rows())(*rows)


def _check_route(route: str) -> None:
    check(route in ROUTES, "method.route", f"must be one of {ROUTES}, got {route!r}")


@dataclasses.dataclass(frozen=True)
class Arnoldi(_Projected):
    """The paper's method: n HVPs build a Krylov basis, distilled to the top-p̄ eigenpairs.

    The cached spectrum holds all Ritz values of the n-step Krylov basis and the `keep`
    eigenvectors of largest |λ|, so every p̄ <= keep reuses one fit.

    Attributes:
      n: Arnoldi iterations (HVPs).
      pbar: eigenpairs used (largest |λ|).
      keep: eigenvectors stored with the fit (the largest p̄ a sweep asks for).
      reorthogonalize: Gram-Schmidt twice per step.
      positive_only: use the p̄ largest positive eigenvalues (among the `keep` stored).
      basis_memory: "device", or "host": Krylov rows kept in host memory and brought to
        the device for each product (for bases larger than device memory; slower).
      checkpoint_every: save the iteration every this many steps, so that a killed fit
        resumes (null: never).
      block: Hessian-vector products per pass over the fit data (block Arnoldi): the
        forward and backward pass of each fit batch is shared by `block` vectors, so a fit
        of the same n is faster (on the 2-core CPU, block 16 runs about 1.6x the products
        per second of block 1), at `block` times the activation memory. The Krylov space
        is then that of a random start block, so the eigenpairs differ from block 1's
        within the iteration's accuracy. 1: the one-vector iteration.
      progress: progress bar during the fit.
      route: projection route: "auto" (a rule on the shapes: deterministic), "fastest"
        (timed once per scoring, recorded), "grad", "jvp", "layerwise".
    """

    n: int = 200
    pbar: int = 10
    keep: int = 100
    reorthogonalize: bool = False
    positive_only: bool = False
    basis_memory: str = "device"
    checkpoint_every: int | None = None
    block: int = 1
    progress: bool = True
    route: str = "auto"
    name: ClassVar[str] = "arnoldi"
    fit_fields: ClassVar[tuple[str, ...]] = ("n", "keep", "reorthogonalize", "block")

    def __post_init__(self):
        check(self.n >= 1, "method.n", f"must be >= 1, got {self.n}")
        check(self.pbar >= 1, "method.pbar", f"must be >= 1, got {self.pbar}")
        check(
            self.pbar <= self.n,
            "method.pbar",
            f"{self.pbar} eigenpairs need at least as many Arnoldi iterations (method.n={self.n})",
        )
        check(
            self.pbar <= self.keep,
            "method.pbar",
            f"{self.pbar} eigenpairs need at least as many stored (method.keep={self.keep})",
        )
        check(
            self.basis_memory in BASIS_MEMORY,
            "method.basis_memory",
            f"must be one of {BASIS_MEMORY}, got {self.basis_memory!r}",
        )
        check(
            self.checkpoint_every is None or self.checkpoint_every >= 1,
            "method.checkpoint_every",
            "must be >= 1 or null",
        )
        check(
            1 <= self.block <= self.n,
            "method.block",
            f"must be between 1 and method.n={self.n}, got {self.block}",
        )
        _check_route(self.route)

    def spectrum(self, view, batches, key, layout=None, progress=None) -> Spectrum:
        layout = layout or Layout.create(view.size)
        dtype = view.theta.dtype
        shape = (self.block, view.size) if self.block > 1 else (view.size,)
        start = jax.random.normal(key, shape, dtype)
        resume = None
        if progress is not None:
            rows = (self.n + self.block, layout.padded)
            target = {
                "basis": jax.ShapeDtypeStruct(rows, dtype, sharding=layout.rows()),
                "hessenberg": np.zeros((rows[0], self.n), np.float64),
            }
            found = progress.load(target)
            if found is not None:
                step, arrays = found
                log.info("Resuming the Arnoldi iteration from step %d", step)
                resume = ArnoldiProgress(
                    step, jnp.asarray(arrays["basis"]), np.asarray(arrays["hessenberg"])
                )

        def checkpoint(state: ArnoldiProgress) -> None:
            progress.save(state.step, {"basis": state.basis, "hessenberg": state.hessenberg})

        krylov = arnoldi(
            lambda v: hvp(view, batches, v),
            start,
            self.n,
            block=self.block,
            matvec_block=(lambda vs: hvp_block(view, batches, vs)) if self.block > 1 else None,
            reorthogonalize=self.reorthogonalize,
            progress=self.progress,
            layout=layout,
            basis_memory=self.basis_memory,
            resume=resume,
            checkpoint=None if progress is None else checkpoint,
            checkpoint_every=None if progress is None else progress.every,
        )
        # Ritz pairs (as `distill`), all values but only the top-`keep` vectors.
        a = krylov.hessenberg
        values, vectors = np.linalg.eigh(0.5 * (a + a.T))
        order = np.argsort(-np.abs(values), kind="stable")
        top = order[: self.keep]
        eigvecs = krylov.combine(jnp.asarray(vectors[:, top].T, dtype))
        return Spectrum(values[order], eigvecs)

    def select(self, spectrum):
        # Only the stored eigenvectors can be used (the leading values are theirs).
        keep = np.arange(len(spectrum.vectors))
        if self.positive_only:  # among the stored ones (the spectrum has all n values)
            keep = keep[spectrum.values[: len(keep)] > 0]
        keep = keep[: self.pbar]
        if len(keep) < self.pbar:
            log.warning(
                "Arnoldi: only %d eigenpairs available for method.pbar=%d", len(keep), self.pbar
            )
        values = spectrum.values[keep]
        return keep, values, 1.0 / values


BASIS_MEMORY = ("device", "host")


@dataclasses.dataclass(frozen=True)
class RandProj(_Projected):
    """Random projection: H̃ = G H Gᵀ from p̄ HVPs, G Gaussian with E[GᵀG] = I.

    Indefinite or singular H̃ (common away from a minimum): we invert it through its
    eigendecomposition, keeping the sign of each eigenvalue (as Arnoldi does) and dropping
    eigenvalues with |λ| <= rcond · max|λ| (a pseudo-inverse). The default cutoff, 1% of the
    largest, is not a formality: H of a trained network has a bulk of small eigenvalues of
    both signs, so G H Gᵀ for p̄ = 100 has eigenvalues scattered around zero (on cnn_large:
    25 of 100 negative, the smallest |λ| 4e-5 of the largest), and inverting those drowns
    every score in one noise direction (AUC 0.15-0.73 at a 1e-6 cutoff, 0.99 at 1e-2).

    Attributes:
      pbar: projection dimension p̄.
      rcond: relative cutoff of the pseudo-inverse.
      positive_only: also drop the directions of negative eigenvalues of H̃ (as Arnoldi's
        option of that name).
      block: HVPs per pass over the fit data (the directions are independent, so this
        changes only the rounding and the speed; as Arnoldi's `block`).
      progress: progress bar during the fit.
      route: projection route.
    """

    pbar: int = 10
    rcond: float = 1e-2
    positive_only: bool = False
    block: int = 1
    progress: bool = True
    route: str = "auto"
    name: ClassVar[str] = "randproj"
    fit_fields: ClassVar[tuple[str, ...]] = ("pbar", "block")

    def __post_init__(self):
        check(self.pbar >= 1, "method.pbar", f"must be >= 1, got {self.pbar}")
        check(self.rcond >= 0, "method.rcond", "must be >= 0")
        check(self.block >= 1, "method.block", f"must be >= 1, got {self.block}")
        _check_route(self.route)

    def spectrum(self, view, batches, key, layout=None, progress=None) -> Spectrum:
        check(
            self.pbar <= view.size,
            "method.pbar",
            f"{self.pbar} exceeds the {view.size} perturbed parameters",
        )
        layout = layout or Layout.create(view.size)
        # Drawn in place on its shards; entries N(0, 1/p̄): E[GᵀG] = I. (Scaled outside
        # the jit: fused into the sampler, the division rounds differently.)
        g = jax.jit(
            lambda k: layout.pad(jax.random.normal(k, (self.pbar, view.size), view.theta.dtype)),
            out_shardings=layout.rows(),
        )(key)
        g = g / np.sqrt(self.pbar)
        to_vector = jax.jit(layout.pad, out_shardings=layout.vector())
        products = []
        with tqdm(
            total=self.pbar, desc="randproj", unit="hvp", disable=not self.progress, mininterval=1
        ) as bar:
            for first in range(0, self.pbar, self.block):
                if self.block == 1:
                    rows = [hvp(view, batches, layout.unpad(g[first]))]
                else:
                    rows = hvp_block(view, batches, layout.unpad(g[first : first + self.block]))
                products.extend(to_vector(row) for row in rows)
                bar.update(len(rows))
        hg = _stack_rows(layout, products)
        if not bool(jnp.isfinite(hg).all()):
            raise FloatingPointError("RandProj: a Hessian-vector product returned NaN/Inf")
        h_tilde = np.asarray(_gram(g, hg), np.float64)
        values, q = np.linalg.eigh(0.5 * (h_tilde + h_tilde.T))
        # U = Qᵀ G: then (U g_z)ᵀ diag(1/λ) (U g_x) = ⟨G g_z, H̃⁻¹ G g_x⟩.
        return _by_abs_value(values, _combine(jnp.asarray(q.T, view.theta.dtype), g))

    def select(self, spectrum):
        inverse = _inverse_of_eigenvalues(spectrum.values, self.rcond, "RandProj")
        if self.positive_only:
            inverse = np.where(spectrum.values > 0, inverse, 0.0)
        return np.arange(len(spectrum.values)), spectrum.values, inverse


@dataclasses.dataclass(frozen=True)
class Exact(_Projected):
    """The dense Hessian (small models only): the reference for tests and Figures 1-2.

    The cached spectrum is the full eigendecomposition, so every p̄ reuses one fit.

    Attributes:
      pbar: keep the top-p̄ eigenpairs by |λ| (as Arnoldi); None uses all of them, i.e. the
        full inverse (H + damping·I)⁻¹ (a pseudo-inverse below rcond).
      damping: added to every eigenvalue before inverting.
      rcond: relative cutoff of the pseudo-inverse.
      max_params: refuse larger models (the Hessian has p² entries).
      route: projection route.
    """

    pbar: int | None = None
    damping: float = 0.0
    rcond: float = 1e-10
    max_params: int = 10_000
    progress: bool = True
    route: str = "auto"
    name: ClassVar[str] = "exact"

    def __post_init__(self):
        check(self.pbar is None or self.pbar >= 1, "method.pbar", "must be >= 1 or null")
        check(self.damping >= 0, "method.damping", "must be >= 0")
        _check_route(self.route)

    def spectrum(self, view, batches, key, layout=None, progress=None) -> Spectrum:
        check(
            view.size <= self.max_params,
            "method.max_params",
            f"the dense Hessian of {view.size:,} parameters ({view.size**2:,} entries) "
            f"exceeds max_params={self.max_params:,}; use arnoldi or randproj, or raise "
            "method.max_params if memory allows",
        )
        h = dense_hessian(view, batches, progress=self.progress)
        values, vectors = np.linalg.eigh(h.astype(np.float64))
        layout = layout or Layout.create(view.size)
        return _by_abs_value(values, layout.put_rows(vectors.T.astype(h.dtype)))

    def select(self, spectrum):
        values = spectrum.values + self.damping
        keep = np.argsort(-np.abs(values), kind="stable")
        if self.pbar is not None:
            check(
                self.pbar <= len(values),
                "method.pbar",
                f"{self.pbar} exceeds the {len(values)} perturbed parameters",
            )
            keep = keep[: self.pbar]
        values = values[keep]  # damped: the values that are inverted
        return keep, values, _inverse_of_eigenvalues(values, self.rcond, "Exact")


METHODS = {
    "loss": LossBaseline,
    "el2n": EL2N,
    "exact": Exact,
    "arnoldi": Arnoldi,
    "randproj": RandProj,
    "lissa": Lissa,
    "tracin": TracIn,
}


def make_method(name: str, **options):
    """The method registered as `name` with its hyperparameters (validated)."""
    check(name in METHODS, "method.name", f"unknown method {name!r}; choose from {sorted(METHODS)}")
    fields = {f.name for f in dataclasses.fields(METHODS[name])}
    unknown = set(options) - fields
    check(
        not unknown,
        f"method.{sorted(unknown)[0] if unknown else ''}",
        f"not an option of {name}; options are {sorted(fields)}",
    )
    return METHODS[name](**options)
