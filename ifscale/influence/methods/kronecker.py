"""The Kronecker blocks of K-FAC and EK-FAC (`ifscale.influence.methods.kfac`): which
parameters form a layer's block, its inputs x̃ and output gradients δ per example, its
[a, s] matrix layout, and the output gradients of the Fisher (sampled, empirical, exact)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ifscale.influence import layerwise
from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError, check

# Where the δ of the pseudo-gradients come from (`fisher`).
FISHERS = ("sampled", "empirical", "exact")
# The largest number of outputs per example for fisher="exact" (one backward pass each).
MAX_EXACT_OUTPUTS = 1024


@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """One Kronecker-factored block: a Dense or Conv layer's kernel and/or bias (static)."""

    layer: str
    spec: layerwise.LayerSpec
    kernel: tuple[int, ...] | None  # the kernel's shape, None when it is not perturbed
    bias: tuple[int, ...] | None  # the bias's shape, None when it is not perturbed
    inputs: int  # rows of A: the kernel's input size (patch size for a conv), + 1 for bias
    outputs: int  # rows of S: the layer's output features


def selects(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix.rstrip("/") + "/")


def layer_groups(view: ParamView, batch: Batch) -> tuple[LayerGroup, ...]:
    """The Kronecker blocks of the view's parameters; refuses (ConfigError naming
    method.layers) a parameter that is not a kernel or bias of a supported Dense or Conv
    layer."""
    lw = view.task.layerwise
    if lw is None:
        raise ConfigError(
            "method.layers: K-FAC needs the model's per-layer capture (Task.layerwise, "
            "a Flax Dense/Conv model); this task has none"
        )
    specs = layerwise.layer_specs(lw, view.params(view.theta), batch)
    bad = layerwise.unsupported(specs, view.names)
    check(
        not bad,
        "method.layers",
        f"{bad} are not the kernel or bias of a Dense or Conv layer K-FAC supports; "
        f"choose among {sorted(k for k, v in specs.items() if v is not None)}",
    )
    shapes = jax.tree_util.tree_map(jnp.shape, view.unravel(view.theta))
    groups = []
    for layer in sorted({name.rpartition("/")[0] for name in view.names}):
        spec = specs[layer]
        kernel = shapes.get(f"{layer}/kernel")
        bias = shapes.get(f"{layer}/bias")
        if kernel is not None:
            out_shape = (
                kernel[len(kernel) - spec.out_axes :] if spec.kind == "dense" else kernel[-1:]
            )
            inputs = math.prod(kernel) // math.prod(out_shape)
        else:
            out_shape, inputs = bias, 0
        groups.append(
            LayerGroup(
                layer,
                spec,
                kernel,
                bias,
                inputs=inputs + int(bias is not None),
                outputs=math.prod(out_shape),
            )
        )
    return tuple(groups)


def activations(x, spec: layerwise.LayerSpec, group: LayerGroup) -> jnp.ndarray:
    """[b, t, a] the layer's inputs x̃ per example and token/position (1 appended for a
    bias)."""
    if spec.kind == "conv":
        x = layerwise.patches(x, spec.kernel_size, spec.padding)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
    else:  # the contracted (trailing `in_axes`) axes flattened
        x = x.reshape(x.shape[0], -1, math.prod(x.shape[x.ndim - spec.in_axes :]))
    parts = [x] if group.kernel is not None else []
    if group.bias is not None:
        parts.append(jnp.ones((*x.shape[:2], 1), x.dtype))
    return jnp.concatenate(parts, axis=-1)


def output_grads(delta, group: LayerGroup) -> jnp.ndarray:
    """[b, t, s] the output gradients per example and token/position."""
    return delta.reshape(delta.shape[0], -1, group.outputs)


def gradient_parts(inputs, delta, group: LayerGroup):
    """The layer's per-example gradients: (x̃ [b, a], δ [b, s]) for a Dense layer on vectors
    (the gradient is x̃ δᵀ, never formed), else (G [b, a, s], None)."""
    x = activations(inputs, group.spec, group)
    d = output_grads(delta, group)
    if x.shape[1] == 1:
        return x[:, 0], d[:, 0]
    return jnp.einsum("bta,bts->bas", x, d), None


def matrix_of(blocks: dict, group: LayerGroup) -> jnp.ndarray:
    """A layer's [a, s] matrix from its parameter blocks {name: array}."""
    parts = []
    if group.kernel is not None:
        parts.append(blocks[f"{group.layer}/kernel"].reshape(-1, group.outputs))
    if group.bias is not None:
        parts.append(blocks[f"{group.layer}/bias"].reshape(1, group.outputs))
    return jnp.concatenate(parts, axis=0)


def blocks_of(matrix: jnp.ndarray, group: LayerGroup) -> dict:
    """Inverse of `matrix_of`."""
    out = {}
    if group.kernel is not None:
        out[f"{group.layer}/kernel"] = matrix[
            : group.inputs - 1 * (group.bias is not None)
        ].reshape(group.kernel)
    if group.bias is not None:
        out[f"{group.layer}/bias"] = matrix[-1].reshape(group.bias)
    return out


def fisher_captures(view: ParamView, fisher: str, batch: Batch, key):
    """(inputs, [deltas, ...], specs) of the fit: one set of δ for "sampled" and
    "empirical", one per output for "exact" (Σ over them of δ δᵀ is Jᵀ H_f J exactly)."""
    task, params = view.task, view.params(view.theta)
    lw = task.layerwise
    if fisher == "empirical":
        inputs, deltas, specs = lw.capture(params, batch)
        return inputs, [deltas], specs
    if fisher == "sampled":
        inputs, deltas, specs = lw.capture(params, task.sample_targets(params, batch, key))
        return inputs, [deltas], specs
    out = task.outputs(params, batch)
    b, shape = out.shape[0], out.shape[1:]
    size = math.prod(shape)
    check(
        size <= MAX_EXACT_OUTPUTS,
        "method.fisher",
        f"exact takes one backward pass per output and the model has {size:,} per example "
        f"(at most {MAX_EXACT_OUTPUTS:,}); use sampled",
    )

    def example_loss(f, example):
        single = jax.tree_util.tree_map(lambda a: a[None], example)
        return task.loss_from_outputs(f.reshape(1, *shape), single)[0]

    hessians = jax.vmap(jax.hessian(example_loss))(out.reshape(b, size), batch)
    w, u = jnp.linalg.eigh(hessians)
    roots = u * jnp.sqrt(jnp.maximum(w, 0))[:, None, :]  # H_f = Σ_c r_c r_cᵀ, per example
    linear = dataclasses.replace(
        lw,
        loss_from_outputs=lambda f, pair: jnp.sum((f * pair[1]).reshape(f.shape[0], -1), -1),
        inputs_of=lambda pair: lw.inputs_of(pair[0]),
    )
    deltas = []
    for c in range(size):  # δ of the linear loss ⟨f, r_c⟩: Jᵀ r_c
        inputs, delta, specs = linear.capture(params, (batch, roots[:, :, c].reshape(out.shape)))
        deltas.append(delta)
    return inputs, deltas, specs
