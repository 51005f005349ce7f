"""Arnoldi, the paper's method: n Hessian-vector products build a Krylov basis once
(`ifscale.influence.krylov`), distilled to the top-p̄ eigenpairs."""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ifscale.influence.hvp import hvp, hvp_block
from ifscale.influence.krylov import ArnoldiProgress, arnoldi
from ifscale.influence.methods.projected import Projected, check_route, check_tail
from ifscale.influence.protocol import Spectrum
from ifscale.influence.sharding import Layout
from ifscale.influence.task import check_curvature
from ifscale.utils import check

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Arnoldi(Projected):
    """The paper's method: n HVPs build a Krylov basis, distilled to the top-p̄ eigenpairs.

    The cached spectrum holds all Ritz values of the n-step Krylov basis and the `keep`
    eigenvectors of largest |λ|, so every p̄ <= keep reuses one fit.

    Attributes:
      n: Arnoldi iterations (HVPs).
      pbar: eigenpairs used (largest |λ|).
      keep: eigenvectors stored with the fit (the largest p̄ a sweep asks for).
      damping: added to each kept eigenvalue before inverting, (λ + damping)⁻¹: H + damping·I
        on the kept directions (dattri's "regularization"; chosen on validation data by
        the linear datamodeling score). Not part of the fit: every damping reuses it.
      tail: the directions not kept are not dropped but given one curvature, `tail` times
        the smallest kept one (the inverse gains (I − P)/κ, P the projector on the kept
        directions); null: dropped, as the paper does. Costs a gradient norm per example
        (self-influence) or the per-example gradients (pairwise). Not part of the fit.
      reorthogonalize: Gram-Schmidt twice per step.
      positive_only: use the p̄ largest positive eigenvalues (among the `keep` stored).
      basis_memory: "device", or "host": Krylov rows kept in host memory and brought to
        the device for each product (for bases larger than device memory; slower).
      basis_dtype: the dtype the Krylov basis and the stored eigenvectors are kept in:
        null (the parameters'), "float32", or "bfloat16" (half the memory of float32; every
        product, dot product and sum still runs in the parameters' dtype, a row is rounded
        when stored; what it costs in Ritz values and scores: docs/scaling.md). Part of the
        fit.
      checkpoint_every: save the iteration every this many steps, so that a killed fit
        resumes (null: never).
      block: Hessian-vector products per pass over the fit data (block Arnoldi): the
        forward and backward pass of each fit batch is shared by `block` vectors, so a fit
        of the same n is faster (on the 2-core CPU, block 16 runs about 1.6x the products
        per second of block 1), at `block` times the activation memory. The Krylov space
        is then that of a random start block, so the eigenpairs differ from block 1's
        within the iteration's accuracy. 1: the one-vector iteration.
      curvature: "hessian" (of the mean loss) or "ggn": its Gauss–Newton part Jᵀ H_f J
        (positive semi-definite for a loss convex in the outputs, e.g. cross-entropy; a
        JVP, an output-space product and a VJP per product). Part of the fit.
      progress: progress bar during the fit.
      route: projection route: "auto" (a rule on the shapes: deterministic), "fastest"
        (timed once per scoring, recorded), "grad", "jvp", "layerwise".
    """

    n: int = 200
    pbar: int = 10
    keep: int = 100
    damping: float = 0.0
    tail: float | None = None
    reorthogonalize: bool = False
    positive_only: bool = False
    basis_memory: str = "device"
    basis_dtype: str | None = None
    checkpoint_every: int | None = None
    block: int = 1
    curvature: str = "hessian"
    progress: bool = True
    route: str = "auto"
    name: ClassVar[str] = "arnoldi"
    fit_fields: ClassVar[tuple[str, ...]] = (
        "n",
        "keep",
        "reorthogonalize",
        "block",
        "curvature",
        "basis_dtype",
    )

    def __post_init__(self):
        check_curvature(self.curvature)
        check(self.n >= 1, "method.n", f"must be >= 1, got {self.n}")
        check(self.damping >= 0, "method.damping", f"must be >= 0, got {self.damping}")
        check_tail(self.tail)
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
        check(
            self.basis_dtype is None or self.basis_dtype in BASIS_DTYPES,
            "method.basis_dtype",
            f"must be null or one of {BASIS_DTYPES}, got {self.basis_dtype!r}",
        )
        check_route(self.route)

    def spectrum(self, view, batches, key, layout=None, progress=None) -> Spectrum:
        view = view.with_curvature(self.curvature)
        layout = layout or Layout.create(view.size)
        dtype = view.dtype
        stored = jnp.dtype(self.basis_dtype or dtype)
        shape = (self.block, view.size) if self.block > 1 else (view.size,)
        start = jax.random.normal(key, shape, dtype)
        resume = None
        if progress is not None:
            rows = (self.n + self.block, layout.padded)
            target = {
                "basis": jax.ShapeDtypeStruct(rows, stored, sharding=layout.rows()),
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
            basis_dtype=stored,
            resume=resume,
            padded_matvec=view.values.shape[-1] == layout.padded,
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
        values = spectrum.values[keep] + self.damping
        return keep, values, 1.0 / values


BASIS_MEMORY = ("device", "host")
BASIS_DTYPES = ("float32", "bfloat16")
