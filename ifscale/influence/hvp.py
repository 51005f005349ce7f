"""Hessian-vector products (forward-over-reverse) of the mean training loss."""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError


def stack_batches(batches: Iterable[Batch]) -> Batch:
    """Stacks equally sized batches into one pytree with a leading [n_batches] axis."""
    batches = list(batches)
    if not batches:
        raise ConfigError("method.fit_batches: at least one fit batch is needed")
    sizes = {len(jax.tree_util.tree_leaves(b)[0]) for b in batches}
    if len(sizes) != 1:
        raise ConfigError(f"method.fit_batch_size: fit batches must have one size, got {sizes}")
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)


def batch_count(stacked: Batch) -> int:
    return int(jax.tree_util.tree_leaves(stacked)[0].shape[0])


def _hvp_on(view: ParamView, batch: Batch, v: jnp.ndarray) -> jnp.ndarray:
    """H_batch · v by forward-over-reverse: the JVP of the gradient along v."""
    grad = jax.grad(view.objective)
    return jax.jvp(lambda t: grad(t, batch), (view.theta,), (v,))[1]


_hvp_jit = jax.jit(_hvp_on)


def batches_of(stacked: Batch) -> list[Batch]:
    """The batches of a stacked pytree, each placed on the device once."""
    return [
        jax.device_put(jax.tree_util.tree_map(lambda a, i=i: a[i], stacked))
        for i in range(batch_count(stacked))
    ]


def hvp(view: ParamView, stacked: Batch | list[Batch], v: jnp.ndarray) -> jnp.ndarray:
    """H · v for H the Hessian of the mean loss over all fit batches.

    One jitted HVP per batch, summed: memory is that of one batch. (A `lax.map` over the
    stacked batches inside one jit was 5-20x slower on XLA's CPU backend.)

    Args:
      view: the perturbed parameters.
      stacked: fit batches, stacked with a leading [n_batches] axis or as a list (equal
        sizes, so the mean of per-batch means is the mean over all examples).
      v: [p] a direction.

    Returns:
      [p] the product.
    """
    batches = stacked if isinstance(stacked, list) else batches_of(stacked)
    total = _hvp_jit(view, batches[0], v)
    for batch in batches[1:]:
        total = total + _hvp_jit(view, batch, v)
    return total / len(batches)


@jax.jit
def hvp_many(view: ParamView, batch: Batch, vs: jnp.ndarray) -> jnp.ndarray:
    """H_batch · v for several right-hand sides [k, p] at once (one data batch)."""
    return jax.vmap(lambda v: _hvp_on(view, batch, v))(vs)


def dense_hessian(
    view: ParamView, stacked: Batch, chunk: int = 64, progress: bool = False
) -> np.ndarray:
    """The dense [p, p] Hessian, built from HVPs with `chunk` basis vectors at a time."""
    p = view.size
    columns = jax.jit(lambda view, stacked, basis: jax.vmap(lambda v: hvp(view, stacked, v))(basis))
    out = np.empty((p, p), dtype=np.asarray(view.theta).dtype)
    for start in tqdm(
        range(0, p, chunk), desc="hessian", unit="chunk", disable=not progress, mininterval=1.0
    ):
        stop = min(start + chunk, p)
        basis = jnp.eye(chunk, p, k=start, dtype=view.theta.dtype)
        out[start:stop] = np.asarray(columns(view, stacked, basis))[: stop - start]
    return 0.5 * (out + out.T)  # exact in exact arithmetic; removes rounding asymmetry
