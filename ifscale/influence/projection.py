"""Per-example gradients and their projections onto k directions: the scoring hot path.

Three routes give the same [b, k] projections `G · ∇L(x)`:
  * "grad": per-example gradients [b, p] (vmap of grad), then one matmul with Gᵀ;
  * "jvp":  one forward-mode JVP of the batch losses per direction (k passes), never
            forming a [b, p] array;
  * "layerwise": layer inputs and output gradients from one batched backward pass, then
            per-layer products (`ifscale.influence.layerwise`), for tasks whose perturbed
            parameters all belong to Dense/Conv layers.
Which is faster depends on the model, k and the hardware. "auto" picks by a fixed rule
(`rule_route`), so one config gives bit-identical scores on every fresh cache; "fastest"
times them (`choose_route`), and the choice is recorded beside the scores so every later
job of the same scoring makes it again (`InfluenceMethod.prepare`).
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.extend.core
import jax.numpy as jnp
from jax.sharding import Mesh

from ifscale.influence import layerwise
from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError

log = logging.getLogger(__name__)
ROUTES = ("auto", "fastest", "grad", "jvp", "layerwise")
# "auto" forms per-example gradients ("grad") only while a batch of them stays below this.
GRAD_ROUTE_BYTES = 1 << 30


@jax.jit
def per_example_grads(view: ParamView, batch: Batch) -> jnp.ndarray:
    """[b, p] gradients of each example's loss with respect to the perturbed parameters
    (per layer when the view allows it, else vmap of grad)."""
    if view.per_layer:
        return layerwise.per_example_grads(view, batch)
    return jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, batch)


@jax.jit
def per_example_sq_norms(view: ParamView, batch: Batch) -> jnp.ndarray:
    """[b] squared norms of per-example gradients."""
    if view.per_layer:
        return layerwise.per_example_sq_norms(view, batch)
    g = per_example_grads(view, batch)
    return jnp.sum(g * g, axis=-1)


def _pad_to(x: jnp.ndarray, width: int) -> jnp.ndarray:
    """[..., p] -> [..., width] with zeros: the padded layout of sharded directions."""
    extra = width - x.shape[-1]
    return x if extra == 0 else jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


@jax.jit
def _project_grad(view: ParamView, directions: jnp.ndarray, batch: Batch) -> jnp.ndarray:
    g = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, batch)
    return _pad_to(g, directions.shape[-1]) @ directions.T


@jax.jit
def _project_layerwise(view: ParamView, directions: jnp.ndarray, batch: Batch):
    return layerwise.project(view, directions, batch)


@jax.jit
def _project_jvp(view: ParamView, directions: jnp.ndarray, batch: Batch) -> jnp.ndarray:
    def along(u):
        # One direction, whole (a no-op unless sharded and padded), in the parameters' dtype
        # (a bfloat16 basis's directions are widened one at a time).
        u = u[: view.size].astype(view.dtype)
        return jax.jvp(lambda t: view.losses(t, batch), (view.theta,), (u,))[1]

    return jax.lax.map(along, directions).T


_PROJECTORS = {"grad": _project_grad, "jvp": _project_jvp, "layerwise": _project_layerwise}


def grad_route_is_wrong(view: ParamView, batch: Batch, mesh: Mesh | None) -> bool:
    """Whether the "grad" route would give wrong scores here: `vmap` of the gradient of a
    convolution returns wrong per-example gradients when several CPU devices share a
    batch (an XLA CPU fault, seen with simulated devices; one device is right; GPUs are
    not affected). True on a CPU mesh with a `data` axis > 1 when the loss convolves."""
    if not cpu_data_parallel(mesh):
        return False
    return convolves(view.example_loss, view.theta, jax.tree_util.tree_map(lambda a: a[0], batch))


def cpu_data_parallel(mesh: Mesh | None) -> bool:
    """Whether `mesh` splits batches over several CPU devices."""
    return mesh is not None and mesh.shape["data"] > 1 and mesh.devices.flat[0].platform == "cpu"


def convolves(fn, *args) -> bool:
    """Whether `fn(*args)` (arrays or `jax.ShapeDtypeStruct`s: traced, not run) computes a
    convolution."""
    return _uses(jax.make_jaxpr(fn)(*args).jaxpr, "conv_general_dilated")


def _uses(jaxpr, primitive: str) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            return True
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            if _uses(sub, primitive):
                return True
    return False


def rule_route(
    view: ParamView, batch: Batch, per_layer: bool | None = None, grad: bool = True
) -> str:
    """The route of "auto", decided by the shapes alone: per layer where the view allows it
    (`per_layer`, default `view.per_layer`), else per-example gradients while a batch of
    them fits in `GRAD_ROUTE_BYTES` (and `grad` allows them), else one JVP per direction."""
    per_layer = view.per_layer if per_layer is None else per_layer
    if per_layer:
        return "layerwise"
    rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
    return "grad" if grad and rows * view.size * 4 <= GRAD_ROUTE_BYTES else "jvp"


def choose_route(
    view: ParamView,
    directions: jnp.ndarray,
    batch: Batch,
    per_layer: bool | None = None,
    grad: bool = True,
) -> str:
    """Times the routes on `batch` (compilation excluded) and returns the fastest
    (`per_layer`: whether the layerwise route may be used, default `view.per_layer`;
    `grad`: whether the grad route may)."""
    per_layer = view.per_layer if per_layer is None else per_layer
    times = {}
    for name, fn in _PROJECTORS.items():
        if (name == "layerwise" and not per_layer) or (name == "grad" and not grad):
            continue
        jax.block_until_ready(fn(view, directions, batch))  # compile
        start = time.perf_counter()
        jax.block_until_ready(fn(view, directions, batch))
        times[name] = time.perf_counter() - start
    chosen = min(times, key=times.get)
    log.info(
        "projection route for k=%d, p=%d: %s (%s per batch)",
        directions.shape[0],
        view.size,
        chosen,
        ", ".join(f"{name} {t:.3f}s" for name, t in times.items()),
    )
    return chosen


@functools.partial(jax.jit, static_argnames="k")
def project_prepared(view: ParamView, prepared: dict, k: int, batch: Batch) -> jnp.ndarray:
    """The layerwise route with directions laid out once by `layerwise.prepare`."""
    return layerwise.project_prepared(view, prepared, k, batch)


def project(view: ParamView, directions: jnp.ndarray, batch: Batch, route: str = "auto"):
    """[b, k] projections of each example's gradient onto the rows of `directions` [k, p].

    "auto" or "fastest" here (a state that was never `prepare`d) is `rule_route`.
    """
    if route in ("auto", "fastest"):
        route = rule_route(view, batch)
    if route == "layerwise" and not view.per_layer:
        raise ConfigError(
            "method.route: 'layerwise' needs every perturbed parameter to be a "
            "kernel or bias of a Flax Dense or Conv layer (stride 1)"
        )
    return _PROJECTORS[route](view, directions, batch)
