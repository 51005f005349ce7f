"""Per-example gradients and their projections onto k directions: the scoring hot path.

Three routes give the same [b, k] projections `G · ∇L(x)`:
  * "grad": per-example gradients [b, p] (vmap of grad), then one matmul with Gᵀ;
  * "jvp":  one forward-mode JVP of the batch losses per direction (k passes), never
            forming a [b, p] array;
  * "layerwise": layer inputs and output gradients from one batched backward pass, then
            per-layer products (`ifscale.influence.layerwise`), for tasks whose perturbed
            parameters all belong to Dense/Conv layers.
Which is faster depends on the model, k and the hardware; "auto" times them once.
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp

from ifscale.influence import layerwise
from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError

log = logging.getLogger(__name__)
ROUTES = ("auto", "grad", "jvp", "layerwise")
_layerwise_ok: dict = {}


def has_layerwise(view: ParamView, batch: Batch) -> bool:
    """Whether the per-layer route covers every perturbed parameter of `view`."""
    key = (view.task, view.names)
    if key not in _layerwise_ok:
        _layerwise_ok[key] = layerwise.supports(
            view.task.layerwise, view.params(view.theta), view.names, batch
        )
    return _layerwise_ok[key]


@jax.jit
def per_example_grads(view: ParamView, batch: Batch) -> jnp.ndarray:
    """[b, p] gradients of each example's loss with respect to the perturbed parameters
    (per layer when the task allows it, else vmap of grad)."""
    if has_layerwise(view, batch):
        return layerwise.per_example_grads(view, batch)
    return jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, batch)


@jax.jit
def per_example_sq_norms(view: ParamView, batch: Batch) -> jnp.ndarray:
    """[b] squared norms of per-example gradients."""
    if has_layerwise(view, batch):
        return layerwise.per_example_sq_norms(view, batch)
    g = per_example_grads(view, batch)
    return jnp.sum(g * g, axis=-1)


@jax.jit
def _project_grad(view: ParamView, directions: jnp.ndarray, batch: Batch) -> jnp.ndarray:
    g = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, batch)
    return g @ directions.T


@jax.jit
def _project_layerwise(view: ParamView, directions: jnp.ndarray, batch: Batch):
    return layerwise.project(view, directions, batch)


@jax.jit
def _project_jvp(view: ParamView, directions: jnp.ndarray, batch: Batch) -> jnp.ndarray:
    def along(u):
        return jax.jvp(lambda t: view.losses(t, batch), (view.theta,), (u,))[1]

    return jax.lax.map(along, directions).T


_PROJECTORS = {"grad": _project_grad, "jvp": _project_jvp, "layerwise": _project_layerwise}
_chosen: dict = {}


def _signature(view: ParamView, directions: jnp.ndarray, batch: Batch):
    shapes = tuple((x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(batch))
    return (view.task, view.names, directions.shape, shapes)


def choose_route(view: ParamView, directions: jnp.ndarray, batch: Batch) -> str:
    """Times the routes on `batch` (compilation excluded) and returns the fastest."""
    key = _signature(view, directions, batch)
    if key not in _chosen:
        times = {}
        for name, fn in _PROJECTORS.items():
            if name == "layerwise" and not has_layerwise(view, batch):
                continue
            jax.block_until_ready(fn(view, directions, batch))  # compile
            start = time.perf_counter()
            jax.block_until_ready(fn(view, directions, batch))
            times[name] = time.perf_counter() - start
        _chosen[key] = min(times, key=times.get)
        log.info(
            "projection route for k=%d, p=%d: %s (%s per batch)",
            directions.shape[0],
            view.size,
            _chosen[key],
            ", ".join(f"{name} {t:.3f}s" for name, t in times.items()),
        )
    return _chosen[key]


@functools.partial(jax.jit, static_argnames="k")
def project_prepared(view: ParamView, prepared: dict, k: int, batch: Batch) -> jnp.ndarray:
    """The layerwise route with directions laid out once by `layerwise.prepare`."""
    return layerwise.project_prepared(view, prepared, k, batch)


def project(view: ParamView, directions: jnp.ndarray, batch: Batch, route: str = "auto"):
    """[b, k] projections of each example's gradient onto the rows of `directions` [k, p]."""
    if route == "auto":
        route = choose_route(view, directions, batch)
    if route == "layerwise" and not has_layerwise(view, batch):
        raise ConfigError(
            "method.route: 'layerwise' needs every perturbed parameter to be a "
            "kernel or bias of a Flax Dense or Conv layer (stride 1)"
        )
    return _PROJECTORS[route](view, directions, batch)
