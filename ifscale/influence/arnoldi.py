"""The Arnoldi iteration and its distillation to the top eigenpairs (the poster's Algorithm 1).

Takes a matrix-vector function, never a model, so it can be tested on matrices with a
known spectrum.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Krylov:
    """An orthonormal Krylov basis and the projection of the matrix onto it.

    Attributes:
      basis: [m, p] orthonormal rows w_0 .. w_{m-1}.
      hessenberg: [m, m] A = W H Wᵀ (upper Hessenberg; tridiagonal for symmetric H).
      breakdown: True if the iteration stopped early because the Krylov subspace became
        invariant (then m < n and the Ritz values are exact eigenvalues).
    """

    basis: jnp.ndarray
    hessenberg: np.ndarray
    breakdown: bool


@functools.partial(jax.jit, static_argnames="passes", donate_argnums=0)
def _extend(basis: jnp.ndarray, w: jnp.ndarray, count: jnp.ndarray, passes: int):
    """Orthogonalizes w against rows [0, count) of basis (modified Gram-Schmidt, `passes`
    times) and writes the normalized residual into row `count`, in place.

    Returns (basis, coefficients [n+1], residual norm).
    """
    coeffs = jnp.zeros(basis.shape[0], w.dtype)

    def one_pass(_, carry):
        def step(j, carry):
            w, coeffs = carry
            c = jnp.vdot(basis[j], w)
            return w - c * basis[j], coeffs.at[j].add(c)

        return jax.lax.fori_loop(0, count, step, carry)

    w, coeffs = jax.lax.fori_loop(0, passes, one_pass, (w, coeffs))
    norm = jnp.linalg.norm(w)
    safe = jnp.where(norm > 0, norm, 1.0)
    return basis.at[count].set(w / safe), coeffs, norm


def arnoldi(
    matvec: Callable[[jnp.ndarray], jnp.ndarray],
    start: jnp.ndarray,
    n: int,
    reorthogonalize: bool = False,
    breakdown_tol: float = 1e-9,
    progress: bool = True,
) -> Krylov:
    """Builds an orthonormal basis of the Krylov subspace span{v, Hv, ..., H^(n-1) v}.

    Args:
      matvec: v -> H v for a symmetric H (here: a Hessian-vector product).
      start: [p] start vector (the poster draws it from N(0, I)).
      n: number of iterations (matrix-vector products).
      reorthogonalize: run Gram-Schmidt twice per step, which keeps the basis orthogonal
        to working precision when n is large (at twice the orthogonalization cost).
      breakdown_tol: stop early when the new residual's norm falls below this fraction of
        ||H w||: the subspace is then invariant and further vectors would be noise.
      progress: show a progress bar.

    Returns:
      A `Krylov` with m <= n basis vectors.

    Raises:
      FloatingPointError: a matrix-vector product returned NaN or Inf (names the step).
    """
    if n < 1:
        raise ValueError(f"method.n: must be >= 1, got {n}")
    p = start.shape[0]
    basis = jnp.zeros((n + 1, p), start.dtype)
    basis = basis.at[0].set(start / jnp.linalg.norm(start))
    hessenberg = np.zeros((n + 1, n), np.float64)
    passes = 2 if reorthogonalize else 1
    m = n
    breakdown = False
    for step in tqdm(
        range(1, n + 1), desc="arnoldi", unit="hvp", disable=not progress, mininterval=1.0
    ):
        w = matvec(basis[step - 1])
        w_norm = float(jnp.linalg.norm(w))
        if not np.isfinite(w_norm):
            raise FloatingPointError(
                f"Arnoldi step {step}: the Hessian-vector product returned NaN/Inf. Check the "
                "trained parameters and the fit batches (method.fit_batch_size)."
            )
        basis, coeffs, norm = _extend(basis, w, jnp.asarray(step), passes)
        norm = float(norm)
        hessenberg[:step, step - 1] = np.asarray(coeffs[:step], np.float64)
        hessenberg[step, step - 1] = norm
        if norm <= breakdown_tol * max(w_norm, np.finfo(np.float64).tiny):
            m, breakdown = step, True
            log.info("Arnoldi: invariant subspace after %d of %d steps", step, n)
            break
    return Krylov(basis=basis[:m], hessenberg=hessenberg[:m, :m], breakdown=breakdown)


def distill(
    krylov: Krylov, pbar: int, positive_only: bool = False
) -> tuple[np.ndarray, jnp.ndarray]:
    """The top-p̄ eigenpairs of H restricted to the Krylov subspace.

    Args:
      krylov: the output of `arnoldi`.
      pbar: how many eigenpairs to keep.
      positive_only: keep the p̄ largest positive eigenvalues instead of the p̄ largest in
        absolute value.

    Returns:
      (eigenvalues [k] in decreasing |λ|, eigenvectors [k, p] as rows), k = min(p̄, available).
    """
    if pbar < 1:
        raise ValueError(f"method.pbar: must be >= 1, got {pbar}")
    # For a symmetric H, A = W H Wᵀ is symmetric in exact arithmetic; symmetrizing removes
    # rounding noise so eigh gives real Ritz pairs.
    a = krylov.hessenberg
    values, vectors = np.linalg.eigh(0.5 * (a + a.T))
    order = np.argsort(-np.abs(values))
    if positive_only:
        order = order[values[order] > 0]
    keep = order[:pbar]
    if len(keep) < pbar:
        log.warning("Arnoldi: only %d eigenpairs available for method.pbar=%d", len(keep), pbar)
    eigvecs = jnp.asarray(vectors[:, keep].T, krylov.basis.dtype) @ krylov.basis
    return values[keep], eigvecs
