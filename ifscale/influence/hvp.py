"""Curvature-vector products of the mean training loss: Hessian-vector products
(forward-over-reverse) or, for a task with `curvature="ggn"`, Gauss–Newton-vector products
(a JVP to the outputs, the loss's Hessian in output space, a VJP back)."""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError


def device_batches(batches: Iterable[Batch], sharding=None) -> list[Batch]:
    """Checks that the fit batches have one size and places each on the device(s) once
    (`sharding`: e.g. split over a mesh's `data` axis; default: the default device).

    Equal sizes make the mean of per-batch means the mean over all fit examples.
    """
    batches = list(batches)
    if not batches:
        raise ConfigError("method.fit_batches: at least one fit batch is needed")
    sizes = {len(jax.tree_util.tree_leaves(b)[0]) for b in batches}
    if len(sizes) != 1:
        raise ConfigError(f"method.fit_batch_size: fit batches must have one size, got {sizes}")
    return [jax.device_put(b, sharding) for b in batches]


def _hvp_on(view: ParamView, batch: Batch, v: jnp.ndarray) -> jnp.ndarray:
    """H_batch · v: by forward-over-reverse (the JVP of the gradient along v), or the
    Gauss–Newton product when the view's task asks for it. Differentiated in the space of
    `view.values`: for a view laid out over `model`, a v as wide as `values` (a Krylov row)
    and its product stay split as `values` is; a [p] v is padded and its product cut back."""
    width, given = view.values.shape[-1], v.shape[-1]
    v = view.constrain(jnp.pad(v, (0, width - given)) if given != width else v)
    if view.task.curvature == "ggn":
        product = _ggn_on(view, batch, v)
    else:
        grad = jax.grad(view.objective)
        product = jax.jvp(lambda t: grad(t, batch), (view.values,), (v,))[1]
    return view.constrain(product) if given == width else product[:given]


def _ggn_on(view: ParamView, batch: Batch, v: jnp.ndarray) -> jnp.ndarray:
    """G_batch · v = Jᵀ H_f J v + l2·v, G the Gauss–Newton matrix of the mean loss: J the
    Jacobian of the model's outputs f in θ, H_f the Hessian of the mean loss in f (block
    diagonal over examples). Positive semi-definite wherever the loss is convex in f."""
    task = view.task

    def outputs(theta):
        return task.outputs(view.params(theta), batch)

    out, jv = jax.jvp(outputs, (view.values,), (v,))
    grad_f = jax.grad(lambda f: task.loss_from_outputs(f, batch).mean())
    h_jv = jax.jvp(grad_f, (out,), (jv,))[1]
    _, vjp = jax.vjp(outputs, view.values)
    product = vjp(h_jv)[0]
    return product + task.l2 * v if task.l2 else product


_hvp_jit = jax.jit(_hvp_on)


def hvp(view: ParamView, batches: list[Batch], v: jnp.ndarray) -> jnp.ndarray:
    """H · v for H the Hessian of the mean loss over all fit batches.

    One jitted HVP per batch, summed: memory is that of one batch. (A `lax.map` over
    stacked batches inside one jit was 5-20x slower on XLA's CPU backend.)

    Args:
      view: the perturbed parameters.
      batches: the fit batches, from `device_batches`.
      v: [p] a direction; for a view laid out over `model`, [p] or padded as `view.values`
        (then kept split: the Krylov basis' rows).

    Returns:
      the product, as wide as v.
    """
    return _mean_over_batches(_hvp_jit, view, batches, v)


def _mean_over_batches(product, view: ParamView, batches: list[Batch], x: jnp.ndarray):
    """(1/B) Σ_b product(view, batch_b, x): one jitted product per batch, summed in order."""
    total = product(view, batches[0], x)
    for batch in batches[1:]:
        total = total + product(view, batch, x)
    return total / len(batches)


@jax.jit
def hvp_many(view: ParamView, batch: Batch, vs: jnp.ndarray) -> jnp.ndarray:
    """H_batch · v for several right-hand sides [k, p] (or as wide as `view.values`) at once
    (one data batch): the forward and backward pass of the data are shared by the k tangents
    (vmap over the tangents of one JVP), which is what makes a block of k products cheaper
    than k."""
    return jax.vmap(lambda v: _hvp_on(view, batch, v))(vs)


def hvp_block(view: ParamView, batches: list[Batch], vs: jnp.ndarray) -> jnp.ndarray:
    """[k, p] -> H · vs for the rows of vs: one pass over the fit batches for all k.
    Memory is that of one batch times k tangents."""
    return _mean_over_batches(hvp_many, view, batches, vs)


def dense_hessian(
    view: ParamView, batches: list[Batch], chunk: int = 64, progress: bool = False
) -> np.ndarray:
    """The dense [p, p] Hessian (or Gauss–Newton matrix, per the view's task) over the fit
    batches, `chunk` basis vectors at a time."""
    p = view.size
    out = np.empty((p, p), dtype=view.dtype)
    for start in tqdm(
        range(0, p, chunk), desc="hessian", unit="chunk", disable=not progress, mininterval=1.0
    ):
        stop = min(start + chunk, p)
        basis = jnp.eye(chunk, p, k=start, dtype=view.dtype)
        total = hvp_block(view, batches, basis)
        out[start:stop] = np.asarray(total)[: stop - start]
    return 0.5 * (out + out.T)  # exact in exact arithmetic; removes rounding asymmetry
