"""Influence methods proven against exact references on tiny float64 problems."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ifscale.influence import Checkpoints
from ifscale.influence.krylov import arnoldi, distill
from ifscale.influence.methods import (
    Arnoldi,
    Exact,
    Lissa,
    RandProj,
    TracIn,
    Trak,
    make_method,
)
from ifscale.influence.scoring import self_influence_scores
from ifscale.influence.task import ParamView, Task
from ifscale.utils import ConfigError

from .influence_fixtures import logistic_problem, mlp_problem, newton_fit, split
from .simulated_devices import json_from_script

ROOT = Path(__file__).resolve().parents[1]
KEY = jax.random.key(0)


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def dense_reference(task, params, data):
    """H from jax.hessian of the mean loss (+ L2) over all data, and the flat gradients."""
    view = ParamView.create(task, params)
    hessian = np.asarray(jax.hessian(view.objective)(view.theta, data))
    grads = np.asarray(jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, data))
    return hessian, grads


def test_arnoldi_on_a_known_spectrum():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    eigenvalues = np.concatenate([[50.0, -20.0, 10.0], rng.uniform(-1, 1, 27)])
    matrix = jnp.asarray(q @ np.diag(eigenvalues) @ q.T)
    krylov = arnoldi(lambda v: matrix @ v, jnp.asarray(rng.normal(size=30)), 30, progress=False)
    values, vectors = distill(krylov, 3)
    np.testing.assert_allclose(values, [50.0, -20.0, 10.0], rtol=1e-10)
    np.testing.assert_allclose(np.abs(vectors @ q[:, :3]), np.eye(3), atol=1e-8)
    positive, _ = distill(krylov, 2, positive_only=True)
    np.testing.assert_allclose(positive, [50.0, 10.0], rtol=1e-10)


def test_arnoldi_with_n_equal_p_recovers_the_dense_hessian_spectrum():
    task, params, data = mlp_problem()
    hessian, _ = dense_reference(task, params, data)
    p = hessian.shape[0]
    view = ParamView.create(task, params)
    from ifscale.influence.hvp import device_batches, hvp

    fit = device_batches([data])
    krylov = arnoldi(
        lambda v: hvp(view, fit, v),
        jax.random.normal(KEY, (p,)),
        p,
        reorthogonalize=True,
        progress=False,
    )
    assert krylov.breakdown
    ritz, _ = distill(krylov, p)
    exact = np.linalg.eigvalsh(hessian)
    scale = np.abs(exact).max()
    # A Krylov space holds one vector per distinct eigenvalue: the softmax's shift
    # invariance makes λ = l2 a multiple eigenvalue, found once.
    distinct = exact[np.concatenate([[True], np.diff(exact) > 1e-8 * scale])]
    assert len(distinct) < p
    np.testing.assert_allclose(np.sort(ritz), distinct, rtol=1e-6, atol=1e-6 * scale)


def test_arnoldi_top_pbar_influence_equals_exact_top_pbar():
    task, params, data = mlp_problem()
    p = ParamView.create(task, params).size
    train, test = split(data, np.arange(40)), split(data, np.arange(40, 48))
    for pbar in (3, 10):
        arn = Arnoldi(n=p, pbar=pbar, reorthogonalize=True, progress=False)
        exact = Exact(pbar=pbar)
        got = arn.influence(arn.fit(task, params, [data], KEY), train, test)
        want = exact.influence(exact.fit(task, params, [data], KEY), train, test)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())


def test_exact_full_inverse_matches_solve():
    task, params, data = mlp_problem()
    hessian, grads = dense_reference(task, params, data)
    exact = Exact()
    state = exact.fit(task, params, [data], KEY)
    want = grads[40:] @ np.linalg.solve(hessian, grads[:40].T)
    got = exact.influence(state, split(data, np.arange(40)), split(data, np.arange(40, 48)))
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10)


def test_randproj_with_pbar_equal_p_is_the_exact_full_inverse():
    task, params, data = mlp_problem()
    hessian, grads = dense_reference(task, params, data)
    p = hessian.shape[0]
    rp = RandProj(pbar=p, rcond=0.0, progress=False)
    state = rp.fit(task, params, [data], KEY)
    want = grads @ np.linalg.solve(hessian, grads.T)
    got = rp.influence(state, data, data)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())


def _tail_reference(directions, inverse, tail):
    """U diag(inverse) Uᵀ + (I − P)/κ, P = Uᵀ(UUᵀ)⁻¹U, κ = tail · min |λ|/‖u‖² over the
    inverted directions (dense, float64)."""
    u = np.asarray(directions, np.float64)
    inverse = np.asarray(inverse, np.float64)
    used = inverse != 0
    curvature = 1 / np.abs(inverse[used]) / np.einsum("kp,kp->k", u, u)[used]
    kappa = tail * curvature.min()
    projector = u.T @ np.linalg.pinv(u @ u.T) @ u
    return u.T @ np.diag(inverse) @ u + (np.eye(u.shape[1]) - projector) / kappa


def test_tail_gives_the_dropped_directions_one_curvature():
    task, params, data = mlp_problem()
    hessian, grads = dense_reference(task, params, data)
    values, vectors = np.linalg.eigh(hessian)
    order = np.argsort(-np.abs(values))
    train, test = split(data, np.arange(40)), split(data, np.arange(40, 48))
    p = hessian.shape[0]
    for pbar, tail, damping in ((5, 1.0, 0.0), (10, 0.1, 0.05), (p, 0.3, 0.0)):
        exact = Exact(pbar=pbar, tail=tail, damping=damping)
        state = exact.fit(task, params, [data], KEY)
        top = order[:pbar]
        inverse = _tail_reference(vectors[:, top].T, 1 / (values[top] + damping), tail)
        want = grads[40:] @ inverse @ grads[:40].T
        got = np.asarray(exact.influence(state, train, test))
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10 * np.abs(want).max())
        np.testing.assert_allclose(
            np.asarray(exact.self_influence(state, data)),
            np.einsum("ip,pq,iq->i", grads, inverse, grads),
            rtol=1e-7,
        )
    # p̄ = p: nothing is dropped, so the tail changes nothing.
    full = Exact(tail=0.3)
    np.testing.assert_allclose(
        np.asarray(full.influence(full.fit(task, params, [data], KEY), train, test)),
        grads[40:] @ np.linalg.solve(hessian, grads[:40].T),
        rtol=1e-7,
        atol=1e-10,
    )
    # Arnoldi with n = p: Exact's tail; RandProj: the complement of the span of G.
    arn = Arnoldi(n=p, pbar=5, keep=5, tail=1.0, reorthogonalize=True, progress=False)
    top5 = Exact(pbar=5, tail=1.0)
    np.testing.assert_allclose(
        np.asarray(arn.influence(arn.fit(task, params, [data], KEY), train, test)),
        np.asarray(top5.influence(top5.fit(task, params, [data], KEY), train, test)),
        rtol=1e-6,
        atol=1e-9,
    )
    rp = RandProj(pbar=6, rcond=0.0, tail=0.5, progress=False)
    state = rp.fit(task, params, [data], KEY)
    u = np.asarray(state.directions, np.float64)
    inverse = _tail_reference(u, np.diag(np.asarray(state.inner)), 0.5)
    np.testing.assert_allclose(
        np.asarray(rp.influence(state, train, test)),
        grads[40:] @ inverse @ grads[:40].T,
        rtol=1e-7,
        atol=1e-10,
    )


def test_randproj_guards_drop_small_and_negative_eigenvalues():
    task, params, data = mlp_problem()
    hessian, grads = dense_reference(task, params, data)
    p = hessian.shape[0]
    full = RandProj(pbar=p, rcond=0.0, progress=False)
    spectrum = full.spectrum(ParamView.create(task, params), [data], KEY)
    values = spectrum.values
    assert (values < 0).any(), "the test problem should have an indefinite Hessian"
    view = ParamView.create(task, params)
    for method, dropped in (
        (RandProj(pbar=p, rcond=0.5, progress=False), np.abs(values) <= 0.5 * np.abs(values).max()),
        (RandProj(pbar=p, rcond=0.0, positive_only=True, progress=False), values <= 0),
    ):
        inner = np.diag(np.asarray(method.from_spectrum(view, spectrum).inner))
        np.testing.assert_array_equal(inner == 0, dropped)
        np.testing.assert_allclose(inner[~dropped], 1 / values[~dropped], rtol=1e-12)


def test_randproj_projection_has_identity_expectation():
    task, params, data = mlp_problem()
    view = ParamView.create(task, params)
    # E[GᵀG] = I with G of shape [p̄, p]: the mean diagonal of GᵀG over draws is 1.
    diag = []
    for i in range(200):
        g = jax.random.normal(jax.random.key(i), (8, view.size)) / np.sqrt(8)
        diag.append(np.asarray(jnp.sum(g * g, axis=0)))
    assert abs(np.mean(diag) - 1.0) < 0.02


def test_lissa_converges_to_the_inverse_hvp_on_a_convex_problem():
    task, params, data = logistic_problem()
    hessian, grads = dense_reference(task, params, data)
    lam_max = np.linalg.eigvalsh(hessian).max()
    lissa = Lissa(r=2000, scale=1.5 * lam_max, damping=0.0)
    state = lissa.fit(task, params, [data], KEY)
    got = np.asarray(lissa.inverse_hvp(state, jnp.asarray(grads[:5])))
    want = np.linalg.solve(hessian, grads[:5].T).T
    rel = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert rel.max() < 1e-3


def test_tracin_with_one_checkpoint_is_lr_times_gradient_dot():
    task, params, data = mlp_problem()
    _, grads = dense_reference(task, params, data)
    stacked = jax.tree_util.tree_map(lambda a: a[None], params)
    tracin = TracIn(checkpoints=1)
    state = tracin.fit(task, params, [data], KEY, Checkpoints(stacked, np.array([0.3])))
    got = tracin.influence(state, data, data)
    np.testing.assert_allclose(got, 0.3 * grads @ grads.T, rtol=1e-10)


def test_tracin_uses_evenly_spaced_checkpoints_ending_with_the_last():
    task, params, data = mlp_problem()
    thetas = [
        jax.tree_util.tree_map(lambda a, s=s: a * s, params) for s in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    ]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *thetas)
    lrs = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    state = TracIn(checkpoints=2).fit(task, params, [data], KEY, Checkpoints(stacked, lrs))
    np.testing.assert_allclose(state.lrs, [0.3, 0.6])
    expected = ravel_pytree(thetas[2])[0]
    np.testing.assert_allclose(np.sort(state.thetas[0]), np.sort(expected))


def all_methods(p):
    return {
        "exact": Exact(),
        "arnoldi": Arnoldi(n=20, pbar=8, progress=False),
        "randproj": RandProj(pbar=8, progress=False),
        "lissa": Lissa(r=30, scale=50.0, damping=0.01),
        "tracin": TracIn(checkpoints=1),
        "arnoldi_tail": Arnoldi(n=20, pbar=5, keep=5, tail=0.5, progress=False),
        "randproj_tail": RandProj(pbar=5, tail=0.5, progress=False),
        "trak": Trak(k=12, progress=False),
        "trak_ensemble": Trak(k=12, models=2, ensemble="retrained", progress=False),
    }


def _fit(method, task, params, data):
    # One checkpoint: the trained parameters, shrunk (TRAK's ensemble: another model).
    ckpt = Checkpoints(jax.tree_util.tree_map(lambda a: 0.9 * a[None], params), np.array([0.1]))
    return method.fit(task, params, [data], KEY, ckpt)


@pytest.mark.parametrize(
    "name",
    [
        "exact",
        "arnoldi",
        "randproj",
        "lissa",
        "tracin",
        "arnoldi_tail",
        "randproj_tail",
        "trak",
        "trak_ensemble",
    ],
)
def test_self_influence_is_the_diagonal_of_pairwise_influence(name):
    task, params, data = mlp_problem()
    method = all_methods(43)[name]
    state = _fit(method, task, params, data)
    pairwise = np.asarray(method.influence(state, data, data))
    np.testing.assert_allclose(
        np.asarray(method.self_influence(state, data)), np.diag(pairwise), rtol=1e-8, atol=1e-12
    )
    np.testing.assert_allclose(pairwise, pairwise.T, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize(
    "name", ["exact", "arnoldi", "randproj", "lissa", "tracin", "trak", "trak_ensemble"]
)
def test_scores_do_not_depend_on_the_batch_size(name):
    task, params, data = mlp_problem()
    method = all_methods(43)[name]
    state = _fit(method, task, params, data)
    runs = [
        self_influence_scores(method, state, data, batch_size=b, progress=False).scores
        for b in (5, 16, 48)
    ]
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-10)
    np.testing.assert_allclose(runs[0], runs[2], rtol=1e-10)
    direct = np.asarray(method.self_influence(state, data))
    np.testing.assert_allclose(runs[0], direct, rtol=1e-10)


@pytest.mark.parametrize("route", ["grad", "jvp"])
def test_projection_routes_agree(route):
    task, params, data = mlp_problem()
    base = Arnoldi(n=20, pbar=8, progress=False, route="grad")
    state = base.fit(task, params, [data], KEY)
    other = Arnoldi(n=20, pbar=8, progress=False, route=route)
    np.testing.assert_allclose(
        other.self_influence(state, data), base.self_influence(state, data), rtol=1e-9
    )


def test_layer_subset_is_honoured_by_hvps_gradients_and_projections():
    task, params, data = mlp_problem()
    sub = Task(task.loss, layers=("Dense_1",), l2=task.l2)
    hessian, grads = dense_reference(task, params, data)
    view = ParamView.create(sub, params)
    assert view.names == ("Dense_1/bias", "Dense_1/kernel")
    # Dense_1 is the last 18 entries of the (sorted-key) flat vector: its Hessian block.
    full_view = ParamView.create(task, params)
    assert full_view.names[-2:] == view.names
    block = hessian[-18:, -18:]
    want = grads[:, -18:] @ np.linalg.solve(block, grads[:, -18:].T)
    for method in (
        Exact(),
        RandProj(pbar=18, rcond=0.0, progress=False),
        Arnoldi(n=18, pbar=18, reorthogonalize=True, progress=False),
    ):
        got = np.asarray(method.influence(method.fit(sub, params, [data], KEY), data, data))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8 * np.abs(want).max())


def test_bad_inputs_name_the_key():
    task, params, data = mlp_problem()
    cases = [
        (lambda: Arnoldi(n=5, pbar=10), "method.pbar"),
        (lambda: Arnoldi(n=0, pbar=1), "method.n"),
        (lambda: Arnoldi(n=5, pbar=0), "method.pbar"),
        (lambda: RandProj(pbar=0), "method.pbar"),
        (lambda: Lissa(r=0), "method.r"),
        (lambda: Lissa(scale=0.0), "method.scale"),
        (lambda: Arnoldi(route="fast"), "method.route"),
        (lambda: Arnoldi(tail=0.0), "method.tail"),
        (lambda: RandProj(tail=-1.0), "method.tail"),
        (lambda: make_method("newton"), "method.name"),
        (lambda: make_method("arnoldi", pbar=3, iterations=10), "method.iterations"),
        (lambda: RandProj(pbar=100, progress=False).fit(task, params, [data], KEY), "method.pbar"),
        (lambda: Exact(max_params=10).fit(task, params, [data], KEY), "method.max_params"),
        (
            lambda: Exact().fit(Task(task.loss, layers=("Conv_0",)), params, [data], KEY),
            "method.layers",
        ),
        (
            lambda: TracIn(checkpoints=3).fit(
                task,
                params,
                [data],
                KEY,
                Checkpoints(jax.tree_util.tree_map(lambda a: a[None], params), np.array([0.1])),
            ),
            "method.checkpoints",
        ),
    ]
    for make, key in cases:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            make()


def test_nan_in_an_hvp_or_a_score_is_an_error():
    task, params, data = mlp_problem()
    bad = jax.tree_util.tree_map(lambda a: a.at[(0,) * a.ndim].set(jnp.nan), params)
    with pytest.raises(FloatingPointError, match="Arnoldi step 1"):
        Arnoldi(n=5, pbar=2, progress=False).fit(task, bad, [data], KEY)
    tracin = TracIn()
    state = tracin.fit(
        task,
        bad,
        [data],
        KEY,
        Checkpoints(jax.tree_util.tree_map(lambda a: a[None], bad), np.array([0.1])),
    )
    with pytest.raises(FloatingPointError, match="non-finite influence scores"):
        self_influence_scores(tracin, state, data, progress=False)


def test_exact_influence_predicts_leave_one_out_retraining():
    """The poster's formal answer: I(x, z) ≈ L(z | θ without x) - L(z | θ)."""
    task, params, data = logistic_problem(n=200, d=8, l2=0.01)
    x, y = data
    n = len(y)
    rng = np.random.default_rng(5)
    x_test = rng.normal(size=(1, 8))
    y_test = np.array([1.0])
    test = (x_test, y_test)

    def test_loss(p):
        return float(task.loss(p, test)[0])

    base = test_loss(params)
    actual = np.empty(n)
    for i in range(n):
        weights = np.ones(n)
        weights[i] = 0.0
        actual[i] = test_loss(newton_fit(task, x, y, weights, iters=8)) - base
    # Removing x moves θ by +H⁻¹ g_x / n (H of the mean objective).
    exact = Exact()
    predicted = np.asarray(exact.influence(exact.fit(task, params, [data], KEY), data, test))[0] / n
    r_exact = np.corrcoef(actual, predicted)[0, 1]
    assert r_exact >= 0.95
    # Arnoldi beside it (reported: run pytest -s). Truncation drops the small-curvature
    # directions, which dominate H⁻¹, so a modest p̄ correlates far less; p̄ = p (= 9) is
    # the exact inverse again.
    r_arnoldi = {}
    for pbar in (3, 6, 9):
        arn = Arnoldi(n=9, pbar=pbar, progress=False, reorthogonalize=True)
        pred = np.asarray(arn.influence(arn.fit(task, params, [data], KEY), data, test))[0]
        r_arnoldi[pbar] = np.corrcoef(actual, pred / n)[0, 1]
    print(
        f"leave-one-out Pearson r: exact {r_exact:.4f}; Arnoldi "
        + ", ".join(f"p̄={k}: {v:.4f}" for k, v in r_arnoldi.items())
    )
    assert r_arnoldi[9] == pytest.approx(r_exact, abs=1e-6)


MULTI_DEVICE_SCRIPT = """
import json, sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
from tests.influence_fixtures import mlp_problem
from ifscale.influence import Arnoldi, TracIn, Lissa, Checkpoints, Trak, top_influences
from ifscale.influence.scoring import self_influence_scores
task, params, data = mlp_problem()
ckpt = Checkpoints(jax.tree_util.tree_map(lambda a: a[None], params), np.array([0.1]))
out = {"devices": len(jax.devices())}
for name, m in {"arnoldi": Arnoldi(n=20, pbar=8, progress=False, route="grad"),
                "tracin": TracIn(), "lissa": Lissa(r=10, scale=50.0),
                "trak": Trak(k=12, models=2, ensemble="retrained", route="grad",
                             progress=False)}.items():
    state = m.fit(task, params, [data], jax.random.key(0), ckpt)
    out[name] = self_influence_scores(m, state, data, batch_size=12,
                                      progress=False).scores.tolist()
    top = top_influences(m, state, data, (data[0][:5], data[1][:5]), k=6, batch_size=12,
                         progress=False)
    out["top-" + name] = [top.proponents.tolist(), top.opponents.tolist(),
                          top.proponent_scores.tolist()]
print(json.dumps(out))
"""


def _scores_on(devices: int):
    return json_from_script(MULTI_DEVICE_SCRIPT, str(ROOT), devices=devices)


def test_scores_on_four_devices_equal_scores_on_one():
    one, four = _scores_on(1), _scores_on(4)
    assert (one["devices"], four["devices"]) == (1, 4)
    for name in ("arnoldi", "tracin", "lissa", "trak"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-9)
        # Explanations too: the same proponents and opponents, the same scores.
        assert four["top-" + name][:2] == one["top-" + name][:2]
        np.testing.assert_allclose(four["top-" + name][2], one["top-" + name][2], rtol=1e-9)


class _MixedNet(flax_nn.Module):
    """Conv SAME, Conv VALID, Dense on tokens (3-D input) and Dense on vectors."""

    @flax_nn.compact
    def __call__(self, x):
        x = flax_nn.tanh(flax_nn.Conv(3, (3, 3))(x))
        x = flax_nn.tanh(flax_nn.Conv(4, (3, 3), padding="VALID")(x))  # [b, 4, 4, 4]
        x = flax_nn.tanh(flax_nn.Dense(5)(x.reshape(x.shape[0], 16, 4)))  # tokens
        return flax_nn.Dense(3)(x.reshape(x.shape[0], -1))


def _mixed_problem():
    from ifscale.influence.layerwise import FlaxLayerwise
    from ifscale.train import cross_entropy

    model = _MixedNet()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 6, 6, 2))
    y = rng.integers(0, 3, 10)
    params = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64),
        model.init(jax.random.key(1), jnp.zeros((1, 6, 6, 2)))["params"],
    )

    def loss(p, batch):
        return cross_entropy(model.apply({"params": p}, batch[0]), batch[1])

    fast = FlaxLayerwise(model, lambda out, b: cross_entropy(out, b[1]), lambda b: b[0])
    return Task(loss, layerwise=fast), params, (x, y)


@pytest.mark.parametrize("layers", [None, ("Conv_1",), ("Dense_0/kernel", "Conv_0/bias")])
def test_layerwise_per_example_grads_equal_vmap_of_grad(layers):
    from ifscale.influence import layerwise

    task, params, data = _mixed_problem()
    task = Task(task.loss, layers=layers, layerwise=task.layerwise)
    view = ParamView.create(task, params, example=data)
    assert view.per_layer
    want = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, data)
    np.testing.assert_allclose(
        layerwise.per_example_grads(view, data), want, rtol=1e-10, atol=1e-12
    )
    directions = jax.random.normal(KEY, (7, view.size))
    np.testing.assert_allclose(
        layerwise.project(view, directions, data), want @ directions.T, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        layerwise.per_example_sq_norms(view, data), jnp.sum(want * want, axis=1), rtol=1e-10
    )


def test_layerwise_route_matches_other_routes_for_every_method():
    task, params, data = _mixed_problem()
    plain = Task(task.loss)
    for method in (
        Arnoldi(n=15, pbar=6, progress=False, route="layerwise"),
        RandProj(pbar=6, progress=False, route="layerwise"),
    ):
        state = method.fit(task, params, [data], KEY)
        ref = dataclasses.replace(method, route="grad")
        ref_state = ref.fit(plain, params, [data], KEY)
        np.testing.assert_allclose(
            method.self_influence(state, data), ref.self_influence(ref_state, data), rtol=1e-8
        )
    tracin = TracIn()
    ckpt = Checkpoints(jax.tree_util.tree_map(lambda a: a[None], params), np.array([0.2]))
    got = tracin.self_influence(tracin.fit(task, params, [data], KEY, ckpt), data)
    want = tracin.self_influence(tracin.fit(plain, params, [data], KEY, ckpt), data)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_layerwise_route_refuses_unsupported_layers():
    task, params, data = mlp_problem()  # a hand-written loss: no layer structure
    method = Arnoldi(n=5, pbar=2, progress=False, route="layerwise")
    with pytest.raises(ConfigError, match="method.route"):
        method.self_influence(method.fit(task, params, [data], KEY), data)


def test_scoring_runs_each_batch_once_and_times_the_steady_rate():
    from ifscale.influence import stream_scores

    calls = []

    def score(batch):
        calls.append(len(batch))
        return jnp.asarray(batch, jnp.float32) * 2.0

    data = np.arange(10, dtype=np.float32)
    result = stream_scores(score, data, batch_size=4, progress=False)
    np.testing.assert_array_equal(result.scores, 2 * data)
    assert calls == [4, 4, 4]  # the first (compiling) batch is kept, not rerun
    assert result.seconds > 0 and result.examples_per_s == pytest.approx(10 / result.seconds)
    calls.clear()
    one = stream_scores(score, data[:3], batch_size=4, progress=False)
    np.testing.assert_array_equal(one.scores, 2 * data[:3])
    assert calls == [3, 3]  # a single batch is run again to be timed without compilation


CHECKPOINTS_OVER_MODEL_SCRIPT = """
import json, sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
from tests.influence_fixtures import mlp_problem
from ifscale.influence import Checkpoints, TracIn, top_influences
from ifscale.influence.methods import CheckpointLoss
from ifscale.influence.scoring import self_influence_scores
from ifscale.influence.sharding import bytes_per_device, make_mesh
task, params, data = mlp_problem()
# Three checkpoints: the trained parameters scaled by 0.8, 0.9, 1.
stack = jax.tree_util.tree_map(lambda a: np.stack([0.8 * a, 0.9 * a, a]), params)
ckpt = Checkpoints(stack, np.array([0.3, 0.2, 0.1]))
out = {"devices": len(jax.devices())}
for shape in ((1, 1), (2, 2), (1, 4)):
    mesh = make_mesh(*shape, devices=jax.devices()[: shape[0] * shape[1]])
    key = f"{shape[0]}x{shape[1]}"
    for name, m in {"tracin": TracIn(checkpoints=3),
                    "checkpoint_loss": CheckpointLoss(checkpoints=3)}.items():
        state = m.fit(task, params, [data], jax.random.key(0), ckpt)
        out[f"{name}-{key}"] = self_influence_scores(m, state, data, batch_size=12,
                                                     progress=False, mesh=mesh).scores.tolist()
        prepared = m.prepare(state, data, mesh=mesh)
        out[f"{name}-bytes-{key}"] = max(bytes_per_device(prepared.thetas).values())
    top = top_influences(TracIn(checkpoints=3), TracIn(checkpoints=3).fit(
        task, params, [data], jax.random.key(0), ckpt), data, (data[0][:5], data[1][:5]),
        k=6, batch_size=12, progress=False, mesh=mesh)
    out[f"top-{key}"] = [top.proponents.tolist(), top.proponent_scores.tolist()]
out["p"] = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params)))
print(json.dumps(out))
"""


def test_checkpoints_split_over_model_give_the_scores_of_one_device():
    """TracIn's and checkpoint_loss's k checkpoints [k, p] are laid out as the Krylov basis
    on a mesh with `model` > 1 (padded to 1024, split): each device holds k x padded/model
    of them, and the scores and explanations are those of one device."""
    out = json_from_script(CHECKPOINTS_OVER_MODEL_SCRIPT, str(ROOT), devices=4)
    p, padded = out["p"], -(-out["p"] // 1024) * 1024
    for name in ("tracin", "checkpoint_loss"):
        assert out[f"{name}-bytes-1x1"] == 3 * p * 8  # float64, whole on one device
        assert out[f"{name}-bytes-2x2"] == 3 * padded // 2 * 8
        assert out[f"{name}-bytes-1x4"] == 3 * padded // 4 * 8
        for mesh in ("2x2", "1x4"):
            np.testing.assert_allclose(out[f"{name}-{mesh}"], out[f"{name}-1x1"], rtol=1e-10)
    for mesh in ("2x2", "1x4"):
        assert out[f"top-{mesh}"][0] == out["top-1x1"][0]
        np.testing.assert_allclose(out[f"top-{mesh}"][1], out["top-1x1"][1], rtol=1e-10)
