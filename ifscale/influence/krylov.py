"""The Arnoldi iteration and its distillation to the top eigenpairs (the poster's Algorithm 1).

Takes a matrix-vector function, never a model, so it can be tested on matrices with a
known spectrum.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ifscale.influence.sharding import Layout

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Krylov:
    """An orthonormal Krylov basis and the projection of the matrix onto it.

    Attributes:
      rows: the basis as built: [n+1, padded] on the device(s), laid out by `layout`
        (sharded over its `model` axis), or rows in host memory (`basis_memory="host"`);
        rows 0 .. m-1 are the basis w_0 .. w_{m-1}.
      m: the basis size.
      hessenberg: [m, m] A = W H Wᵀ (upper Hessenberg; tridiagonal for symmetric H).
      breakdown: True if the iteration stopped early because the Krylov subspace became
        invariant (then m < n and the Ritz values are exact eigenvalues).
      layout: how the rows are laid out on the device mesh.
    """

    rows: Any
    m: int
    hessenberg: np.ndarray
    breakdown: bool
    layout: Layout

    @property
    def dtype(self):
        return self.rows.dtype

    @property
    def host_bytes_read(self) -> int:
        """Bytes of basis rows brought from host memory to the device(s) so far (0 for a
        basis on the device)."""
        return self.rows.bytes_read if isinstance(self.rows, _HostRows) else 0

    @property
    def basis(self) -> jnp.ndarray:
        """[m, padded] the basis on the device(s) (a copy: for small problems and tests)."""
        if isinstance(self.rows, _HostRows):
            return self.rows.stacked(self.m)
        return self.rows[: self.m]

    def combine(self, coefficients: jnp.ndarray) -> jnp.ndarray:
        """[k, m] coefficients -> [k, padded] vectors Σ_j c_kj w_j (summed in the
        coefficients' dtype, returned in the basis's), without copying the basis (rows in
        host memory come to the device one at a time)."""
        if isinstance(self.rows, _HostRows):
            return self.rows.combine(coefficients)
        if self.rows.nbytes <= _ONE_PASS_BYTES or self.layout.model > 1:
            return combine(coefficients, self.rows)
        # A large basis on one device: a block of parameters at a time, written in place,
        # so that neither a slice of the basis nor a second result is ever held whole.
        padded = self.layout.padded
        width = min(_BLOCK_COLUMNS, padded)
        out = jax.jit(
            lambda: jnp.zeros((coefficients.shape[0], padded), self.dtype),
            out_shardings=self.layout.rows(),
        )()
        for start in range(0, padded, width):
            # The last block is shifted left (overlapping, same values): one compilation.
            out = _combine_block(out, coefficients, self.rows, min(start, padded - width), width)
        return out


@dataclasses.dataclass
class ArnoldiProgress:
    """The state of an unfinished iteration, enough to continue it bit for bit.

    Attributes:
      step: matrix-vector products done, a whole number of blocks (rows 0 .. step+b-1 of
        `basis` are set).
      basis: [n+b, padded] the basis so far (the rows after those are zero).
      hessenberg: [n+b, n] float64, columns before `step` set.
    """

    step: int
    basis: jnp.ndarray
    hessenberg: np.ndarray


def _mgs(basis, w, count, passes: int):
    """Orthogonalizes w against rows [0, count) of basis (modified Gram-Schmidt, `passes`
    times) and writes the normalized residual into row `count`. The products are in w's
    dtype (a bfloat16 basis is widened row by row); the row is stored in the basis's.

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
    return basis.at[count].set((w / safe).astype(basis.dtype)), coeffs, norm


@functools.lru_cache(maxsize=32)
def _extend_on(layout: Layout, passes: int):
    """`_mgs` jitted for `layout`: the basis stays sharded in place (donated), the
    coefficients and the norm come back replicated."""
    rep = layout.replicated()
    return jax.jit(
        functools.partial(_mgs, passes=passes),
        donate_argnums=0,
        out_shardings=(layout.rows(), rep, rep),
    )


@functools.lru_cache(maxsize=32)
def _row_ops(layout: Layout):
    """Jitted pieces of the offloaded path, one row at a time (as `_mgs` does them)."""
    rep = layout.replicated()

    @functools.partial(jax.jit, out_shardings=(layout.rows(), rep))
    def subtract(row, ws):
        """ws [k, padded] minus their projections on one row: the row is read once for k."""
        c = ws @ row.astype(ws.dtype)
        return ws - c[:, None] * row.astype(ws.dtype)[None, :], c

    @functools.partial(jax.jit, out_shardings=(layout.vector(), rep))
    def normalize(w):
        norm = jnp.linalg.norm(w)
        return w / jnp.where(norm > 0, norm, 1.0), norm

    return subtract, normalize


def _sweep(subtract, row_at, count: int, ws, passes: int):
    """Modified Gram-Schmidt of ws [k, padded] against rows row_at(0 .. count-1), `passes`
    times, each row fetched once a pass for all k. Returns (ws, coefficients [k, count])."""
    coeffs = np.zeros((ws.shape[0], count), np.float64)
    for _ in range(passes):
        found = []
        for j in range(count):
            ws, c = subtract(row_at(j), ws)
            found.append(c)
        # One read-back per pass, not one per row (each would wait for the device).
        if found:
            coeffs += np.asarray(jnp.stack(found, axis=1), np.float64)
    return ws, coeffs


class _HostRows:
    """Basis rows kept in host memory (`pinned_host`), brought to the device for each
    product: for bases larger than device memory.

    A step's b products (block Arnoldi) are orthogonalized together: each stored row crosses
    the host link once per Gram-Schmidt pass for all b of them (modified Gram-Schmidt over
    the rows, the b products updated at once), then each product against the rows the
    step's earlier products added (kept on the device). The host traffic of a fit falls by
    b: passes·Σ_steps (rows stored) rows instead of passes·Σ_products (rows stored).
    `bytes_read` counts every row brought to the device.
    """

    def __init__(self, layout: Layout, basis: jnp.ndarray, count: int):
        self.layout = layout
        self.dtype = basis.dtype
        self.host = layout.vector("pinned_host")
        self.rows = [jax.device_put(basis[i], self.host) for i in range(count)]
        self.bytes_read = 0

    def __getitem__(self, i: int) -> jnp.ndarray:
        self.bytes_read += self.rows[i].nbytes
        return jax.device_put(self.rows[i], self.layout.vector())

    def append(self, row: jnp.ndarray) -> jnp.ndarray:
        """Stores `row` (in the basis's dtype); returns the device copy as stored."""
        row = row.astype(self.dtype)
        self.rows.append(jax.device_put(row, self.host))
        return row

    def orthogonalize(self, ws: jnp.ndarray, passes: int):
        """Orthogonalizes a step's products ws [k, padded] against the stored rows and
        appends them, one by one; yields (coefficients [rows before it], norm) per product
        (the caller stops at a breakdown: later products are then not appended)."""
        subtract, normalize = _row_ops(self.layout)
        ws, above = _sweep(subtract, self.__getitem__, len(self.rows), ws, passes)
        fresh = []  # this step's rows so far, on the device
        for i in range(ws.shape[0]):
            w, inner = _sweep(subtract, fresh.__getitem__, len(fresh), ws[i : i + 1], passes)
            row, norm = normalize(w[0])
            fresh.append(self.append(row))
            yield np.concatenate([above[i], inner[0]]), norm

    def stacked(self, count: int) -> jnp.ndarray:
        """[count, padded] on the device (for checkpoints and small problems)."""
        return jnp.stack([self[i] for i in range(count)])

    def combine(self, coefficients: jnp.ndarray) -> jnp.ndarray:
        total = None
        for j in range(coefficients.shape[1]):
            total = _axpy_rows(total, coefficients[:, j], self[j])
        return total.astype(self.dtype)


def arnoldi(
    matvec: Callable[[jnp.ndarray], jnp.ndarray],
    start: jnp.ndarray,
    n: int,
    reorthogonalize: bool = False,
    breakdown_tol: float = 1e-9,
    progress: bool = True,
    layout: Layout | None = None,
    basis_memory: str = "device",
    resume: ArnoldiProgress | None = None,
    checkpoint: Callable[[ArnoldiProgress], None] | None = None,
    checkpoint_every: int | None = None,
    block: int = 1,
    matvec_block: Callable[[jnp.ndarray], jnp.ndarray] | None = None,
    basis_dtype: Any = None,
    padded_matvec: bool = False,
) -> Krylov:
    """Builds an orthonormal basis of the (block) Krylov subspace of H and a start block.

    With `block` = b > 1 (block Arnoldi), each step multiplies b basis rows at once
    (`matvec_block`: one pass over the fit data for b vectors) and the Krylov space is
    span{V, HV, H²V, ...} of a start block V of b vectors; the total number of products is
    still n. Every product is orthogonalized against all rows so far (modified
    Gram-Schmidt, one vector at a time), so A = W H Wᵀ is banded upper Hessenberg with b
    subdiagonals and its eigenpairs are the Ritz pairs, as for b = 1. With b = 1 this is
    the one-vector iteration, operation for operation.

    Args:
      matvec: v -> H v for a symmetric H (here: a Hessian-vector product), on [p] vectors.
      start: [p] start vector, or [b, p] start block (the poster draws it from N(0, I)).
      n: number of matrix-vector products (the basis size).
      reorthogonalize: run Gram-Schmidt twice per step, which keeps the basis orthogonal
        to working precision when n is large (at twice the orthogonalization cost).
      breakdown_tol: stop early when the new residual's norm falls below this fraction of
        ||H w||: the subspace is then invariant and further vectors would be noise.
      progress: show a progress bar.
      layout: where the basis lives (default: every device on `data`, nothing sharded).
      basis_memory: "device", or "host": rows kept in host memory and brought to the
        device one at a time for each product (slower; for bases larger than the device).
      resume: continue an unfinished iteration (the same arguments otherwise).
      checkpoint: called with the progress every `checkpoint_every` products (at the end
        of a block).
      checkpoint_every: products between checkpoints (None: never).
      block: vectors multiplied per step (b); `start` must have b rows when b > 1.
      matvec_block: [k, p] -> [k, p], H applied to k <= b rows at once (default: `matvec`
        row by row).
      basis_dtype: the dtype the rows are stored in (None: the start's). With bfloat16
        the rows take half the memory of float32; products, dot products and the
        orthogonalization run in the start's dtype, a row rounded only when stored.
      padded_matvec: `matvec` and `matvec_block` take and return rows of the layout's
        padded width, split over `model` as the basis is (the curvature products of a view
        laid out over `model`, `ParamView.laid_out`): no row is gathered whole.

    Returns:
      A `Krylov` with m <= n basis vectors.

    Raises:
      FloatingPointError: a matrix-vector product returned NaN or Inf (names the step).
    """
    if n < 1:
        raise ValueError(f"method.n: must be >= 1, got {n}")
    if block < 1:
        raise ValueError(f"method.block: must be >= 1, got {block}")
    start = start.reshape(-1, start.shape[-1])
    if start.shape[0] != block:
        raise ValueError(f"arnoldi: a start block of {block} rows is needed, got {start.shape[0]}")
    if matvec_block is None:

        def matvec_block(vs):
            return jnp.stack([matvec(v) for v in vs])

    layout = Layout.create(start.shape[1]) if layout is None else layout
    passes = 2 if reorthogonalize else 1
    extend = _extend_on(layout, passes)
    compute = start.dtype
    if resume is None:
        # Normalised outside the jit (fused, the division rounds differently).
        first_row = layout.pad(start[0] / jnp.linalg.norm(start[0]))
        basis = _first_rows(layout, n + block)(first_row.astype(basis_dtype or compute))
        for row in range(1, block):  # the rest of the start block: orthonormalized
            basis, _, _ = extend(basis, layout.pad(start[row]), jnp.asarray(row))
        hessenberg = np.zeros((n + block, n), np.float64)
        done = 0
    else:
        basis, hessenberg, done = resume.basis, resume.hessenberg.copy(), resume.step
    host = _HostRows(layout, basis, done + block) if basis_memory == "host" else None
    if host is not None:
        del basis  # rows live in host memory from here on
    m = n
    breakdown = False
    bar = tqdm(
        total=n, initial=done, desc="arnoldi", unit="hvp", disable=not progress, mininterval=1
    )
    for first in range(done, n, block):
        rows = range(first, min(first + block, n))  # the rows multiplied in this step
        if host is not None:
            current = jnp.stack([host[j] for j in rows])
        else:
            current = basis[first : rows[-1] + 1]
        current = current if padded_matvec else layout.unpad(current)
        products = matvec_block(current.astype(compute))
        w_norms = np.asarray(jnp.linalg.norm(products, axis=-1), np.float64)  # one read-back
        for j, w_norm in zip(rows, w_norms, strict=True):
            if not np.isfinite(w_norm):
                raise FloatingPointError(
                    f"Arnoldi step {j + 1}: the Hessian-vector product returned NaN/Inf. Check "
                    "the trained parameters and the fit batches (method.fit_batch_size)."
                )
        if host is not None:
            orthogonalized = host.orthogonalize(layout.pad(products), passes)
        for i, j in enumerate(rows):
            w_norm = float(w_norms[i])
            count = j + block  # rows so far: H w_j is orthogonalized against all of them
            if host is not None:
                coeffs, norm = next(orthogonalized)
            else:
                basis, coeffs, norm = extend(basis, layout.pad(products[i]), jnp.asarray(count))
                coeffs = coeffs[:count]
            norm = float(norm)
            hessenberg[:count, j] = np.asarray(coeffs, np.float64)
            hessenberg[count, j] = norm
            if norm <= breakdown_tol * max(w_norm, np.finfo(np.float64).tiny):
                # A[:j+1, :j+1] is complete: every entry of its columns is set.
                m, breakdown = j + 1, True
                log.info("Arnoldi: invariant subspace after %d of %d steps", j + 1, n)
                break
        bar.update(len(rows))
        if breakdown:
            break
        step = rows[-1] + 1
        if checkpoint is not None and checkpoint_every and step % checkpoint_every < len(rows):
            if host is not None:
                stacked = host.stacked(step + block)
                saved = layout.zeros_rows(n + block, stacked.dtype).at[: step + block].set(stacked)
            else:
                saved = basis
            checkpoint(ArnoldiProgress(step, saved, hessenberg))
    bar.close()
    rows = host if host is not None else basis
    return Krylov(rows, m, hessenberg[:m, :m], breakdown, layout)


@functools.lru_cache(maxsize=32)
def _first_rows(layout: Layout, count: int):
    """[padded] v -> the [count, padded] basis with row 0 = v, made in one step on its
    shards (an update outside jit would hold two copies at once)."""

    def make(v):
        return jnp.zeros((count, layout.padded), v.dtype).at[0].set(v)

    return jax.jit(make, out_shardings=layout.rows())


_ONE_PASS_BYTES = 2**30  # bases up to 1 GiB are combined in one product
_BLOCK_COLUMNS = 1 << 20


@functools.partial(jax.jit, donate_argnums=0, static_argnames="width")
def _combine_block(out, coefficients, rows, start, width: int):
    block = jax.lax.dynamic_slice(rows, (0, start), (coefficients.shape[1], width))
    return jax.lax.dynamic_update_slice(out, (coefficients @ block).astype(out.dtype), (0, start))


@jax.jit
def _axpy_rows(total, c: jnp.ndarray, row: jnp.ndarray) -> jnp.ndarray:
    term = c[:, None] * row[None, :]
    return term if total is None else total + term


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
      (eigenvalues [k] in decreasing |λ|, eigenvectors [k, padded] as rows laid out as the
      basis), k = min(p̄, available).
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
    eigvecs = krylov.combine(jnp.asarray(vectors[:, keep].T, krylov.dtype))
    return values[keep], eigvecs


@jax.jit
def combine(coefficients: jnp.ndarray, rows: jnp.ndarray) -> jnp.ndarray:
    """[k, m] @ rows[:m] -> [k, padded]. The slice happens inside the jit, so a basis with
    spare rows is never copied; the contraction is over m, so the result keeps the rows'
    sharding of the parameter axis. Summed in the coefficients' dtype, returned in the
    rows'."""
    return (coefficients @ rows[: coefficients.shape[1]]).astype(rows.dtype)
