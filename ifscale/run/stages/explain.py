"""`stage=explain`: the training examples that support and oppose chosen test predictions.

The test examples are `explain.test_indices`, or `explain.count` chosen by `explain.select`
(misclassified, highest loss, random). Every training example is scored against all of them
in one streamed pass (`ifscale.influence.top_influences`), keeping the top `explain.top_k`
proponents (I > 0: removing them would raise the test loss) and opponents (I < 0) of each.
The fit is the same stored fit as self-influence; the same run times self-influence on
`explain.compare_examples` training examples, for the cost ratio of the two.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from ifscale.cache.atomic import write_text
from ifscale.config import RunConfig
from ifscale.influence import self_influence_scores, top_influences
from ifscale.run.compose import method_of
from ifscale.run.context import Prepared
from ifscale.run.fitting import fit_method
from ifscale.run.mesh import run_mesh
from ifscale.run.metrics import ExplainMetrics, ScoreMetrics
from ifscale.run.stages.result import StageResult
from ifscale.run.views import image_explanations, text_explanations
from ifscale.utils import check, stream_rng

log = logging.getLogger(__name__)


def test_losses(task, params, batch_of, m: int, batch_size: int = 500) -> np.ndarray:
    """[m] per-example losses of the test examples (`batch_of(index)` their batch)."""
    loss = jax.jit(task.loss)
    parts = [
        np.asarray(loss(params, batch_of(np.arange(i, min(i + batch_size, m)))), np.float64)
        for i in range(0, m, batch_size)
    ]
    return np.concatenate(parts)


def choose_test_examples(cfg: RunConfig, prep: Prepared, task) -> np.ndarray:
    """Positions in the test split of the examples to explain (see `ExplainConfig`)."""
    e = cfg.explain
    domain, data, params = prep.domain, prep.data, prep.trained.params
    m = domain.n_test(data)
    if e.test_indices is not None:
        return np.asarray(e.test_indices)  # in range: `check_explain_request`
    count = e.count  # <= m: `check_explain_request`
    if e.select == "random":
        return np.sort(stream_rng(cfg.seed, "explain").choice(m, count, replace=False))
    losses = test_losses(task, params, lambda i: domain.test_batch(data, i), m)
    candidates = np.arange(m)
    if e.select == "misclassified":
        correct = domain.correct(prep.model, params, data)
        check(
            correct is not None,
            "explain.select",
            f"{domain.name} data have no single right answer: use highest_loss or random",
        )
        candidates = np.flatnonzero(~correct)
        check(len(candidates) > 0, "explain.select", "the model misclassifies no test example")
        if len(candidates) < count:
            log.warning("only %d misclassified test examples: explaining all", len(candidates))
    order = candidates[np.argsort(-losses[candidates], kind="stable")]
    return order[:count]


def explained_batch(cfg: RunConfig, prep: Prepared, test_index: np.ndarray):
    """The test examples as explained: with their label, or (`explain.target=prediction`)
    with the trained model's prediction in its place."""
    domain, data = prep.domain, prep.data
    if cfg.explain.target == "label":
        return domain.test_batch(data, test_index)
    batch = domain.predicted_batch(prep.model, prep.trained.params, data, test_index)
    check(
        batch is not None,
        "explain.target",
        f"{domain.name} data have no single prediction to explain: use explain.target=label",
    )
    return batch


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    """Fits the method (or reuses the stored fit), explains the chosen test examples and
    returns the records, the `explanations.csv` table and its view (a figure of images, or
    a Markdown table of text)."""
    domain, data = prep.domain, prep.data
    method = method_of(cfg)
    task = domain.task(prep.model, cfg)
    state, t_fit, hit = fit_method(cfg, prep, method, task)
    test_index = choose_test_examples(cfg, prep, task)
    n = data.n_train
    mesh = run_mesh(cfg)
    train = data.train_batch(np.arange(n))
    top = top_influences(
        method,
        state,
        train,
        explained_batch(cfg, prep, test_index),
        k=cfg.explain.top_k,
        batch_size=cfg.score.batch_size,
        progress=cfg.progress,
        mesh=mesh,
    )
    compare = data.train_batch(np.arange(min(n, cfg.explain.compare_examples)))
    reference = self_influence_scores(
        method, state, compare, cfg.score.batch_size, progress=False, mesh=mesh
    )
    record = ExplainMetrics(
        explain_test_indices=test_index.tolist(),
        explain_select=None if cfg.explain.test_indices is not None else cfg.explain.select,
        explain_top_k=cfg.explain.top_k,
        explain_target=cfg.explain.target,
        explain_seconds=top.seconds,
        explain_examples_per_s=top.examples_per_s,
        self_influence_examples_per_s=reference.examples_per_s,
        explain_cost_ratio=reference.examples_per_s / top.examples_per_s,
    )
    log.info(
        "explained %d test examples with %s: %.0f training examples/s (self-influence %.0f/s, "
        "cost ratio %.2f)",
        len(test_index),
        method.name,
        top.examples_per_s,
        reference.examples_per_s,
        record.explain_cost_ratio,
    )
    table = explanation_table(prep, test_index, top)
    fitted = ScoreMetrics(t_fit_s=t_fit, fit_cache_hit=hit, pbar=cfg.method.pbar)
    return StageResult((fitted, record), {"explanations.csv": table}, _views(prep, table))


def _views(prep: Prepared, table: pd.DataFrame):
    """Writes the readable view of `table`: a figure where the domain's examples are
    pictures, else a Markdown table."""
    domain, data = prep.domain, prep.data

    def write(folder: Path) -> list[str]:
        tests = table["test_index"].drop_duplicates().to_numpy()
        pictures = domain.pictures(data, "test", tests)
        if pictures is None:
            write_text(folder / "explanations.md", text_explanations(table))
            return ["explanations.md"]
        train = table["train_example"].drop_duplicates().to_numpy()
        image_explanations(
            table,
            dict(zip(tests.tolist(), pictures, strict=True)),
            dict(zip(train.tolist(), domain.pictures(data, "train", train), strict=True)),
            folder / "explanations.png",
        )
        return ["explanations.png"]

    return write


def explanation_table(prep: Prepared, test_index: np.ndarray, top) -> pd.DataFrame:
    """One row per (test example, kind, rank): the test example, the training example and
    its influence, with the columns that describe both."""
    domain, data, params = prep.domain, prep.data, prep.trained.params
    described = pd.DataFrame(domain.test_columns(prep.model, params, data, test_index))
    parts = []
    for row, z in enumerate(test_index):
        for which, positions, scores in (
            ("proponent", top.proponents, top.proponent_scores),
            ("opponent", top.opponents, top.opponent_scores),
        ):
            train = positions[row]
            part = pd.DataFrame(
                {
                    "test_index": z,
                    **{c: described[c].iloc[row] for c in described.columns},
                    "kind": which,
                    "rank": np.arange(1, len(train) + 1),
                    "train_example": train,
                    "source_index": data.train_index[train],
                    "influence": scores[row],
                    **domain.score_columns(data, train),
                    "is_noisy": data.is_noisy[train],
                }
            )
            parts.append(part)
    return pd.concat(parts, ignore_index=True)  # per test example (in the order chosen)
