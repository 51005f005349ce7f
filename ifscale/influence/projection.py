"""Per-example gradients and their projections onto k directions: the scoring hot path.

Two routes give the same [b, k] projections `G · ∇L(x)`:
  * "grad": per-example gradients [b, p] (vmap of grad), then one matmul with Gᵀ;
  * "jvp":  one forward-mode JVP of the batch losses per direction (k passes), never
            forming a [b, p] array.
Which is faster depends on the model, k and the hardware; "auto" times both once.
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp

from ifscale.influence.task import Batch, ParamView

log = logging.getLogger(__name__)
ROUTES = ("auto", "grad", "jvp")


@jax.jit
def per_example_grads(view: ParamView, batch: Batch) -> jnp.ndarray:
    """[b, p] gradients of each example's loss with respect to the perturbed parameters."""
    return jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, batch)


@jax.jit
def _project_grad(view: ParamView, directions: jnp.ndarray, batch: Batch) -> jnp.ndarray:
    return per_example_grads(view, batch) @ directions.T


@jax.jit
def _project_jvp(view: ParamView, directions: jnp.ndarray, batch: Batch) -> jnp.ndarray:
    def along(u):
        return jax.jvp(lambda t: view.losses(t, batch), (view.theta,), (u,))[1]

    return jax.lax.map(along, directions).T


_PROJECTORS = {"grad": _project_grad, "jvp": _project_jvp}
_chosen: dict = {}


def _signature(view: ParamView, directions: jnp.ndarray, batch: Batch):
    shapes = tuple((x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(batch))
    return (view.task, view.names, directions.shape, shapes)


def choose_route(view: ParamView, directions: jnp.ndarray, batch: Batch) -> str:
    """Times both routes on `batch` (compilation excluded) and returns the faster one."""
    key = _signature(view, directions, batch)
    if key not in _chosen:
        times = {}
        for name, fn in _PROJECTORS.items():
            jax.block_until_ready(fn(view, directions, batch))  # compile
            start = time.perf_counter()
            jax.block_until_ready(fn(view, directions, batch))
            times[name] = time.perf_counter() - start
        _chosen[key] = min(times, key=times.get)
        log.info(
            "projection route for k=%d, p=%d: %s (grad %.3fs, jvp %.3fs per batch)",
            directions.shape[0],
            view.size,
            _chosen[key],
            times["grad"],
            times["jvp"],
        )
    return _chosen[key]


def project(view: ParamView, directions: jnp.ndarray, batch: Batch, route: str = "auto"):
    """[b, k] projections of each example's gradient onto the rows of `directions` [k, p]."""
    if route == "auto":
        route = choose_route(view, directions, batch)
    return _PROJECTORS[route](view, directions, batch)
