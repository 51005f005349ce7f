"""What an influence method needs from a model: a per-example loss and the perturbed parameters.

Methods never see Flax modules. They see a `Task` (a pure per-example loss of
`(params, batch)` and which parameters are perturbed) and work on the flat vector θ of the
perturbed parameters through a `ParamView`; the others stay fixed at their trained values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ifscale.influence import layerwise
from ifscale.influence.sharding import Layout, over_model
from ifscale.utils import ConfigError, check

Batch = Any  # a pytree of arrays sharing a leading batch axis
LossFn = Callable[[Any, Batch], jnp.ndarray]  # (params, batch) -> [b] per-example losses
# The curvatures whose products `ifscale.influence.hvp` computes (`Task.curvature`).
CURVATURES = ("hessian", "ggn")


@dataclasses.dataclass(frozen=True)
class Task:
    """A model as influence methods see it.

    Attributes:
      loss: per-example loss, `loss(params, batch) -> [b]`; pure and jittable. The
        Hessian is that of the mean of this loss over the fit batches (plus `l2`).
      layers: the perturbed parameters, as "/"-joined path prefixes into the params tree
        (e.g. ("Dense_0", "Dense_1/kernel")); None perturbs all of them. Gradients, HVPs
        and projections all live in the space of these parameters only.
      l2: coefficient of 0.5 * l2 * ||θ||² in the training objective (adds l2·I to H).
      layerwise: optional `ifscale.influence.layerwise.FlaxLayerwise` of the same model
        and loss: enables the fast per-layer route for per-example gradients.
      error_norm: for classifiers, `error_norm(params, batch) -> [b]`, the L2 norm of
        softmax − one-hot (the EL2N baseline, `ifscale.influence.baselines`); else None.
      logit_margin: for classifiers, `logit_margin(params, batch) -> [b]`, the label's
        logit minus the largest other logit (the area under the margin,
        `ifscale.influence.methods.dynamics`); else None.
      output: the task whose per-example function is the model's output f as TRAK defines
        it (for a classifier the label's log-odds log p/(1 − p), negated: the loss is
        log(1 + e^(−f)), so ∇L = −(1 − p)∇f); its gradients make TRAK's kernel
        (`ifscale.influence.methods.trak`). None: TRAK is not defined for the task.
      outputs: `outputs(params, batch) -> f`, the model's outputs (e.g. logits [b, classes]
        or [b, T, vocab]), with `loss_from_outputs(f, batch) -> [b]` the loss of them
        (`loss` = `loss_from_outputs(outputs(params, batch), batch)`): the split that
        defines the Gauss–Newton matrix G = Jᵀ H_f J (`curvature="ggn"`) and the exact
        Fisher of K-FAC. None: only the Hessian is defined.
      sample_targets: `sample_targets(params, batch, key) -> batch`, the batch with its
        targets drawn from the model's predictive distribution (K-FAC's sampled Fisher,
        `ifscale.influence.methods.kfac`); None: not defined for the task.
      curvature: the curvature whose products `ifscale.influence.hvp` computes: "hessian"
        (of the mean loss) or "ggn" (its Gauss–Newton part, positive semi-definite for a
        loss convex in the outputs); l2·I is added to either.
    """

    loss: LossFn
    layers: tuple[str, ...] | None = None
    l2: float = 0.0
    layerwise: Any = None
    error_norm: LossFn | None = None
    logit_margin: LossFn | None = None
    output: Task | None = None
    outputs: Callable[[Any, Batch], Any] | None = None
    loss_from_outputs: Callable[[Any, Batch], jnp.ndarray] | None = None
    sample_targets: Callable[[Any, Batch, Any], Batch] | None = None
    curvature: str = "hessian"

    def with_curvature(self, curvature: str) -> Task:
        """The task whose curvature products are those of `curvature` ("hessian" or
        "ggn"); refuses (ConfigError naming method.curvature) a GGN the task cannot define."""
        check_curvature(curvature)
        check(
            curvature == "hessian"
            or (self.outputs is not None and self.loss_from_outputs is not None),
            "method.curvature",
            "ggn needs the model's outputs and the loss of them (Task.outputs and "
            "Task.loss_from_outputs); this task has only a loss",
        )
        return dataclasses.replace(self, curvature=curvature)


def check_curvature(curvature: str) -> None:
    """Refuses (ConfigError naming method.curvature) a curvature that is not one of
    `CURVATURES`."""
    check(
        curvature in CURVATURES,
        "method.curvature",
        f"must be one of {CURVATURES}, got {curvature!r}",
    )


def flat_params(params) -> dict[str, Any]:
    """{path: leaf} of any pytree of parameters: paths are the `jax.tree_util` key paths
    joined by "/" (dict keys, sequence indices, attribute names), without the trailing
    `value` of a Flax NNX Variable, e.g. "Dense_0/kernel" (Linen), "linear/kernel" (an NNX
    `State` from `nnx.split`), "0/w" (a tuple of dicts)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    flat = {}
    for path, leaf in leaves:
        flat[_path_string(path)] = leaf
    return flat


def _path_string(path) -> str:
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    if len(parts) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
        parts.pop()  # an NNX Variable's value: its path is the variable's
    return "/".join(parts)


def check_params(params) -> None:
    """Refuses (ConfigError) a parameter tree with a leaf that is not an array (e.g. an NNX
    state split with its RNG keys or a Python number): θ is made of floating arrays."""
    for path, leaf in flat_params(params).items():
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise ConfigError(
                f"params: {path!r} is not a floating-point array ({type(leaf).__name__}"
                f"{'' if dtype is None else ' of ' + str(dtype)}); split the model's "
                "parameters only (e.g. nnx.split(model, nnx.Param, ...))"
            )


def check_layers(layers: Sequence[str] | None, params) -> None:
    """Refuses (ConfigError) a path prefix of `layers` that selects no parameter of the
    `params` tree (arrays or shapes): a misspelt layer is never silently left out."""
    if layers is None:
        return
    flat = flat_params(params)
    missing = [p for p in layers if not any(_path_selected(k, (p,)) for k in flat)]
    if missing:
        tops = sorted({k.split("/")[0] for k in flat})
        raise ConfigError(
            f"method.layers: {missing} name no parameter of the model; its layers are {tops}"
        )


def _path_selected(path: str, layers: Sequence[str] | None) -> bool:
    if layers is None:
        return True
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in layers)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ParamView:
    """The flat vector θ of a task's perturbed parameters, and the loss as a function of it.

    Attributes:
      values: the trained values of the perturbed parameters: θ [p], or, laid out over a
        mesh's `model` axis (`laid_out`), θ padded with zeros to the basis' width and split
        over `model` (each device holds 1/model of it). `theta` is θ either way.
      unravel: maps a [p] vector back to the perturbed subtree.
      frozen: the other parameters, as a flat {path: array} dict (laid out over `model`:
        each split along an axis `model` divides, where one does).
      names: the "/" paths of the perturbed parameters.
      per_layer: whether every perturbed parameter is a kernel or bias of a Flax Dense or
        Conv layer that `task.layerwise` covers: per-example gradients then come per layer
        from one batched backward pass (`ifscale.influence.layerwise`).
      size: p, the number of perturbed parameters.
      sharding: the sharding of `values` when laid out over `model` (None: as placed).

    Products with the curvature (`ifscale.influence.hvp`) differentiate in the space of
    `values`: laid out, their tangents and results are padded vectors split as `values` is,
    and XLA gathers the parameters inside the product where the model needs them whole.
    """

    # A pytree: `values` and `frozen` are traced when a view is passed to a jitted function;
    # the rest is static, so views that differ only in values share one compilation.
    values: jnp.ndarray
    frozen: dict
    task: Task = dataclasses.field(metadata={"static": True})
    unravel: Callable[[jnp.ndarray], dict] = dataclasses.field(metadata={"static": True})
    names: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    per_layer: bool = dataclasses.field(default=False, metadata={"static": True})
    # The structure of the params tree and the path of each of its leaves, in order.
    treedef: Any = dataclasses.field(default=None, metadata={"static": True})
    paths: tuple[str, ...] = dataclasses.field(default=(), metadata={"static": True})
    size: int = dataclasses.field(default=0, metadata={"static": True})
    sharding: Any = dataclasses.field(default=None, metadata={"static": True})

    @classmethod
    def create(cls, task: Task, params, example: Batch | None = None) -> ParamView:
        """The view of `task`'s perturbed parameters at `params`.

        Args:
          task: the loss and which parameters are perturbed.
          params: the full params tree: any pytree of floating arrays (Flax Linen dicts,
            an NNX `State`, tuples, dataclasses registered as pytrees).
          example: a batch of the task's data (any size), traced once to decide
            `per_layer`; without one the per-layer route is off.
        """
        check_params(params)
        check_layers(task.layers, params)
        flat = flat_params(params)
        chosen = {k: v for k, v in flat.items() if _path_selected(k, task.layers)}
        theta, unravel = ravel_pytree(chosen)
        frozen = {k: v for k, v in flat.items() if k not in chosen}
        names = tuple(sorted(chosen))
        per_layer = example is not None and layerwise.supports(
            task.layerwise, params, names, example
        )
        treedef = jax.tree_util.tree_structure(params)
        return cls(theta, frozen, task, unravel, names, per_layer, treedef, tuple(flat), theta.size)

    @staticmethod
    def count(task: Task, params) -> int:
        """The number of parameters `task` perturbs, without building the view."""
        flat = flat_params(params)
        return sum(int(v.size) for k, v in flat.items() if _path_selected(k, task.layers))

    @property
    def theta(self) -> jnp.ndarray:
        """[p] the perturbed parameters (`values` without its padding)."""
        return self.values if self.values.shape[-1] == self.size else self.values[: self.size]

    @property
    def dtype(self):
        """The parameters' dtype (read without slicing or gathering `values`)."""
        return self.values.dtype

    def laid_out(self, mesh) -> ParamView:
        """This view on `mesh`: with a `model` axis > 1, θ padded as the Krylov basis is and
        split over `model`, and each frozen parameter split along its largest axis that
        `model` divides (replicated where none does), so a device holds about 1/model of the
        parameters; with `model` = 1, everything replicated (the plain vector)."""
        layout = Layout.create(self.size, mesh)
        if layout.model == 1:
            put = functools.partial(jax.device_put, device=layout.replicated())
            return dataclasses.replace(
                self,
                values=put(self.theta),
                frozen=jax.tree_util.tree_map(put, self.frozen),
                sharding=None,
            )
        frozen = {k: jax.device_put(v, over_model(v.shape, mesh)) for k, v in self.frozen.items()}
        return dataclasses.replace(
            self, values=layout.put_vector(self.theta), frozen=frozen, sharding=layout.vector()
        )

    def constrain(self, x: jnp.ndarray) -> jnp.ndarray:
        """`x` ([..., width of `values`]) split as `values` is, inside a jitted function;
        unchanged for a view not laid out over `model`."""
        if self.sharding is None:
            return x
        return jax.lax.with_sharding_constraint(x, self.sharding)

    def params(self, theta: jnp.ndarray):
        """The full params tree with the perturbed part set to `theta` ([p], or padded as
        `values`: the padding is dropped)."""
        if theta.shape[-1] != self.size:
            theta = theta[: self.size]
        leaves = {**self.frozen, **self.unravel(theta)}
        return self.treedef.unflatten([leaves[path] for path in self.paths])

    def losses(self, theta: jnp.ndarray, batch: Batch) -> jnp.ndarray:
        """[b] per-example losses at `theta`."""
        return self.task.loss(self.params(theta), batch)

    def example_loss(self, theta: jnp.ndarray, example: Batch) -> jnp.ndarray:
        """The loss of one example (a batch without its leading axis)."""
        single = jax.tree_util.tree_map(lambda a: a[None], example)
        return self.task.loss(self.params(theta), single)[0]

    def objective(self, theta: jnp.ndarray, batch: Batch) -> jnp.ndarray:
        """Mean loss over `batch` plus the L2 term: the function whose Hessian is H."""
        reg = 0.5 * self.task.l2 * jnp.vdot(theta, theta) if self.task.l2 else 0.0
        return self.losses(theta, batch).mean() + reg

    def measuring(self, task: Task) -> ParamView:
        """The same parameters with `task`'s per-example function in place of the loss
        (the test side of an attribution measuring something else, e.g. a margin); the
        per-layer route where `task` has its own layerwise capture."""
        task = dataclasses.replace(task, layers=self.task.layers, l2=self.task.l2)
        return dataclasses.replace(
            self, task=task, per_layer=self.per_layer and task.layerwise is not None
        )

    def with_curvature(self, curvature: str) -> ParamView:
        """The same view whose curvature products are those of `curvature` ("hessian" or
        "ggn", `Task.with_curvature`)."""
        if curvature == self.task.curvature:
            return self
        return dataclasses.replace(self, task=self.task.with_curvature(curvature))

    def with_theta(self, theta: jnp.ndarray) -> ParamView:
        """The same view around other parameter values (e.g. a TracIn checkpoint): [p], or
        padded as `values` (a row of checkpoints laid out over `model`, kept split)."""
        if self.sharding is not None and theta.shape[-1] != self.values.shape[-1]:
            theta = jnp.pad(theta, (0, self.values.shape[-1] - theta.shape[-1]))
        return dataclasses.replace(self, values=theta)


def view_of_params(task: Task, params, reference: ParamView) -> ParamView:
    """A view of `params` with the same perturbed subset and layout as `reference`."""
    flat = flat_params(params)
    theta, _ = ravel_pytree({k: flat[k] for k in reference.names})
    frozen = {k: v for k, v in flat.items() if k not in reference.names}
    view = dataclasses.replace(reference, values=theta, frozen=frozen, sharding=None)
    return view if reference.sharding is None else view.laid_out(reference.sharding.mesh)


def laid_out_views(state, mesh):
    """A method's state (a dataclass) with each of its `ParamView` fields (the training
    loss's `view`, a test side's `measure`) laid out on `mesh` (`ParamView.laid_out`);
    unchanged without a mesh."""
    if mesh is None:
        return state
    views = {
        f.name: getattr(state, f.name).laid_out(mesh)
        for f in dataclasses.fields(state)
        if isinstance(getattr(state, f.name), ParamView)
    }
    return dataclasses.replace(state, **views)
