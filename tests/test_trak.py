"""TRAK against its dense definition in float64, the projection against the
Johnson–Lindenstrauss bound, the ensemble's invariances; the training-dynamics baselines
against an independent computation; bad settings refused before training."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ifscale.run.pipeline
from ifscale.config import ModelConfig, NoiseConfig, RunConfig
from ifscale.domains.images import classification_task, logit_margin, margin
from ifscale.influence import self_influence_scores
from ifscale.influence.methods import AreaUnderMargin, CheckpointLoss, Trak
from ifscale.influence.methods.trak import _draw
from ifscale.influence.protocol import Checkpoints
from ifscale.influence.sharding import Layout
from ifscale.influence.task import ParamView
from ifscale.run.compose import method_config, validate
from ifscale.train import TrainConfig, cross_entropy
from ifscale.utils import ConfigError
from tests.test_kinds import BlobsConfig, tabular_kind  # noqa: F401  (a fixture)


class Tiny(nn.Module):
    hidden: int = 6

    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.tanh(nn.Dense(self.hidden)(x)))


def _problem(n=240, hidden=6, seed=0):
    """(model, float64 params, x, y): call inside jax.enable_x64."""
    model = Tiny(hidden)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = rng.integers(0, 4, size=n).astype(np.int32)
    params = model.init(jax.random.PRNGKey(seed), x[:1])["params"]
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64) * 1.5, params)
    return model, params, x, y


def _dense(model, params, x, y, fit, train, test, measure_margin=False):
    """TRAK by its definition: (P g_z)ᵀ (ΦᵀΦ/n)⁻¹ (P g_x) with k = p is g_zᵀ (ΦᵀΦ/n)⁻¹ g_x,
    Φ the Jacobian of the margin over the fit examples, g the loss gradients."""
    task = classification_task(model)
    view = ParamView.create(task, params)

    def margins(theta, rows):
        return margin(model.apply({"params": view.params(theta)}, x[rows]), y[rows])

    def losses(theta, rows):
        return cross_entropy(model.apply({"params": view.params(theta)}, x[rows]), y[rows])

    phi = jax.jacobian(margins)(view.theta, fit)  # [n, p]
    kernel = phi.T @ phi / len(fit)
    g_train = jax.jacobian(losses)(view.theta, train)
    g_test = (
        -jax.jacobian(margins)(view.theta, test)
        if measure_margin
        else jax.jacobian(losses)(view.theta, test)
    )
    return np.asarray(g_test @ np.linalg.solve(kernel, g_train.T)), view.size


@pytest.mark.parametrize("route", ["jvp", "layerwise", "grad"])
def test_trak_with_k_equal_p_is_the_dense_gauss_newton_influence(route):
    with jax.enable_x64():
        model, params, x, y = _problem()
        fit, train, test = np.arange(240), np.arange(9), np.arange(200, 205)
        expected, p = _dense(model, params, x, y, fit, train, test)
        method = Trak(k=p, route=route, progress=False)
        task = classification_task(model)
        batches = [(x[i : i + 60], y[i : i + 60]) for i in range(0, 240, 60)]
        state = method.fit(task, params, batches, jax.random.key(3))
        assert state.members[0].route == route
        got = np.asarray(method.influence(state, (x[train], y[train]), (x[test], y[test])))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
        # Self-influence is the diagonal.
        own = np.asarray(method.self_influence(state, (x[train], y[train])))
        diag, _ = _dense(model, params, x, y, fit, train, train)
        np.testing.assert_allclose(own, np.diag(diag), rtol=1e-6)
        # Measuring minus the margin: TRAK's score φ_zᵀ K⁻¹ (1 − p_x) φ_x.
        measured = method.measuring(state, classification_task(model).output)
        got = np.asarray(method.influence(measured, (x[train], y[train]), (x[test], y[test])))
        expected, _ = _dense(model, params, x, y, fit, train, test, measure_margin=True)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
def test_projected_inner_products_keep_the_johnson_lindenstrauss_bound(projection):
    """m = 20 gradients of a 644-parameter model projected to k = 400: every inner product
    within ε‖u‖‖v‖ of the dense one, ε = sqrt(8 ln m / k) ≈ 0.25 (the JL lemma's
    distortion for m points at this k)."""
    with jax.enable_x64():
        model, params, x, y = _problem(hidden=64)
        view = ParamView.create(classification_task(model), params)
        grads = np.asarray(
            jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(view.theta, (x[:20], y[:20]))
        )
        k = 400
        directions = _draw(
            jax.random.key(1), k, view.size, projection, jnp.float64, Layout.create(view.size)
        )
        projected = grads @ np.asarray(directions)[:, : view.size].T
        eps = np.sqrt(8 * np.log(20) / k)
        norms = np.linalg.norm(grads, axis=1)
        gap = np.abs(projected @ projected.T - grads @ grads.T)
        assert (gap <= eps * np.outer(norms, norms)).all()
        assert gap.max() > 0  # a projection, not the identity


def test_an_ensemble_of_identical_models_is_one_model():
    with jax.enable_x64():
        model, params, x, y = _problem()
        task = classification_task(model)
        batches = [(x[:120], y[:120]), (x[120:], y[120:])]
        stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a] * 4), params)
        same = Checkpoints(stacked, np.ones(4))
        train, test = (x[:7], y[:7]), (x[200:203], y[200:203])
        one = Trak(k=20, progress=False)
        state = one.fit(task, params, batches, jax.random.key(0))
        expected = np.asarray(one.influence(state, train, test))
        for ensemble in ("checkpoints", "retrained"):
            many = Trak(k=20, models=4, ensemble=ensemble, progress=False)
            fitted = many.fit(task, params, batches, jax.random.key(0), same)
            assert len(fitted.members) == 4
            np.testing.assert_allclose(many.influence(fitted, train, test), expected, rtol=1e-10)
            np.testing.assert_allclose(
                many.self_influence(fitted, train), one.self_influence(state, train), rtol=1e-10
            )
        # Different models do change the scores, by their mean.
        other = jax.tree_util.tree_map(lambda a: a * 0.7, params)
        mixed = Checkpoints(
            jax.tree_util.tree_map(lambda a, b: jnp.stack([b, a]), params, other), np.ones(2)
        )
        two = Trak(k=20, models=2, progress=False).fit(
            task, params, batches, jax.random.key(0), mixed
        )
        alone = one.fit(task, other, batches, jax.random.key(0))
        np.testing.assert_allclose(
            Trak(k=20, models=2).influence(two, train, test),
            0.5 * (expected + np.asarray(one.influence(alone, train, test))),
            rtol=1e-10,
        )


def test_damping_and_a_singular_kernel():
    """λ is added to ΦᵀΦ/n; with k above the fit examples the kernel is singular and the
    pseudo-inverse keeps the scores finite."""
    with jax.enable_x64():
        model, params, x, y = _problem()
        task = classification_task(model)
        batches = [(x[:10], y[:10])]
        state = Trak(k=40, progress=False).fit(task, params, batches, jax.random.key(0))
        values = np.asarray(state.members[0].eigvals)
        assert (np.abs(values[10:]) < 1e-10 * values[0]).all()  # rank 10
        assert np.isfinite(Trak(k=40).self_influence(state, (x, y))).all()
        damped = Trak(k=40, damping=0.5, progress=False).fit(
            task, params, batches, jax.random.key(0)
        )
        np.testing.assert_allclose(np.asarray(damped.members[0].eigvals)[10:], 0.5, rtol=1e-8)


def test_training_dynamics_baselines_are_means_over_the_checkpoints():
    with jax.enable_x64():
        model, params, x, y = _problem()
        task = classification_task(model)
        scales = [0.2, 0.5, 0.8, 1.0, 1.3]
        stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a * s for s in scales]), params)
        kept = Checkpoints(stacked, np.ones(5))
        batch = (x[:30], y[:30])

        def at(s, fn):
            return np.asarray(
                fn(
                    model.apply(
                        {"params": jax.tree_util.tree_map(lambda a: a * s, params)}, x[:30]
                    ),
                    y[:30],
                )
            )

        loss = CheckpointLoss(checkpoints=None)
        got = loss.self_influence(loss.fit(task, params, [], None, kept), batch)
        np.testing.assert_allclose(
            got, np.mean([at(s, cross_entropy) for s in scales], 0), rtol=1e-12
        )
        aum = AreaUnderMargin(
            checkpoints=3
        )  # 3 evenly spaced, ending with the last: the 2nd, 3rd and 5th
        got = aum.self_influence(aum.fit(task, params, [], None, kept), batch)
        expected = -np.mean([at(s, logit_margin) for s in (0.5, 0.8, 1.3)], 0)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        with pytest.raises(ConfigError, match="per-example score"):
            aum.influence(None, batch, batch)


@pytest.mark.parametrize(
    ("method", "options", "train", "key"),
    [
        ("trak", {"k": 0}, {}, "method.k"),
        ("trak", {"damping": -1.0}, {}, "method.damping"),
        ("trak", {"projection": "sparse"}, {}, "method.projection"),
        ("trak", {"models": 5}, {"kept_checkpoints": 4}, "train.kept_checkpoints"),
        ("trak", {"retrain_fraction": 0.0}, {}, "method.retrain_fraction"),
        ("checkpoint_loss", {"checkpoints": 1}, {}, "method.checkpoints"),
        ("aum", {}, {"kept_checkpoints": 1}, "train.kept_checkpoints"),
        ("tracin", {"checkpoints": 7}, {"kept_checkpoints": 4}, "train.kept_checkpoints"),
    ],
)
def test_bad_settings_are_refused_before_training(tabular_kind, method, options, train, key):  # noqa: F811
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as refused:
        cfg = RunConfig(
            dataset=BlobsConfig(),
            model=ModelConfig(name="mlp"),
            train=TrainConfig(**({"kept_checkpoints": 4} | train)),
            method=method_config(method, **options),
        )
        validate(cfg)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("trak", {"k": 16}),
        ("trak", {"k": 16, "models": 3}),
        ("checkpoint_loss", {}),
        ("aum", {}),
    ],
)
def test_new_methods_run_through_the_pipeline(tabular_kind, tmp_path, name, options):  # noqa: F811
    cfg = RunConfig(
        dataset=BlobsConfig(),
        model=ModelConfig(name="mlp"),
        noise=NoiseConfig(kind="mislabel", rate=0.1),
        train=TrainConfig(epochs=30, batch_size=40, learning_rate=0.1, kept_checkpoints=4),
        method=method_config(name, fit_batch_size=40, fit_batches=2, **options),
        progress=False,
    )
    cfg.paths.cache_dir = str(tmp_path / "cache")
    metrics = ifscale.run.pipeline.run(cfg, tmp_path / "run")
    assert metrics["method"] == name and metrics["n_scored"] == 240
    assert metrics["auc"] > 0.8  # flipped labels on separable blobs


def test_self_influence_scores_stream_trak():
    with jax.enable_x64():
        model, params, x, y = _problem()
        method = Trak(k=12, progress=False)
        state = method.fit(classification_task(model), params, [(x, y)], jax.random.key(0))
        streamed = self_influence_scores(method, state, (x, y), batch_size=50, progress=False)
        np.testing.assert_allclose(
            streamed.scores, method.self_influence(state, (x, y)), rtol=1e-10
        )


def test_ensemble_subsets_depend_on_the_model_alone():
    """Model j of a retrained ensemble sees the same examples (and seed) whichever models
    are asked for at once, so a larger ensemble reuses a smaller one's models."""
    from ifscale.run.ensemble import ensemble_seeds, ensemble_subsets

    cfg = RunConfig(seed=3)
    every = ensemble_subsets(cfg, 40, 0.5, np.arange(5))
    assert every.shape == (5, 20) and all(len(set(row)) == 20 for row in every)
    assert (np.diff(every, axis=1) > 0).all()  # sorted, no repeats
    np.testing.assert_array_equal(ensemble_subsets(cfg, 40, 0.5, np.array([3])), every[3:4])
    assert not np.array_equal(every[0], every[1])
    np.testing.assert_array_equal(ensemble_subsets(cfg, 40, 1.0, np.arange(2)), [np.arange(40)] * 2)
    assert len(set(ensemble_seeds(cfg, np.arange(5)))) == 5
    assert 3 not in ensemble_seeds(cfg, np.arange(5))  # never the run's own seed


@pytest.mark.parametrize("name", ["trak", "aum", "el2n"])
def test_methods_for_classifiers_are_refused_on_translation_before_training(name):
    from experiments import cli

    with pytest.raises(ConfigError, match="defined for classifiers") as refused:
        cli.compose_run(["dataset=wmt17", "model=transformer_tiny", f"method={name}"])
    assert str(refused.value).startswith("method.name:") and "\n" not in str(refused.value)
