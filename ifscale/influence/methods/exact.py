"""Exact: the dense Hessian and its full eigendecomposition (small models only), the
reference for tests and Figures 1-2."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ifscale.influence.hvp import dense_hessian
from ifscale.influence.methods.projected import (
    Projected,
    by_abs_value,
    check_route,
    check_tail,
    inverse_of_eigenvalues,
)
from ifscale.influence.protocol import Spectrum
from ifscale.influence.sharding import Layout
from ifscale.influence.task import check_curvature
from ifscale.utils import check


@dataclasses.dataclass(frozen=True)
class Exact(Projected):
    """The dense Hessian (small models only): the reference for tests and Figures 1-2.

    The cached spectrum is the full eigendecomposition, so every p̄ reuses one fit.

    Attributes:
      pbar: keep the top-p̄ eigenpairs by |λ| (as Arnoldi); None uses all of them, i.e. the
        full inverse (H + damping·I)⁻¹ (a pseudo-inverse below rcond).
      damping: added to every eigenvalue before inverting.
      tail: the directions not kept are not dropped but given one curvature, `tail` times
        the smallest kept one (the inverse gains (I − P)/κ, P the projector on the kept
        directions); null: dropped, as the paper does. Costs a gradient norm per example
        (self-influence) or the per-example gradients (pairwise). Not part of the fit.
      rcond: relative cutoff of the pseudo-inverse.
      curvature: "hessian" (of the mean loss) or "ggn": its Gauss–Newton part Jᵀ H_f J
        (positive semi-definite for a loss convex in the outputs, e.g. cross-entropy; a
        JVP, an output-space product and a VJP per product). Part of the fit.
      max_params: refuse larger models (the Hessian has p² entries).
      route: projection route.
    """

    pbar: int | None = None
    damping: float = 0.0
    tail: float | None = None
    rcond: float = 1e-10
    max_params: int = 10_000
    curvature: str = "hessian"
    progress: bool = True
    route: str = "auto"
    name: ClassVar[str] = "exact"
    fit_fields: ClassVar[tuple[str, ...]] = ("curvature",)

    def __post_init__(self):
        check_curvature(self.curvature)
        check(self.pbar is None or self.pbar >= 1, "method.pbar", "must be >= 1 or null")
        check(self.damping >= 0, "method.damping", "must be >= 0")
        check_tail(self.tail)
        check_route(self.route)

    def spectrum(self, view, batches, key, layout=None, progress=None) -> Spectrum:
        view = view.with_curvature(self.curvature)
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
        return by_abs_value(values, layout.put_rows(vectors.T.astype(h.dtype)))

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
        return keep, values, inverse_of_eigenvalues(values, self.rcond, "Exact")
