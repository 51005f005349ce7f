"""RandProj: the Hessian projected onto p̄ random directions, inverted through its
eigendecomposition."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ifscale.influence.hvp import hvp, hvp_block
from ifscale.influence.krylov import combine
from ifscale.influence.methods.projected import (
    Projected,
    by_abs_value,
    check_route,
    check_tail,
    gram,
    inverse_of_eigenvalues,
    stack_rows,
)
from ifscale.influence.protocol import Spectrum
from ifscale.influence.sharding import Layout
from ifscale.influence.task import check_curvature
from ifscale.utils import check


@dataclasses.dataclass(frozen=True)
class RandProj(Projected):
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
      tail: the parameter space outside the span of G is not dropped but given one
        curvature κ, `tail` times the smallest kept one (|λ̃|/‖u‖² per direction u); the
        inverse gains (I − P)/κ, P the projector on the span. null: dropped. Costs a
        gradient norm per example (self-influence) or the per-example gradients (pairwise).
        Not part of the fit.
      block: HVPs per pass over the fit data (the directions are independent, so this
        changes only the rounding and the speed; as Arnoldi's `block`).
      curvature: "hessian" (of the mean loss) or "ggn": its Gauss–Newton part Jᵀ H_f J
        (positive semi-definite for a loss convex in the outputs, e.g. cross-entropy; a
        JVP, an output-space product and a VJP per product). Part of the fit.
      progress: progress bar during the fit.
      route: projection route.
    """

    pbar: int = 10
    rcond: float = 1e-2
    positive_only: bool = False
    tail: float | None = None
    block: int = 1
    curvature: str = "hessian"
    progress: bool = True
    route: str = "auto"
    name: ClassVar[str] = "randproj"
    fit_fields: ClassVar[tuple[str, ...]] = ("pbar", "block", "curvature")

    def __post_init__(self):
        check_curvature(self.curvature)
        check(self.pbar >= 1, "method.pbar", f"must be >= 1, got {self.pbar}")
        check(self.rcond >= 0, "method.rcond", "must be >= 0")
        check(self.block >= 1, "method.block", f"must be >= 1, got {self.block}")
        check_tail(self.tail)
        check_route(self.route)

    def spectrum(self, view, batches, key, layout=None, progress=None) -> Spectrum:
        view = view.with_curvature(self.curvature)
        check(
            self.pbar <= view.size,
            "method.pbar",
            f"{self.pbar} exceeds the {view.size} perturbed parameters",
        )
        layout = layout or Layout.create(view.size)
        # Drawn in place on its shards; entries N(0, 1/p̄): E[GᵀG] = I. (Scaled outside
        # the jit: fused into the sampler, the division rounds differently.)
        g = jax.jit(
            lambda k: layout.pad(jax.random.normal(k, (self.pbar, view.size), view.dtype)),
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
        hg = stack_rows(layout, products)
        if not bool(jnp.isfinite(hg).all()):
            raise FloatingPointError("RandProj: a Hessian-vector product returned NaN/Inf")
        h_tilde = np.asarray(gram(g, hg), np.float64)
        values, q = np.linalg.eigh(0.5 * (h_tilde + h_tilde.T))
        # U = Qᵀ G: then (U g_z)ᵀ diag(1/λ) (U g_x) = ⟨G g_z, H̃⁻¹ G g_x⟩.
        return by_abs_value(values, combine(jnp.asarray(q.T, view.dtype), g))

    def select(self, spectrum):
        inverse = inverse_of_eigenvalues(spectrum.values, self.rcond, "RandProj")
        if self.positive_only:
            inverse = np.where(spectrum.values > 0, inverse, 0.0)
        return np.arange(len(spectrum.values)), spectrum.values, inverse
