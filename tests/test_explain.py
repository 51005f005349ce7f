"""Explaining predictions: streamed top-k proponents and opponents (`top_influences`)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ifscale.influence import Checkpoints, Exact, top_influences
from ifscale.influence.pairwise import RunningTop
from ifscale.utils import ConfigError
from tests.influence_fixtures import logistic_problem, mlp_problem, newton_fit
from tests.test_influence import KEY, all_methods

jax.config.update("jax_enable_x64", True)
METHODS = ["exact", "arnoldi", "randproj", "lissa", "tracin", "trak", "trak_ensemble"]


def _fitted(name):
    task, params, data = mlp_problem()
    method = all_methods(43)[name]
    ckpt = Checkpoints(jax.tree_util.tree_map(lambda a: 0.9 * a[None], params), np.array([0.1]))
    return method, method.fit(task, params, [data], KEY, ckpt), data


@pytest.mark.parametrize("name", METHODS)
def test_streamed_top_k_is_the_top_k_of_the_dense_influence_matrix(name):
    method, state, train = _fitted(name)
    _, _, test = mlp_problem(n=6, seed=1)
    dense = np.asarray(method.influence(state, train, test))  # [6, 48]
    k = 7
    order_high = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    order_low = np.argsort(dense, axis=1, kind="stable")[:, :k]
    for batch_size in (5, 16, 48):
        top = top_influences(method, state, train, test, k=k, batch_size=batch_size, progress=False)
        np.testing.assert_array_equal(top.proponents, order_high)
        np.testing.assert_array_equal(top.opponents, order_low)
        np.testing.assert_allclose(
            top.proponent_scores, np.take_along_axis(dense, order_high, 1), rtol=1e-9
        )
        np.testing.assert_allclose(
            top.opponent_scores, np.take_along_axis(dense, order_low, 1), rtol=1e-9
        )
        assert top.n_train == 48 and top.seconds > 0


@pytest.mark.parametrize("name", METHODS)
def test_the_test_side_once_equals_influence_pairs(name):
    """`influence_on` with a precomputed test side is `influence` (one definition)."""
    method, state, train = _fitted(name)
    _, _, test = mlp_problem(n=4, seed=2)
    side = method.test_side(state, test)
    np.testing.assert_allclose(
        np.asarray(method.influence_on(state, train, side)),
        np.asarray(method.influence(state, train, test)),
        rtol=1e-12,
    )


def test_proponents_raise_and_opponents_lower_the_test_loss_when_removed():
    """The sign convention, against leave-one-out retraining of a convex model: removing the
    top proponent raises L(z), removing the top opponent lowers it, by about I/n."""
    task, params, data = logistic_problem(n=200, d=8, l2=0.01)
    x, y = data
    rng = np.random.default_rng(5)
    test = (rng.normal(size=(1, 8)), np.array([1.0]))
    exact = Exact()
    top = top_influences(
        exact, exact.fit(task, params, [data], KEY), data, test, k=3, progress=False
    )
    base = float(task.loss(params, test)[0])
    for position, score in (
        (top.proponents[0, 0], top.proponent_scores[0, 0]),
        (top.opponents[0, 0], top.opponent_scores[0, 0]),
    ):
        weights = np.ones(len(y))
        weights[position] = 0.0
        change = float(task.loss(newton_fit(task, x, y, weights, iters=8), test)[0]) - base
        assert np.sign(change) == np.sign(score)
        assert change == pytest.approx(score / len(y), rel=0.3)


def test_tracin_sign_agrees_a_step_on_a_proponent_lowers_the_test_loss():
    """TracIn [1] = η<∇L(z), ∇L(x)>: one small gradient step on a proponent x lowers L(z),
    on an opponent raises it (the sign convention of influence functions)."""
    task, params, train = mlp_problem()
    method, state, _ = _fitted("tracin")
    _, _, test = mlp_problem(n=1, seed=1)
    top = top_influences(method, state, train, test, k=1, progress=False)
    view = state.view
    for position, sign in ((top.proponents[0, 0], -1), (top.opponents[0, 0], 1)):
        one = jax.tree_util.tree_map(lambda a, i=position: a[i : i + 1], train)
        step = jax.grad(lambda t, one=one: view.losses(t, one).sum())(view.theta)
        after = view.losses(view.theta - 1e-4 * step, test)[0]
        assert np.sign(float(after - view.losses(view.theta, test)[0])) == sign


def test_running_top_breaks_ties_by_position():
    top = RunningTop(1, 2)
    top.add(np.array([[1.0, 3.0]]), np.array([0, 1]))
    top.add(np.array([[3.0, 1.0]]), np.array([2, 3]))
    np.testing.assert_array_equal(top.high[1], [[1, 2]])
    np.testing.assert_array_equal(top.low[1], [[0, 3]])


def test_bad_requests_name_the_key():
    method, state, train = _fitted("arnoldi")
    with pytest.raises(ConfigError, match="explain.top_k"):
        top_influences(method, state, train, train, k=49, progress=False)
    from ifscale.influence import LossBaseline

    loss = LossBaseline()
    with pytest.raises(ConfigError, match="method.name"):
        top_influences(loss, None, train, train, k=3, progress=False)


# ---------------------------------------------------------------- the explain stage


def test_stage_explain_writes_the_top_examples_of_each_test_prediction(tmp_path):
    """`stage=explain` end to end on a tiny image set: explanations.csv (k proponents and k
    opponents per test example, in the order chosen), the figure and the metrics."""
    import json

    import pandas as pd

    import ifscale.run.pipeline
    from experiments import cli
    from tests.bad_inputs import good_image_run, make_inputs

    make_inputs(tmp_path / "in")
    cfg = cli.compose_run(
        good_image_run(
            tmp_path / "in",
            tmp_path / "cache",
            "method=arnoldi",
            "method.n=12",
            "method.pbar=6",
            "method.fit_batch_size=8",
            "method.fit_batches=2",
            "stage=explain",
            "explain.select=highest_loss",
            "explain.count=3",
            "explain.top_k=4",
            "progress=false",
        )
    )
    metrics = ifscale.run.pipeline.run(cfg, tmp_path / "run")
    table = pd.read_csv(tmp_path / "run" / "explanations.csv")
    assert len(table) == 3 * 2 * 4
    assert list(dict.fromkeys(table.test_index)) == metrics["explain_test_indices"]
    for _, rows in table.groupby(["test_index", "kind"]):
        assert rows["rank"].tolist() == [1, 2, 3, 4]
    pro = table[table.kind == "proponent"]
    opp = table[table.kind == "opponent"]
    assert (pro.groupby("test_index").influence.apply(lambda s: s.is_monotonic_decreasing)).all()
    assert (opp.groupby("test_index").influence.apply(lambda s: s.is_monotonic_increasing)).all()
    assert {"test_label", "test_prediction", "label", "clean_label", "is_noisy"} <= set(table)
    assert (tmp_path / "run" / "explanations.png").stat().st_size > 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["stage"] == "explain" and saved["explain_target"] == "prediction"
    assert saved["explain_examples_per_s"] > 0 and saved["explain_cost_ratio"] > 0
