"""The linear datamodeling score: its arithmetic against hand-computed cases and a planted
model whose output is exactly additive, many models trained at once against one at a
time, attributions that measure another function than the loss, and `stage=lds` end to
end (ground truth stored, reused by every method, resumed)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

import ifscale.run.pipeline
from experiments import cli
from ifscale.config import TrainConfig
from ifscale.influence import Exact, ParamView
from ifscale.influence.lds import lds_interval, spearman_rows, subset_predictions
from ifscale.influence.task import Task
from ifscale.retraining import train_many
from ifscale.train import train_loop
from ifscale.utils import stream_key
from tests.bad_inputs import good_image_run, make_inputs
from tests.influence_fixtures import logistic_loss, logistic_problem


def test_spearman_rows_is_scipys_spearman_row_by_row():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (6, 30)).astype(float)  # ties
    b = rng.normal(size=(6, 30)) + 0.3 * a
    expected = [spearmanr(x, y).correlation for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(spearman_rows(a, b), expected, rtol=1e-12)
    assert np.isnan(spearman_rows(np.ones((1, 5)), b[:1, :5]))[0]  # a constant row


def test_lds_of_a_hand_computed_case():
    # Two test examples, three subsets of four training examples.
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], bool)
    tau = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    predicted = subset_predictions(tau, masks)
    np.testing.assert_array_equal(predicted, [[3, 5, 7], [7, 5, 3]])
    truth = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])  # both rise with the subset
    rho = spearman_rows(predicted, truth)
    np.testing.assert_allclose(rho, [1.0, -1.0])
    mean, low, high = lds_interval(rho, resamples=0)
    assert mean == 0.0 and np.isnan(low) and np.isnan(high)


def test_a_planted_additive_output_scores_one_and_random_attributions_zero():
    """Outputs exactly additive over the included training examples: the true
    attribution's LDS is 1, a random attribution's about 0."""
    rng = np.random.default_rng(1)
    m, n, M = 200, 300, 100
    weights = rng.normal(size=(m, n))  # the effect of training example i on test example z
    masks = rng.random((M, n)) < 0.5
    truth = subset_predictions(weights, masks) + 3.0  # an additive model plus a constant
    exact = lds_interval(spearman_rows(subset_predictions(weights, masks), truth))
    assert exact[0] == pytest.approx(1.0)
    random = spearman_rows(subset_predictions(rng.normal(size=(m, n)), masks), truth)
    mean, low, high = lds_interval(random, resamples=500)
    assert abs(mean) < 0.03 and low < 0 < high  # the interval covers 0
    noisy = spearman_rows(subset_predictions(weights + rng.normal(size=(m, n)), masks), truth)
    assert 0.3 < lds_interval(noisy)[0] < 0.95  # partly right attributions: in between


@pytest.mark.parametrize("parallel", [1, 2])  # 1: steps dispatched one by one, no scan
def test_many_models_at_once_train_as_one_at_a_time(parallel):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = rng.integers(0, 3, 96).astype(np.int32)

    def init(key):
        return {"w": 0.1 * jax.random.normal(key, (6, 3)), "b": jnp.zeros(3)}

    def loss(params, batch, key):  # with dropout on the inputs: the keys must match too
        kept = jax.random.bernoulli(key, 0.8, batch[0].shape)
        logits = (batch[0] * kept / 0.8) @ params["w"] + params["b"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch[1][:, None], 1))

    cfg = TrainConfig(learning_rate=0.1, momentum=0.9, batch_size=8, epochs=3, kept_checkpoints=1)
    subsets = np.stack([np.sort(rng.choice(96, 48, replace=False)) for _ in range(5)])
    seeds = [11, 12, 13, 14, 15]
    got = {}

    def keep(models, params):
        for i, j in enumerate(models):
            got[int(j)] = jax.tree_util.tree_map(lambda a, i=i: a[i], params)

    info = train_many(
        init, loss, (x, y), subsets, seeds, cfg, parallel, progress=False, on_group=keep
    )
    assert info["models"] == 5 and sorted(got) == [0, 1, 2, 3, 4]  # the last group padded
    for j in range(5):
        alone = train_loop(
            init(stream_key(seeds[j], "init")),
            loss,
            (x[subsets[j]], y[subsets[j]]),
            cfg,
            seeds[j],
            progress=False,
        )
        for a, b in zip(
            jax.tree_util.tree_leaves(alone.params),
            jax.tree_util.tree_leaves(got[j]),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_attributions_measure_another_function_than_the_loss():
    """`measuring`: ⟨∇h(z), H⁻¹ ∇L(x)⟩ with h the measurement, against the dense
    computation in float64 (here h = minus the logit, a margin of a binary classifier)."""
    with jax.enable_x64():
        task, params, (x, y) = logistic_problem(n=60, d=4)
        view = ParamView.create(task, params)
        method = Exact(progress=False)
        state = method.fit(task, params, [(x, y)], jax.random.key(0))

        def measure(params, batch):
            return -(batch[0] @ params["w"] + params["b"]) * (2 * batch[1] - 1)

        measured = method.measuring(state, Task(measure))
        got = np.asarray(method.influence(measured, (x[:7], y[:7]), (x[7:10], y[7:10])))

        theta = view.theta
        hessian = jax.hessian(lambda t: view.objective(t, (x, y)))(theta)
        grads_train = jax.vmap(jax.grad(view.example_loss), in_axes=(None, 0))(
            theta, (x[:7], y[:7])
        )
        probe = ParamView.create(Task(measure, l2=task.l2), params)
        grads_test = jax.vmap(jax.grad(probe.example_loss), in_axes=(None, 0))(
            theta, (x[7:10], y[7:10])
        )
        expected = grads_test @ np.linalg.solve(hessian, grads_train.T)
        np.testing.assert_allclose(got, expected, rtol=1e-8)
        # The training-loss influence is unchanged by a measurement of the loss itself.
        same = method.measuring(state, Task(logistic_loss))
        np.testing.assert_allclose(
            np.asarray(method.influence(same, (x[:7], y[:7]), (x[7:10], y[7:10]))),
            np.asarray(method.influence(state, (x[:7], y[:7]), (x[7:10], y[7:10]))),
            rtol=1e-12,
        )


def _lds_run(inputs, cache, *extra):
    return cli.compose_run(
        good_image_run(
            inputs,
            cache,
            "model=logreg",
            "noise=none",
            "train.batch_size=8",
            "train.epochs=3",
            "train.kept_checkpoints=2",
            "lds.subsets=6",
            "lds.test_examples=12",
            "lds.validation_examples=4",
            "lds.chunk=2",
            "lds.parallel=4",
            "lds.bootstrap=100",
            "method.fit_batch_size=8",
            "method.fit_batches=5",
            "progress=false",
            *extra,
        )
    )


def test_sharded_retraining_stores_the_same_ground_truth(tmp_path):
    """Shard jobs (`score.shards`, as a launcher's multirun runs them) train disjoint chunks;
    together they store what one job stores, and stage=lds then trains nothing."""
    make_inputs(tmp_path / "in")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    ifscale.run.pipeline.run(_lds_run(tmp_path / "in", whole, "stage=retrain"), tmp_path / "w")
    trained = [
        ifscale.run.pipeline.run(
            _lds_run(tmp_path / "in", parts, "stage=retrain", "score.shards=3", f"score.shard={k}"),
            tmp_path / f"s{k}",
        )["retrained_models"]
        for k in range(3)
    ]
    assert trained == [2, 2, 2]
    for a, b in zip(
        sorted((whole / "retrained").rglob("chunk-*.npz")),
        sorted((parts / "retrained").rglob("chunk-*.npz")),
        strict=True,
    ):
        with np.load(a) as x, np.load(b) as y:
            np.testing.assert_array_equal(x["scores"], y["scores"])
    scored = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", parts, "stage=lds", "method=graddot"), tmp_path / "lds"
    )
    assert scored["retrained_models"] == 0 and scored["retrain_chunks_reused"] == 3


def test_stage_lds_end_to_end_stores_and_reuses_its_ground_truth(tmp_path):
    make_inputs(tmp_path / "in")
    cache = tmp_path / "cache"
    truth = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", cache, "stage=retrain", "lds.sequential=2"), tmp_path / "t"
    )
    assert truth["retrained_models"] == 6 and truth["retrain_chunks"] == 3
    assert truth["sequential_models"] == 2 and truth["sequential_max_output_gap"] < 1e-4
    exact = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", cache, "stage=lds", "method=exact", "method.damping=0.01"),
        tmp_path / "exact",
    )
    assert exact["retrained_models"] == 0 and exact["retrain_chunks_reused"] == 3
    assert -1 <= exact["lds"] <= 1 and exact["lds_low"] <= exact["lds"] <= exact["lds_high"]
    assert exact["lds_examples"] == 12 and exact["lds_validation_examples"] == 4
    rows = (tmp_path / "exact" / "lds_examples.csv").read_text().splitlines()
    assert len(rows) == 1 + 16 and rows[0] == "test_index,split,rho"
    # A lost chunk is trained again (and only it), with the same outputs.
    stored = sorted((cache / "retrained").rglob("chunk-*.npz"))
    with np.load(stored[1]) as f:
        before = f["scores"]
    stored[1].unlink()
    again = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", cache, "stage=lds", "method=graddot"), tmp_path / "dot"
    )
    assert again["retrained_models"] == 2 and again["retrain_chunks_reused"] == 2
    with np.load(stored[1]) as f:
        np.testing.assert_array_equal(f["scores"], before)  # bit for bit
    recorded = json.loads((tmp_path / "dot" / "metrics.json").read_text())
    assert recorded["stage"] == "lds" and recorded["lds_output"] == "margin"
    # A grid: every damping scored, the best on validation reported with the whole grid.
    grid = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", cache, "stage=lds", "method=exact", "+lds.grid.damping=[0.01,1]"),
        tmp_path / "grid",
    )
    assert [p["damping"] for p in grid["lds_grid"]] == [0.01, 1.0]
    best = max(grid["lds_grid"], key=lambda p: p["validation"])
    assert grid["lds_choice"] == {"damping": best["damping"]}
    assert grid["lds"] == pytest.approx(best["test"]) and grid["fit_cache_hit"]
    # K = 2 seeds per subset: another ground truth, and the LDS from 1 and from 2 seeds.
    seeds = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", cache, "stage=lds", "method=graddot", "lds.seeds=2"),
        tmp_path / "seeds",
    )
    assert seeds["retrained_models"] == 12 and len(seeds["lds_by_seeds"]) == 2
    assert seeds["lds_by_seeds"][-1] == pytest.approx(seeds["lds"])


def test_trak_ensemble_of_retrained_models_is_stored_sharded_and_reused(tmp_path):
    """TRAK with method.ensemble=retrained: stage=retrain trains each shard's models of the
    ensemble; the LDS stage reads them (nothing trained again); a larger ensemble trains
    only the models it adds; the models differ from the trained one."""
    make_inputs(tmp_path / "in")
    cache = tmp_path / "cache"
    trak = ("method=trak", "method.k=8", "method.ensemble=retrained", "method.models=3")
    for shard in (0, 1):
        ifscale.run.pipeline.run(
            _lds_run(
                tmp_path / "in",
                cache,
                "stage=retrain",
                *trak,
                "score.shards=2",
                f"score.shard={shard}",
            ),
            tmp_path / f"shard{shard}",
        )
    stored = sorted((cache / "ensembles").rglob("chunk-*.npz"))
    assert len(stored) == 2  # models 0 and 1 of the 2 beside the trained one
    first = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", cache, "stage=lds", *trak), tmp_path / "three"
    )
    assert -1 <= first["lds"] <= 1 and first["retrained_models"] == 0
    times = [p.stat().st_mtime_ns for p in stored]
    bigger = ifscale.run.pipeline.run(
        _lds_run(tmp_path / "in", cache, "stage=lds", *trak[:-1], "method.models=4"),
        tmp_path / "four",
    )
    assert len(sorted((cache / "ensembles").rglob("chunk-*.npz"))) == 3
    assert [p.stat().st_mtime_ns for p in stored] == times  # reused, not trained again
    assert bigger["lds"] != first["lds"]
    with np.load(stored[0]) as a, np.load(stored[1]) as b:
        assert not np.array_equal(a["scores"], b["scores"])  # other seeds, other models


@pytest.mark.parametrize(
    "override, key",
    [
        ("lds.fraction=1.5", "lds.fraction"),
        ("lds.fraction=0", "lds.fraction"),
        ("lds.subsets=1", "lds.subsets"),
        ("lds.seeds=0", "lds.seeds"),
        ("lds.output=accuracy", "lds.output"),
        ("lds.test_examples=30", "lds.test_examples"),  # the tiny test split has 20
        ("lds.fraction=0.01", "lds.fraction"),  # no example in a subset of 40
    ],
)
def test_bad_lds_settings_are_refused_before_training(override, key, tmp_path):
    make_inputs(tmp_path / "in")
    with pytest.raises(ifscale.utils.ConfigError) as refused:
        cfg = _lds_run(tmp_path / "in", tmp_path / "cache", "stage=lds", "method=graddot", override)
        ifscale.run.context.check_inputs(cfg)
    assert key in str(refused.value) and len(str(refused.value).splitlines()) == 1
    assert not (tmp_path / "cache" / "trained").exists()
