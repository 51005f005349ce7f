"""Per-example gradients of Dense and Conv layers from one batched backward pass.

`vmap(grad)` turns each convolution's per-example weight gradient into a grouped
convolution, which XLA's CPU backend runs slowly. Dedicated per-sample-gradient libraries
instead keep, for each layer, its input x and the gradient δ of the loss with respect to
its output, both per example and both available from one ordinary batched backward pass;
the weight gradient of one example is then a small product:

  Dense:  ∇W = xᵀ δ (summed over any extra axes, e.g. tokens), ∇b = Σ δ
  Conv:   ∇W = patches(x)ᵀ δ over positions,                    ∇b = Σ_positions δ

and a projection ⟨∇W, U⟩ of a Dense gradient onto k directions needs no [b, p] array at all
(x U δ). This module captures x and δ of every `nn.Dense` and `nn.Conv` of a Flax model
through `nn.intercept_methods`, without changing the model's code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A supported layer: "dense" (Dense, NNX Linear, or a DenseGeneral contracting the
    last `in_axes` input axes into `out_axes` output axes, e.g. attention's projections) or
    "conv" (2-D, stride 1, odd kernel)."""

    kind: str  # "dense" | "conv"
    kernel_size: tuple[int, ...] = ()
    padding: str = "SAME"
    in_axes: int = 1
    out_axes: int = 1

    @property
    def plain(self) -> bool:
        """A Dense layer with a 2-D kernel [in, out]."""
        return self.kind == "dense" and self.in_axes == 1 and self.out_axes == 1


def _supported_conv(mod: nn.Conv) -> bool:
    ks = tuple(mod.kernel_size)
    one = (None, 1, (1,) * len(ks))
    return (
        len(ks) == 2
        and mod.padding in ("SAME", "VALID")
        and (mod.strides in one or tuple(mod.strides) == (1, 1))
        and mod.input_dilation in one
        and mod.kernel_dilation in one
        and mod.feature_group_count == 1
        and all(k % 2 == 1 for k in ks)
    )


@dataclasses.dataclass(frozen=True, eq=False)
class FlaxLayerwise:
    """x and δ of every Dense/Conv layer of `model`, per example.

    Attributes:
      model: the Flax module.
      loss_from_outputs: (model outputs, batch) -> [b] per-example losses.
      inputs_of: batch -> the model's input (a tuple of its inputs with `unpack`).
      unpack: call the model with the inputs as separate arguments (e.g. a Transformer's
        source and target).
    """

    model: nn.Module
    loss_from_outputs: Callable[[Any, Any], jnp.ndarray]
    inputs_of: Callable[[Any], Any]
    unpack: bool = False

    def _apply(self, variables, x, **kwargs):
        args = tuple(x) if self.unpack else (x,)
        return self.model.apply(variables, *args, **kwargs)

    def _interceptor(self, specs: dict):
        def intercept(next_fun, args, kwargs, context):
            mod = context.module
            if context.method_name != "__call__" or not isinstance(
                mod, nn.Dense | nn.DenseGeneral | nn.Conv
            ):
                return next_fun(*args, **kwargs)
            specs["/".join(mod.scope.path)] = _spec_of(mod)
            mod.sow("layer_inputs", "x", args[0])
            return mod.perturb("y", next_fun(*args, **kwargs))

        return intercept

    def capture(self, params, batch) -> tuple[dict, dict, dict]:
        """Returns ({layer: x}, {layer: δ}, {layer: LayerSpec or None}) for `batch`.

        δ is the gradient of the *sum* of per-example losses with respect to the layer's
        output, i.e. each example's own δ (examples do not interact).
        """
        specs: dict = {}
        x = self.inputs_of(batch)
        with nn.intercept_methods(self._interceptor(specs)):
            _, shapes = jax.eval_shape(
                lambda p: self._apply({"params": p}, x, mutable=["perturbations"]), params
            )

            def total_loss(perturbations):
                out, state = self._apply(
                    {"params": params, "perturbations": perturbations},
                    x,
                    mutable=["layer_inputs"],
                )
                return self.loss_from_outputs(out, batch).sum(), state["layer_inputs"]

            zeros = jax.tree_util.tree_map(
                lambda s: jnp.zeros(s.shape, s.dtype), shapes["perturbations"]
            )
            deltas, inputs = jax.grad(total_loss, has_aux=True)(zeros)
        inputs = {
            k[: -len("/x")]: v[0] for k, v in traverse_util.flatten_dict(inputs, sep="/").items()
        }
        deltas = {
            k[: -len("/y")]: v for k, v in traverse_util.flatten_dict(deltas, sep="/").items()
        }
        return inputs, deltas, specs


def _spec_of(module) -> LayerSpec | None:
    """The LayerSpec of a Linen Dense/DenseGeneral/Conv or NNX Linear/Conv module (None:
    unsupported)."""
    if hasattr(module, "kernel_size"):  # a convolution
        if not _supported_conv(module):
            return None
        return LayerSpec("conv", tuple(module.kernel_size), module.padding)
    if isinstance(module, nn.DenseGeneral):
        axis = module.axis if isinstance(module.axis, tuple | list) else (module.axis,)
        features = module.features if isinstance(module.features, tuple | list) else (1,)
        # Only the trailing input axes, contracted in order, and no batch axes.
        if tuple(axis) != tuple(range(-len(axis), 0)) or tuple(module.batch_dims):
            return None
        return LayerSpec("dense", in_axes=len(axis), out_axes=len(features))
    return LayerSpec("dense")


@dataclasses.dataclass(frozen=True, eq=False)
class NnxLayerwise:
    """x and δ of every `nnx.Linear` and `nnx.Conv` of a Flax NNX model, per example: the
    NNX twin of `FlaxLayerwise`, for a task whose parameters are the model's NNX `State`.

    The model is rebuilt from its graph and the parameters inside the traced function
    (`nnx.merge`), and each Linear/Conv instance of that copy is given a subclass whose
    call records its input and adds a zero perturbation to its output (the model's code and
    classes are unchanged; the copy is discarded).

    Attributes:
      graphdef: the model's graph, from `graphdef, params = nnx.split(model, nnx.Param)`
        (or with more filters, the other states in `rest`).
      loss_from_outputs: (model outputs, batch) -> [b] per-example losses.
      inputs_of: batch -> the model's input.
      rest: the model's other states (e.g. batch statistics), merged after the params.
    """

    graphdef: Any
    loss_from_outputs: Callable[[Any, Any], jnp.ndarray]
    inputs_of: Callable[[Any], Any]
    rest: tuple = ()

    def _run(self, params, x, perturbations: dict | None, specs: dict):
        from flax import nnx

        model = nnx.merge(self.graphdef, params, *self.rest)
        inputs, shapes, names = {}, {}, {}
        for path, module in nnx.iter_modules(model):
            if isinstance(module, nnx.Linear | nnx.Conv):
                name = "/".join(str(p) for p in path)
                names[id(module)] = name
                specs[name] = _spec_of(module)
                module.__class__ = _capturing(type(module))
        _ACTIVE.append((names, inputs, shapes, perturbations))
        try:
            out = model(x)
        finally:
            _ACTIVE.pop()
        return out, inputs, shapes

    def capture(self, params, batch) -> tuple[dict, dict, dict]:
        """Returns ({layer: x}, {layer: δ}, {layer: LayerSpec or None}) for `batch`, as
        `FlaxLayerwise.capture`."""
        specs: dict = {}
        x = self.inputs_of(batch)
        shapes = jax.eval_shape(lambda p: self._run(p, x, None, {})[2], params)

        def total_loss(perturbations):
            out, inputs, _ = self._run(params, x, perturbations, specs)
            return self.loss_from_outputs(out, batch).sum(), inputs

        zeros = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
        deltas, inputs = jax.grad(total_loss, has_aux=True)(zeros)
        return inputs, deltas, specs


_CAPTURING: dict[type, type] = {}
# The capture in progress (names by module id, and where x, shapes and perturbations go).
_ACTIVE: list[tuple] = []


def _capturing(cls: type) -> type:
    """The subclass of an NNX Linear/Conv class whose call records x and perturbs y."""
    if cls not in _CAPTURING:

        def __call__(self, x, *args, **kwargs):
            names, inputs, shapes, perturbations = _ACTIVE[-1]
            name = names[id(self)]
            inputs[name] = x
            y = cls.__call__(self, x, *args, **kwargs)
            shapes[name] = jax.ShapeDtypeStruct(y.shape, y.dtype)
            return y if perturbations is None else y + perturbations[name]

        _CAPTURING[cls] = type(f"Capturing{cls.__name__}", (cls,), {"__call__": __call__})
    return _CAPTURING[cls]


Layerwise = FlaxLayerwise | NnxLayerwise


def layer_specs(layerwise: Layerwise, params, batch) -> dict[str, LayerSpec | None]:
    """{layer path: its LayerSpec, or None where the layer is not supported} of every
    Dense/Conv layer the model calls on `batch` (traced, not run)."""
    single = jax.tree_util.tree_map(lambda a: a[:1], batch)
    specs: dict = {}

    def trace(p):  # specs are Python objects: collect them as a side effect of tracing
        inputs, deltas, found = layerwise.capture(p, single)
        specs.update(found)
        return inputs, deltas

    jax.eval_shape(trace, params)
    return specs


def unsupported(specs: dict[str, LayerSpec | None], names: tuple[str, ...]) -> list[str]:
    """The parameter paths of `names` that are not a kernel or bias of a supported layer."""
    found = []
    for name in names:
        layer, _, leaf = name.rpartition("/")
        if specs.get(layer) is None or leaf not in ("kernel", "bias"):
            found.append(name)
    return found


def supports(layerwise: Layerwise | None, params, names: tuple[str, ...], batch) -> bool:
    """Whether every perturbed parameter is a kernel or bias of a supported layer."""
    if layerwise is None:
        return False
    return not unsupported(layer_specs(layerwise, params, batch), names)


def patches(x: jnp.ndarray, kernel_size: tuple[int, int], padding: str) -> jnp.ndarray:
    """[b, h', w', kh*kw*c] patches, ordered like kernel.reshape(kh*kw*c, out)."""
    kh, kw = kernel_size
    if padding == "SAME":
        x = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return jnp.concatenate(
        [x[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)], axis=-1
    )


def layer_grads(x, delta, spec: LayerSpec, leaf: str) -> jnp.ndarray:
    """[b, *param_shape] per-example gradient of one layer's kernel or bias."""
    b = delta.shape[0]
    out_shape = delta.shape[delta.ndim - spec.out_axes :]
    if leaf == "bias":
        return delta.reshape(b, -1, *out_shape).sum(axis=1)
    if spec.kind == "dense":
        in_shape = x.shape[x.ndim - spec.in_axes :]
        xs = x.reshape(b, -1, math.prod(in_shape))
        ds = delta.reshape(b, -1, math.prod(out_shape))
        return jnp.einsum("bta,btc->bac", xs, ds).reshape(b, *in_shape, *out_shape)
    columns = patches(x, spec.kernel_size, spec.padding)
    g = jnp.einsum("bhwk,bhwo->bko", columns, delta)
    kh, kw = spec.kernel_size
    return g.reshape(b, kh, kw, x.shape[-1], delta.shape[-1])


def per_example_grads(view, batch) -> jnp.ndarray:
    """[b, p] per-example gradients in the view's flat layout (sorted parameter paths)."""
    inputs, deltas, specs = view.task.layerwise.capture(view.params(view.theta), batch)
    parts = []
    for name in view.names:  # the order of ravel_pytree over a dict: sorted keys
        layer, _, leaf = name.rpartition("/")
        g = layer_grads(inputs[layer], deltas[layer], specs[layer], leaf)
        parts.append(g.reshape(g.shape[0], -1))
    return jnp.concatenate(parts, axis=1)


def prepare(view, directions: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Directions [k, p] laid out per parameter for `project_prepared` (do this once).

    Dense kernels [in, out] become [in, k*out], so x @ U is one matmul; other parameters
    become [size, k]. (Re-laying the directions out for every batch cost a third of the
    scoring time.)
    """
    blocks = jax.vmap(view.unravel)(directions)  # {name: [k, *shape]}
    prepared = {}
    for name in view.names:
        u = blocks[name]
        if name.endswith("/kernel") and u.ndim == 3:  # a Dense kernel
            prepared[name] = u.transpose(1, 0, 2).reshape(u.shape[1], -1)
        else:
            prepared[name] = u.reshape(u.shape[0], -1).T
    return prepared


def project_prepared(view, prepared: dict[str, jnp.ndarray], k: int, batch) -> jnp.ndarray:
    """[b, k] projections ⟨∇L(x), u⟩ onto directions laid out by `prepare`."""
    inputs, deltas, specs = view.task.layerwise.capture(view.params(view.theta), batch)
    total = 0.0
    for name in view.names:
        layer, _, leaf = name.rpartition("/")
        x, delta, spec, u = inputs[layer], deltas[layer], specs[layer], prepared[name]
        if leaf == "kernel" and spec.plain:
            a, c = x.shape[-1], delta.shape[-1]
            if x.ndim == 2:
                # ⟨x δᵀ, U_k⟩ = x U_k δ: never forms the [b, in, out] gradient.
                xu = (x @ u).reshape(-1, k, c)
                total = total + jnp.einsum("bkc,bc->bk", xu, delta)
            else:
                g = layer_grads(x, delta, spec, leaf)
                total = total + jnp.einsum("bac,akc->bk", g, u.reshape(a, k, c))
        else:
            g = layer_grads(x, delta, spec, leaf)
            total = total + g.reshape(g.shape[0], -1) @ u
    return total


def project(view, directions: jnp.ndarray, batch) -> jnp.ndarray:
    """[b, k] projections onto the rows of directions [k, p], layer by layer."""
    return project_prepared(view, prepare(view, directions), directions.shape[0], batch)


def per_example_sq_norms(view, batch) -> jnp.ndarray:
    """[b] squared norms of per-example gradients (TracIn's self-influence)."""
    inputs, deltas, specs = view.task.layerwise.capture(view.params(view.theta), batch)
    total = 0.0
    for name in view.names:
        layer, _, leaf = name.rpartition("/")
        x, delta, spec = inputs[layer], deltas[layer], specs[layer]
        if leaf == "kernel" and spec.plain and x.ndim == 2:
            total = total + jnp.sum(x * x, -1) * jnp.sum(delta * delta, -1)  # ||x⊗δ||²
        else:
            g = layer_grads(x, delta, spec, leaf)
            total = total + jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=-1)
    return total
