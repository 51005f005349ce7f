"""Where parameter-space vectors live: a 2-D device mesh `data` × `model`.

Hessian-vector products and scoring are data-parallel over `data`: a batch is split along its
leading axis, the parameters are replicated. Arrays of parameter-space vectors with a leading
count axis — the Krylov basis [n+1, p], the Ritz/eigenvectors [k, p], RandProj's directions —
are flat, padded with zeros to a multiple of the `model` size, and sharded over `model` along
the parameter axis, so each device holds 1/model of them; contractions over the parameter axis
(Gram-Schmidt dot products, projections G·∇L(x)) reduce over `model`, and nothing gathers an
n × p array. One vector at a time is gathered where a whole one is needed (the input of a
Hessian-vector product). A flat padded axis rather than a params-shaped pytree: one layout for
every model, and the orthogonalisation stays plain linear algebra.

The parameters are laid out the same way (`ParamView.laid_out`): θ padded and split over
`model`, the frozen parameters each split along an axis `model` divides (`over_model`), so a
device holds about 1/model of them; the curvature products take and return tangents split as
θ is, and XLA gathers the parameters inside each product where the model needs them whole
(transiently: the model's working set, not its resident copy, must fit a device). Stacks of
parameter vectors (TracIn's and the training-dynamics baselines' checkpoints) are laid out as
the basis (`rows_over_model`), one taken at a time.

The default mesh puts every device on `data` (`model` = 1): the layout is then the unpadded
vector on every device, as it was before meshes existed. With `model` > 1 the padding is to a
multiple of `ALIGN`, so that a stored basis restores onto other meshes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifscale.utils import check

AXES = ("data", "model")
# With the parameter axis sharded, vectors are padded to a multiple of this (and `model` must
# divide it): stored arrays then restore onto any power-of-two `model` axis up to it.
ALIGN = 1024


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> Mesh:
    """A `data` × `model` mesh over `devices` (default: all of them).

    Args:
      data: devices along the data axis (None: all devices not on `model`).
      model: devices along the parameter axis of the Krylov basis and eigenvectors.
      devices: the devices to use, in order.
    """
    devices = list(jax.devices() if devices is None else devices)
    check(model >= 1, "mesh.model", f"must be >= 1, got {model}")
    check(
        len(devices) % model == 0,
        "mesh.model",
        f"{model} does not divide the {len(devices)} devices",
    )
    data = len(devices) // model if data is None else data
    check(data >= 1, "mesh.data", f"must be >= 1, got {data}")
    check(
        data * model <= len(devices),
        "mesh",
        f"data x model = {data} x {model} needs more than the {len(devices)} devices",
    )
    # The Mesh constructor keeps automatic axis types: contractions over a sharded axis
    # need no explicit out_sharding (jax.make_mesh would make them explicit).
    return Mesh(np.asarray(devices[: data * model]).reshape(data, model), AXES)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How [..., p] parameter-space arrays are laid out on a mesh.

    Attributes:
      mesh: the `data` × `model` mesh.
      size: p, the number of perturbed parameters.
      padded: p rounded up to a multiple of the `model` axis size.
    """

    mesh: Mesh
    size: int
    padded: int

    @classmethod
    def create(cls, size: int, mesh: Mesh | None = None) -> Layout:
        mesh = make_mesh() if mesh is None else mesh
        model = mesh.shape["model"]
        if model == 1:  # nothing sharded: the plain vector
            return cls(mesh, size, size)
        check(ALIGN % model == 0, "mesh.model", f"must divide {ALIGN}, got {model}")
        return cls(mesh, size, -(-size // ALIGN) * ALIGN)

    @property
    def model(self) -> int:
        return self.mesh.shape["model"]

    @property
    def data(self) -> int:
        return self.mesh.shape["data"]

    def rows(self, memory_kind: str | None = None) -> NamedSharding:
        """[m, padded] arrays: the parameter axis sharded over `model`."""
        return NamedSharding(self.mesh, PartitionSpec(None, "model"), memory_kind=memory_kind)

    def vector(self, memory_kind: str | None = None) -> NamedSharding:
        """[padded] vectors: sharded over `model`."""
        return NamedSharding(self.mesh, PartitionSpec("model"), memory_kind=memory_kind)

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def batch(self) -> NamedSharding:
        """Batches: the leading (example) axis split over `data`."""
        return NamedSharding(self.mesh, PartitionSpec("data"))

    def pad(self, x: jnp.ndarray) -> jnp.ndarray:
        """[..., size] -> [..., padded] with zeros (the identity when nothing is padded, or
        on rows already padded: the products of a view laid out over `model`)."""
        if x.shape[-1] == self.padded:
            return x
        return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, self.padded - self.size)])

    def unpad(self, x: jnp.ndarray) -> jnp.ndarray:
        """[..., padded] -> [..., size]."""
        return x if self.padded == self.size else x[..., : self.size]

    def put_rows(self, x, memory_kind: str | None = None) -> jax.Array:
        """[m, size] (host or device) -> [m, padded] sharded over `model`."""
        return _put_rows(self, memory_kind)(x)

    def put_vector(self, x) -> jax.Array:
        """[size] (host or device) -> [padded] sharded over `model`."""
        return _put_vector(self)(x)

    def zeros_rows(self, count: int, dtype) -> jax.Array:
        """[count, padded] zeros, made in place on their shards (never whole on one device)."""
        return jax.jit(lambda: jnp.zeros((count, self.padded), dtype), out_shardings=self.rows())()


@functools.lru_cache(maxsize=64)
def _put_rows(layout: Layout, memory_kind: str | None):
    return jax.jit(layout.pad, out_shardings=layout.rows(memory_kind))


@functools.lru_cache(maxsize=64)
def _put_vector(layout: Layout):
    return jax.jit(layout.pad, out_shardings=layout.vector())


def over_model(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """A parameter of `shape` split over `model` along its largest axis that the `model` size
    divides (the first of equal ones); replicated where none does (biases of odd widths,
    scalars)."""
    model = mesh.shape["model"]
    axes = [i for i, d in enumerate(shape) if model > 1 and d % model == 0]
    if not axes:
        return NamedSharding(mesh, PartitionSpec())
    axis = max(axes, key=lambda i: (shape[i], -i))
    spec = [None] * len(shape)
    spec[axis] = "model"
    return NamedSharding(mesh, PartitionSpec(*spec))


def rows_over_model(rows: jnp.ndarray, size: int, mesh: Mesh | None) -> jnp.ndarray:
    """[k, size] parameter vectors (TracIn's checkpoints) laid out as the basis is on `mesh`:
    padded and split over `model`, each device holding 1/model of them; unchanged without a
    mesh or with `model` = 1. Row i is a view's `with_theta(rows[i])` (kept split)."""
    if mesh is None or mesh.shape["model"] == 1:
        return rows
    return Layout.create(size, mesh).put_rows(rows)


def bytes_per_device(array: jax.Array) -> dict[str, int]:
    """The bytes of `array` held by each device (measured on its shards)."""
    out: dict[str, int] = {}
    for shard in array.addressable_shards:
        out[str(shard.device)] = out.get(str(shard.device), 0) + shard.data.nbytes
    return out
