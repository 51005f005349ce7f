"""Any JAX model: a Flax NNX model, its Linen twin with copied weights, and plain pytrees
give the same scores with every route (the per-layer capture of NNX included)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ifscale.influence import Checkpoints, ParamView, Task
from ifscale.influence.layerwise import FlaxLayerwise, NnxLayerwise, per_example_grads
from ifscale.influence.methods import Arnoldi, Ekfac, Kfac, TracIn
from ifscale.influence.task import flat_params
from ifscale.train import cross_entropy
from ifscale.utils import ConfigError

KEY = jax.random.key(0)


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(2, 3, (3, 3), param_dtype=jnp.float64, rngs=rngs)
        self.hidden = nnx.Linear(3 * 5 * 5, 6, param_dtype=jnp.float64, rngs=rngs)
        self.out = nnx.Linear(6, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.conv(x))
        h = jnp.tanh(self.hidden(h.reshape(h.shape[0], -1)))
        return self.out(h)


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Conv(3, (3, 3), name="conv")(x))
        h = jnp.tanh(nn.Dense(6, name="hidden")(h.reshape(h.shape[0], -1)))
        return nn.Dense(3, name="out")(h)


def twins(n=20):
    """(NNX task, NNX params State, Linen task, Linen params dict, data), equal weights."""
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(n, 5, 5, 2)), rng.integers(0, 3, n))
    graphdef, state = nnx.split(NnxNet(nnx.Rngs(1)), nnx.Param)

    def nnx_outputs(p, batch):
        return nnx.merge(graphdef, p)(batch[0])

    def loss_from_outputs(f, batch):
        return cross_entropy(f, batch[1])

    nnx_task = Task(
        loss=lambda p, b: loss_from_outputs(nnx_outputs(p, b), b),
        layerwise=NnxLayerwise(graphdef, loss_from_outputs, lambda b: b[0]),
        outputs=nnx_outputs,
        loss_from_outputs=loss_from_outputs,
        sample_targets=lambda p, b, k: (b[0], jax.random.categorical(k, nnx_outputs(p, b))),
    )
    model = LinenNet()
    flat = flat_params(state)
    linen_params = {
        layer: {leaf: flat[f"{layer}/{leaf}"] for leaf in ("kernel", "bias")}
        for layer in ("conv", "hidden", "out")
    }

    def linen_outputs(p, batch):
        return model.apply({"params": p}, batch[0])

    linen_task = Task(
        loss=lambda p, b: loss_from_outputs(linen_outputs(p, b), b),
        layerwise=FlaxLayerwise(model, loss_from_outputs, lambda b: b[0]),
        outputs=linen_outputs,
        loss_from_outputs=loss_from_outputs,
        sample_targets=lambda p, b, k: (b[0], jax.random.categorical(k, linen_outputs(p, b))),
    )
    return nnx_task, state, linen_task, linen_params, data


def test_an_nnx_state_is_viewed_with_the_paths_of_its_linen_twin():
    nnx_task, state, linen_task, params, data = twins()
    a = ParamView.create(nnx_task, state, example=data)
    b = ParamView.create(linen_task, params, example=data)
    assert (
        a.names
        == b.names
        == (
            "conv/bias",
            "conv/kernel",
            "hidden/bias",
            "hidden/kernel",
            "out/bias",
            "out/kernel",
        )
    )
    assert a.per_layer and b.per_layer
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_allclose(a.losses(a.theta, data), b.losses(b.theta, data), rtol=1e-12)
    # the NNX per-layer capture gives the per-example gradients of vmap(grad)
    want = jax.vmap(jax.grad(a.example_loss), in_axes=(None, 0))(a.theta, data)
    np.testing.assert_allclose(per_example_grads(a, data), want, rtol=1e-10, atol=1e-12)
    # the view rebuilds an NNX State that the model accepts
    assert type(a.params(a.theta)) is type(state)


@pytest.mark.parametrize(
    "method",
    [
        Arnoldi(n=20, pbar=6, progress=False, route="layerwise"),
        Arnoldi(n=20, pbar=6, progress=False, route="grad", curvature="ggn"),
        TracIn(checkpoints=1),
        Kfac(progress=False),
        Ekfac(progress=False),
        Ekfac(fisher="exact", progress=False),
    ],
    ids=lambda m: f"{m.name}-{getattr(m, 'route', '')}-{getattr(m, 'curvature', '')}",
)
def test_nnx_and_linen_twins_give_equal_scores(method):
    nnx_task, state, linen_task, params, data = twins()
    scores = []
    for task, p in ((nnx_task, state), (linen_task, params)):
        ckpt = Checkpoints(jax.tree_util.tree_map(lambda a: 0.9 * a[None], p), np.array([0.1]))
        fitted = method.fit(task, p, [data], KEY, ckpt)
        scores.append(
            (np.asarray(method.self_influence(fitted, data)), method.influence(fitted, data, data))
        )
    np.testing.assert_allclose(scores[0][0], scores[1][0], rtol=1e-9)
    np.testing.assert_allclose(scores[0][1], scores[1][1], rtol=1e-9, atol=1e-12)


def test_layers_are_selected_by_key_paths_of_any_pytree():
    nnx_task, state, _, _, data = twins()
    sub = Task(nnx_task.loss, layers=("hidden", "out/kernel"), layerwise=nnx_task.layerwise)
    view = ParamView.create(sub, state, example=data)
    assert view.names == ("hidden/bias", "hidden/kernel", "out/kernel")
    # a tuple of dicts (Equinox-style plain pytrees): paths "0/w", "1/w"
    params = ({"w": jnp.ones((3, 2))}, {"w": jnp.ones((2,))})

    def loss(p, batch):
        return (batch @ p[0]["w"] @ p[1]["w"]) ** 2

    view = ParamView.create(Task(loss, layers=("1",)), params)
    assert view.names == ("1/w",)
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(view.losses(view.theta, x), loss(params, x))


def test_non_array_leaves_are_refused_in_one_line():
    nnx_task, _, _, _, data = twins()
    graphdef, everything = nnx.split(NnxNet(nnx.Rngs(1)))
    assert ParamView.create(nnx_task, everything, example=data)  # params only: accepted
    with pytest.raises(ConfigError, match="params: 'b' is not a floating-point array"):
        ParamView.create(Task(nnx_task.loss), {"a": jnp.ones(2), "b": 3})
    with pytest.raises(ConfigError, match="params: 'count' is not a floating-point array"):
        ParamView.create(Task(nnx_task.loss), {"count": jnp.arange(3)})
