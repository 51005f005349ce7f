"""K-FAC, EK-FAC and the Gauss–Newton curvature against dense float64 references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifscale.influence import ParamView, Task
from ifscale.influence.hvp import dense_hessian
from ifscale.influence.layerwise import FlaxLayerwise
from ifscale.influence.methods import Arnoldi, Ekfac, Exact, Kfac, Lissa, RandProj
from ifscale.influence.scoring import self_influence_scores
from ifscale.train import cross_entropy
from ifscale.utils import ConfigError

from .simulated_devices import json_from_script

KEY = jax.random.key(0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = jnp.tanh(nn.Dense(5)(x))  # Dense_0
        return nn.Dense(3)(hidden)


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x)


class _Mixed(nn.Module):
    """Conv SAME, Conv VALID, Dense on tokens (3-D input) and Dense on vectors."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(3, (3, 3))(x))
        x = jnp.tanh(nn.Conv(4, (3, 3), padding="VALID")(x))  # [b, 4, 4, 4]
        x = jnp.tanh(nn.Dense(5)(x.reshape(x.shape[0], 16, 4)))  # tokens
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def squared(f, batch):
    return 0.5 * jnp.sum((f - batch[1]) ** 2, axis=-1)


def classify(f, batch):
    return cross_entropy(f, batch[1])


def flax_task(model, loss_from_outputs, l2=0.0, layers=None) -> Task:
    def outputs(p, batch):
        return model.apply({"params": p}, batch[0])

    def sample(p, batch, key):
        return batch[0], jax.random.categorical(key, outputs(p, batch))

    return Task(
        loss=lambda p, batch: loss_from_outputs(outputs(p, batch), batch),
        layers=layers,
        l2=l2,
        layerwise=FlaxLayerwise(model, loss_from_outputs, lambda batch: batch[0]),
        outputs=outputs,
        loss_from_outputs=loss_from_outputs,
        sample_targets=sample,
    )


def problem(kind="mlp", n=40, seed=0, l2=0.0):
    rng = np.random.default_rng(seed)
    if kind == "mixed":
        model, x = _Mixed(), rng.normal(size=(n, 6, 6, 2))
    else:
        model, x = (_MLP() if kind == "mlp" else _Linear()), rng.normal(size=(n, 4))
    params = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64) * 1.5,
        model.init(jax.random.key(seed + 1), jnp.asarray(x[:1]))["params"],
    )
    if kind == "linear":
        return flax_task(model, squared, l2), params, (x, rng.normal(size=(n, 3)))
    return flax_task(model, classify, l2), params, (x, rng.integers(0, 3, n))


def dense_ggn(task, params, data):
    """E_i[J_iᵀ H_i J_i] + l2·I from full Jacobians and output Hessians (no `hvp.py`)."""
    view = ParamView.create(task, params)
    x, y = data

    def out(theta, xi):
        return task.outputs(view.params(theta), (xi[None], None))[0]

    jac = jax.vmap(jax.jacobian(out), in_axes=(None, 0))(view.theta, x)  # [n, o, p]

    def loss(f, yi):
        return task.loss_from_outputs(f[None], (None, yi[None]))[0]

    f = jax.vmap(lambda xi: out(view.theta, xi))(x)
    h = jax.vmap(jax.hessian(loss))(f, y)  # [n, o, o]
    ggn = jnp.einsum("nop,noq,nqr->pr", jac, h, jac) / len(x)
    return np.asarray(ggn) + task.l2 * np.eye(view.size), view


def layer_order(view, layer):
    """Indices into the flat θ of a layer's [a, s] matrix (kernel rows, then the bias)."""
    blocks, offsets, start = view.unravel(view.theta), {}, 0
    for name in view.names:  # ravel_pytree's order: sorted names
        offsets[name] = start
        start += blocks[name].size
    kernel = blocks[f"{layer}/kernel"]
    rows = offsets[f"{layer}/kernel"] + np.arange(kernel.size).reshape(-1, kernel.shape[-1])
    bias = offsets[f"{layer}/bias"] + np.arange(kernel.shape[-1])
    return np.concatenate([rows, bias[None]], axis=0).reshape(-1)


# -- the Gauss–Newton curvature ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_ggn_products_equal_the_dense_gauss_newton_matrix(kind):
    task, params, data = problem(kind, l2=0.05)
    want, view = dense_ggn(task, params, data)
    got = dense_hessian(view.with_curvature("ggn"), [data])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.linalg.eigvalsh(want).min() > 0  # PSD + l2: the GGN of a convex loss
    hessian = dense_hessian(view, [data])
    if kind == "linear":  # a model linear in θ: the GGN is the Hessian
        np.testing.assert_allclose(hessian, want, rtol=1e-10, atol=1e-12)
    else:
        assert np.abs(hessian - want).max() > 1e-3


def test_ggn_fits_have_nonnegative_ritz_values_and_match_exact_ggn_influence():
    task, params, data = problem("mlp")
    exact = Exact(curvature="ggn", progress=False, rcond=1e-8)
    state = exact.fit(task, params, [data], KEY)
    assert state.eigvals.min() > -1e-10
    want, view = dense_ggn(task, params, data)
    g = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, data)
    ref = np.einsum("bp,pq,bq->b", g, np.linalg.pinv(want, rcond=1e-8, hermitian=True), g)
    np.testing.assert_allclose(exact.self_influence(state, data), ref, rtol=1e-6)
    p = view.size
    arnoldi = Arnoldi(n=p, pbar=10, keep=p, curvature="ggn", progress=False)
    spectrum = arnoldi.spectrum(view, [data], KEY)
    assert spectrum.values.min() > -1e-8 * spectrum.values.max()
    hess = Arnoldi(n=p, pbar=10, keep=p, progress=False).spectrum(view, [data], KEY)
    assert hess.values.min() < -1e-4  # the Hessian of this net is indefinite; its GGN is not
    np.testing.assert_allclose(
        np.sort(spectrum.values)[-10:], np.linalg.eigvalsh(want)[-10:], rtol=1e-7
    )


def test_randproj_and_lissa_use_the_ggn():
    task, params, data = problem("mlp", l2=0.5)
    want, view = dense_ggn(task, params, data)
    g = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, data)
    ref = np.einsum("bp,pb->b", g, np.linalg.solve(want, np.asarray(g).T))
    rp = RandProj(pbar=view.size, rcond=0.0, curvature="ggn", progress=False)
    np.testing.assert_allclose(
        rp.self_influence(rp.fit(task, params, [data], KEY), data), ref, rtol=1e-7
    )
    scale = float(np.linalg.eigvalsh(want).max()) * 1.2
    lissa = Lissa(r=400, scale=scale, damping=0.0, curvature="ggn")
    got = lissa.self_influence(lissa.fit(task, params, [data], KEY), data)
    np.testing.assert_allclose(got, ref, rtol=1e-3)


def test_ggn_is_refused_for_a_task_without_outputs():
    task, params, data = problem("mlp")
    bare = Task(task.loss)
    with pytest.raises(ConfigError, match="method.curvature: ggn needs"):
        Arnoldi(n=5, pbar=2, curvature="ggn", progress=False).fit(bare, params, [data], KEY)
    with pytest.raises(ConfigError, match="method.curvature: must be one of"):
        Arnoldi(curvature="fisher")


# -- K-FAC and EK-FAC ----------------------------------------------------------------------


def kfac_dense(state, layer):
    """The layer's (E)K-FAC block (Q_A ⊗ Q_S) diag(Λ) (Q_A ⊗ Q_S)ᵀ in [a, s] row-major order."""
    q = np.kron(np.asarray(state.qa[layer]), np.asarray(state.qs[layer]))
    return q @ np.diag(np.asarray(state.values[layer]).reshape(-1)) @ q.T


def test_kfac_factors_are_the_activation_and_output_covariances():
    """A = E[x̃ x̃ᵀ] by hand; with the exact Fisher S = E[Jᵀ H_f J] of the layer's output,
    which for a Dense layer on vectors is the dense GGN's block of its bias."""
    task, params, data = problem("mlp")
    state = Kfac(fisher="exact", progress=False).fit(task, params, [data], KEY)
    ggn, view = dense_ggn(task, params, data)
    x = np.asarray(data[0])
    hidden = np.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    for layer, inputs in (("Dense_0", x), ("Dense_1", hidden)):
        xt = np.concatenate([inputs, np.ones((len(x), 1))], axis=1)
        a = xt.T @ xt / len(x)
        bias = layer_order(view, layer)[-params[layer]["bias"].size :]
        s = ggn[np.ix_(bias, bias)]
        np.testing.assert_allclose(kfac_dense(state, layer), np.kron(a, s), rtol=1e-9, atol=1e-12)


def test_kfac_inverse_product_is_that_of_the_dense_kronecker_blocks():
    task, params, data = problem("mlp", l2=0.01)
    method = Kfac(fisher="exact", damping=0.3, progress=False)
    state = method.fit(task, params, [data], KEY)
    view = state.view
    v = np.asarray(jax.random.normal(KEY, (view.size,)))
    want = np.zeros_like(v)
    for layer in ("Dense_0", "Dense_1"):
        order = layer_order(view, layer)
        block = kfac_dense(state, layer)
        lam = 0.3 * np.asarray(state.values[layer]).mean() + 0.01
        want[order] = np.linalg.solve(block + lam * np.eye(len(order)), v[order])
    np.testing.assert_allclose(method.inverse_product(state, jnp.asarray(v)), want, rtol=1e-9)
    # and the scores are ⟨g_z, K⁻¹ g_x⟩ with that product
    g = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, data)
    ref = np.stack([g[i] @ method.inverse_product(state, g[i]) for i in range(5)])
    np.testing.assert_allclose(method.self_influence(state, data)[:5], ref, rtol=1e-9)


def test_kfac_is_the_exact_ggn_for_one_linear_layer_with_the_squared_loss():
    """H_f = I for every example: the GGN is E[x̃ x̃ᵀ] ⊗ I, Kronecker-factored exactly."""
    task, params, data = problem("linear")
    ggn, view = dense_ggn(task, params, data)
    order = layer_order(view, "Dense_0")
    for method in (Kfac(fisher="exact", progress=False), Ekfac(fisher="exact", progress=False)):
        state = method.fit(task, params, [data], KEY)
        np.testing.assert_allclose(
            kfac_dense(state, "Dense_0"), ggn[np.ix_(order, order)], rtol=1e-9, atol=1e-12
        )


def test_ekfac_eigenvalues_are_the_ggn_diagonal_in_the_kronecker_basis():
    task, params, data = problem("mlp")
    ggn, view = dense_ggn(task, params, data)
    state = Ekfac(fisher="exact", progress=False).fit(task, params, [data], KEY)
    for layer in ("Dense_0", "Dense_1"):
        order = layer_order(view, layer)
        q = np.kron(np.asarray(state.qa[layer]), np.asarray(state.qs[layer]))
        want = np.diag(q.T @ ggn[np.ix_(order, order)] @ q)
        np.testing.assert_allclose(
            np.asarray(state.values[layer]).reshape(-1), want, rtol=1e-9, atol=1e-13
        )
    # K-FAC's λ_A λ_S are not: the correction changes them
    kfac = Kfac(fisher="exact", progress=False).fit(task, params, [data], KEY)
    assert np.abs(np.asarray(kfac.values["Dense_0"]) - state.values["Dense_0"]).max() > 1e-4


def test_the_sampled_fisher_estimates_the_exact_one():
    task, params, data = problem("mlp", n=400)
    exact = Kfac(fisher="exact", progress=False).fit(task, params, [data], KEY)
    sampled = Kfac(fisher="sampled", progress=False).fit(task, params, [data], KEY)
    for layer in ("Dense_0", "Dense_1"):
        a, b = kfac_dense(sampled, layer), kfac_dense(exact, layer)
        assert np.linalg.norm(a - b) < 0.15 * np.linalg.norm(b)


@pytest.mark.parametrize("method", [Kfac(progress=False), Ekfac(progress=False)])
def test_kfac_scores_on_conv_token_and_vector_layers(method):
    """Self-influence is pairwise's diagonal, batch size does not change scores, and the
    scores are ⟨g_z, K⁻¹ g_x⟩ on Conv (SAME, VALID), Dense on tokens and Dense layers."""
    task, params, data = problem("mixed", n=24)
    state = method.fit(task, params, [data], KEY)
    pairwise = np.asarray(method.influence(state, data, data))
    self_scores = np.asarray(method.self_influence(state, data))
    np.testing.assert_allclose(np.diag(pairwise), self_scores, rtol=1e-9)
    np.testing.assert_allclose(pairwise, pairwise.T, rtol=1e-9, atol=1e-12)
    view = state.view
    g = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, data)
    ref = np.stack([g[i] @ method.inverse_product(state, g[i]) for i in range(4)])
    np.testing.assert_allclose(self_scores[:4], ref, rtol=1e-9)
    for b in (5, 24):
        runs = self_influence_scores(method, state, data, batch_size=b, progress=False)
        np.testing.assert_allclose(runs.scores, self_scores, rtol=1e-10)
    assert (self_scores > 0).all()


def test_kfac_on_a_layer_subset_and_a_measured_function():
    task, params, data = problem("mixed", n=12)
    sub = dataclasses.replace(task, layers=("Conv_1", "Dense_1/kernel"))
    method = Ekfac(progress=False)
    state = method.fit(sub, params, [data], KEY)
    assert [g.layer for g in state.groups] == ["Conv_1", "Dense_1"]
    assert state.view.names == ("Conv_1/bias", "Conv_1/kernel", "Dense_1/kernel")
    g = jax.vmap(jax.grad(state.view.example_loss), in_axes=(None, 0))(state.view.theta, data)
    ref = np.stack([g[i] @ method.inverse_product(state, g[i]) for i in range(3)])
    np.testing.assert_allclose(method.self_influence(state, data)[:3], ref, rtol=1e-9)
    # measuring: the test side takes another function's gradients
    twice = dataclasses.replace(
        task,
        loss=lambda p, b: 2 * task.loss(p, b),
        layerwise=dataclasses.replace(
            task.layerwise, loss_from_outputs=lambda f, b: 2 * classify(f, b)
        ),
    )
    measured = method.measuring(state, twice)
    np.testing.assert_allclose(
        method.influence(measured, data, data), 2 * method.influence(state, data, data), rtol=1e-9
    )


def test_kfac_bad_inputs_are_refused_in_one_line():
    task, params, data = problem("mlp")
    with pytest.raises(ConfigError, match="method.damping: must be > 0"):
        Kfac(damping=0.0)
    with pytest.raises(ConfigError, match="method.fisher: must be one of"):
        Ekfac(fisher="true")
    with pytest.raises(ConfigError, match="method.layers: K-FAC needs the model's per-layer"):
        Kfac(progress=False).fit(Task(task.loss), params, [data], KEY)
    with pytest.raises(ConfigError, match="method.max_factor_size: layer Dense_0's activation"):
        Kfac(max_factor_size=4, progress=False).fit(task, params, [data], KEY)
    no_sampler = dataclasses.replace(task, sample_targets=None)
    with pytest.raises(ConfigError, match="method.fisher: sampled needs"):
        Kfac(progress=False).fit(no_sampler, params, [data], KEY)


MULTI_DEVICE_SCRIPT = """
import json, sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
from tests.test_kfac import problem
from ifscale.influence import Ekfac, top_influences
from ifscale.influence.scoring import self_influence_scores
from ifscale.influence.sharding import make_mesh
task, params, data = problem("mixed", n=24)
out = {"devices": len(jax.devices())}
method = Ekfac(progress=False)
state = method.fit(task, params, [data], jax.random.key(0))
model = int(sys.argv[2])
mesh = make_mesh(model=model)
prepared = method.prepare(state, data, None, mesh)
out["sharded"] = sorted(k for k, a in prepared.qa.items() if not a.sharding.is_fully_replicated)
out["self"] = self_influence_scores(method, state, data, batch_size=8, progress=False,
                                    mesh=mesh).scores.tolist()
top = top_influences(method, state, data, (data[0][:4], data[1][:4]), k=5, batch_size=8,
                     progress=False, mesh=mesh)
out["top"] = [top.proponents.tolist(), top.opponents.tolist(), top.proponent_scores.tolist()]
print(json.dumps(out))
"""


def _kfac_scores_on(devices: int, model: int):
    return json_from_script(MULTI_DEVICE_SCRIPT, str(ROOT), str(model), devices=devices)


def test_ekfac_scores_on_four_devices_equal_scores_on_one():
    """Data-parallel over 2 of the 4 devices, the factors split over a model axis of 2."""
    one, four = _kfac_scores_on(1, 1), _kfac_scores_on(4, 2)
    assert four["devices"] == 4
    assert four["sharded"] == ["Conv_1"]  # its 28 rows split in two
    np.testing.assert_allclose(four["self"], one["self"], rtol=1e-9)
    assert four["top"][:2] == one["top"][:2]
    np.testing.assert_allclose(four["top"][2], one["top"][2], rtol=1e-9)


def test_stored_factors_round_trip_and_a_damaged_file_is_refused(tmp_path):
    from ifscale.cache.spectra import SpectrumStore

    task, params, data = problem("mlp")
    method = Ekfac(progress=False)
    view = ParamView.create(task, params, example=data)
    arrays = method.fit_arrays(view, [data], KEY)
    store = SpectrumStore(tmp_path, 1)
    store.save_arrays({"fit": 1}, arrays, {"t_fit_s": 1.5})
    found, info = store.load_arrays({"fit": 1})
    assert info == {"t_fit_s": 1.5}
    want = method.self_influence(method.from_arrays(view, arrays, data), data)
    got = method.self_influence(method.from_arrays(view, found, data), data)
    np.testing.assert_array_equal(got, want)
    # another damping reuses the stored factors
    other = dataclasses.replace(method, damping=1.0).from_arrays(view, found, data)
    assert not np.allclose(method.self_influence(other, data), want)
    files = [p for p in (store.path({"fit": 1}) / "arrays").rglob("*") if p.is_file()]
    victim = max(files, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 1
    victim.write_bytes(bytes(raw))
    assert store.load_arrays({"fit": 1}) is None
    assert not store.path({"fit": 1}).exists()


def _transformer_problem(layers=None):
    from ifscale.domains.translation.training import translation_task
    from ifscale.models.transformer import Transformer

    model = Transformer(
        vocab_size=17,
        width=8,
        heads=2,
        hidden=16,
        encoder_layers=1,
        decoder_layers=2,
        max_length=16,
    )
    rng = np.random.default_rng(0)
    source = rng.integers(4, 17, (6, 5))
    target = rng.integers(4, 17, (6, 4))
    target[:2, 3:] = 0  # padding
    params = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64),
        model.init(jax.random.key(0), source[:1], target[:1])["params"],
    )
    return translation_task(model, layers), params, (source, target)


@pytest.mark.slow  # a Transformer traced in float64 (about a minute): `make test-slow`
def test_the_transformer_attention_and_mlp_layers_are_captured_per_example():
    from ifscale.influence import layerwise

    task, params, data = _transformer_problem(
        ("decoder/layers_1/self_attention", "decoder/layers_1/mlp")
    )
    view = ParamView.create(task, params, example=data)
    assert view.per_layer  # query/key/value/out (DenseGeneral) and the MLP's Dense layers
    want = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, data)
    np.testing.assert_allclose(layerwise.per_example_grads(view, data), want, rtol=1e-9, atol=1e-12)


@pytest.mark.slow  # as above
def test_kfac_on_a_transformer_leaves_out_embeddings_and_layer_norms():
    task, params, data = _transformer_problem(None)
    method = Ekfac(progress=False)
    state = method.fit(task, params, [data], KEY)
    names = state.view.names
    assert not any("embed" in n or "norm" in n for n in names)
    assert "decoder/layers_1/cross_attention/out/kernel" in names
    g = jax.vmap(jax.grad(state.view.example_loss), in_axes=(None, 0))(state.view.theta, data)
    ref = np.stack([g[i] @ method.inverse_product(state, g[i]) for i in range(3)])
    np.testing.assert_allclose(method.self_influence(state, data)[:3], ref, rtol=1e-8)
    # a prefix naming only unsupported parameters is refused
    bad, _, _ = _transformer_problem(("decoder/norm",))
    with pytest.raises(ConfigError, match="'decoder/norm' selects no kernel or bias"):
        method.fit(bad, params, [data], KEY)
