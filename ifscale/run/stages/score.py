"""`stage=score` (and `all`): the method's self-influence on the training set, scored chunk
by chunk into the score store (`ifscale.cache.chunks`), gathered and judged against the
planted noise (AUC, AP); one shard of it with `score.shards` > 1.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ifscale.cache.chunks import ChunkPlan, ChunkStore
from ifscale.cache.keys import SCORES_VERSION, score_keys
from ifscale.config import RunConfig
from ifscale.distributed import barrier, localize
from ifscale.influence import InfluenceMethod
from ifscale.influence.scoring import prepared_scorer, stream_chunks
from ifscale.influence.task import ParamView
from ifscale.run.compose import method_of
from ifscale.run.context import Prepared, scored_subset
from ifscale.run.fitting import fit_method
from ifscale.run.mesh import scoring_mesh
from ifscale.run.metrics import ScoreMetrics
from ifscale.run.stages.result import StageResult
from ifscale.utils import check, config_hash

log = logging.getLogger(__name__)


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    """Fits (or reuses the stored fit), scores this job's chunks, and, when every chunk is
    there (one shard, or `stage=merge`), gathers and judges them."""
    record, scores = score(cfg, prep, gather_only=cfg.stage == "merge")
    if scores is None:
        log.info(
            "shard %d of %d: %d chunks scored, %d reused; merge with experiments/merge.py",
            cfg.score.shard,
            cfg.score.shards,
            record.chunks_scored,
            record.chunks_reused,
        )
        return StageResult((record,))
    log.info(
        "%s: AUC %.4f, AP %.4f over %d examples (fit %.1fs, score %.1fs, %.0f ex/s)",
        cfg.method.name,
        record.auc or float("nan"),
        record.ap or float("nan"),
        record.n_scored,
        record.t_fit_s,
        record.t_score_s,
        record.examples_per_s,
    )
    return StageResult((record,), {"scores.csv": scores})


def detection_metrics(is_noisy: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """AUC and AP of finding the noisy examples by ranking on `scores` (None when only one
    class is present)."""
    both = 0 < is_noisy.sum() < len(is_noisy)
    return {
        "auc": float(roc_auc_score(is_noisy, scores)) if both else None,
        "ap": float(average_precision_score(is_noisy, scores)) if both else None,
    }


def score_store(cfg: RunConfig, prep: Prepared, index: np.ndarray) -> ChunkStore:
    """Where the scores of `index` under `cfg.method` are stored, chunk by chunk: keyed by
    what determines them (trained model, every method option, the scored examples)."""
    method = cfg.to_dict()["method"]  # every option, p̄ included
    method_key, data_key = score_keys(cfg, config_hash(prep.train_key), method, index)
    plan = ChunkPlan(len(index), cfg.score.chunk)
    return ChunkStore(cfg.paths.cache_dir, SCORES_VERSION, method_key, data_key, plan).open()


def score_chunks(
    cfg: RunConfig,
    prep: Prepared,
    method: InfluenceMethod,
    state,
    index: np.ndarray,
    store: ChunkStore,
) -> dict[str, int]:
    """Scores this job's unfinished chunks of `index` (its shard's, and within a
    multi-process job this process's share of them), storing each as it is done."""
    plan = store.plan
    shards = cfg.score.shards
    check(
        shards <= plan.count,
        "score.shards",
        f"{shards} shards of {plan.count} chunks ({plan.n} examples, score.chunk="
        f"{plan.chunk}): lower score.chunk or score.shards",
    )
    shard = plan.shard(cfg.score.shard, shards)
    mine = list(shard)[jax.process_index() :: jax.process_count()]
    done = store.done(mine)  # each stored chunk read and checked once
    todo = [j for j in mine if j not in done]
    where = f"shard {cfg.score.shard} of {shards}: " if shards > 1 else ""
    log.info(
        "%s%d of %d chunks already scored (reused), %d to score (%s)",
        where,
        len(mine) - len(todo),
        len(mine),
        len(todo),
        store.folder,
    )
    if todo:
        mesh = scoring_mesh(cfg, jax.process_count())
        if jax.process_count() > 1:  # no collectives while scoring: this process's devices
            state = localize(state, mesh)
        spans = [plan.span(j) for j in todo]

        def fetch(positions: np.ndarray):
            return prep.data.train_batch(index[positions])

        start = spans[0][0]
        sample = fetch(np.arange(start, min(spans[0][1], start + cfg.score.batch_size)))
        recorded = store.choices()
        scorer, made = prepared_scorer(method, state, sample, mesh, recorded)
        if recorded is None and store.record_choices(made) != made:
            # Another job of this scoring chose first (e.g. another route): choose as it did.
            scorer, _ = prepared_scorer(method, state, sample, mesh, store.choices())
        stream_chunks(
            scorer,
            fetch,
            spans,
            lambda i, scores, seconds, compiled: store.save(todo[i], scores, seconds, compiled),
            batch_size=cfg.score.batch_size,
            progress=cfg.progress,
            desc=f"{method.name} self-influence",
            mesh=mesh,
        )
    barrier("ifscale-scored")
    return {
        "chunks": plan.count,
        "chunks_reused": len(mine) - len(todo),
        "chunks_scored": len(todo),
    }


def score(
    cfg: RunConfig, prep: Prepared, index: np.ndarray | None = None, gather_only: bool = False
) -> tuple[ScoreMetrics, pd.DataFrame | None]:
    """Fits the method (or reuses the stored fit), scores the training set (`index`,
    default `scored_subset`) chunk by chunk into its `ChunkStore`, and evaluates the
    gathered scores against `is_noisy`.

    With `score.shards` > 1 only this job's shard is scored and its record (no scores
    table) is returned; with `gather_only` nothing is scored: the stored chunks are gathered
    (IncompleteScores names missing shards).
    """
    method = method_of(cfg)
    task = prep.domain.task(prep.model, cfg)
    data = prep.data
    state, t_fit, hit = fit_method(cfg, prep, method, task)
    index = scored_subset(cfg, prep) if index is None else index
    store = score_store(cfg, prep, index)
    counts = {"chunks": store.plan.count, "chunks_reused": store.plan.count, "chunks_scored": 0}
    if not gather_only:
        counts = score_chunks(cfg, prep, method, state, index, store)
    fitted = dict(
        t_fit_s=t_fit,
        fit_cache_hit=hit,
        pbar=cfg.method.pbar,
        fit_batch_size=cfg.method.fit_batch_size,
        fit_batches=cfg.method.fit_batches,
        n_perturbed_params=ParamView.count(task, prep.trained.params),
        shards=cfg.score.shards,
        **counts,
    )
    # The method's numbers win: e.g. K-FAC's count of the parameters it factors.
    fitted.update(method.fitted_metrics(state))
    if not gather_only and cfg.score.shards > 1:
        return ScoreMetrics(**fitted, shard=cfg.score.shard, n_scored=len(index)), None

    scores, chunks = store.gather(cfg.score.shards)
    plan = store.plan
    seconds = sum(c["seconds"] for c in chunks.values())
    is_noisy = data.is_noisy[index]
    compared = {}
    if cfg.score.compare_examples is not None:
        compare = scored_subset(cfg, prep, cfg.score.compare_examples)
        rows = np.searchsorted(index, compare)
        check(
            np.array_equal(index[np.minimum(rows, len(index) - 1)], compare),
            "score.compare_examples",
            "the comparison subset is not part of the scored examples",
        )
        found = detection_metrics(is_noisy[rows], scores[rows])
        compared = dict(auc_compare=found["auc"], ap_compare=found["ap"], n_compare=len(compare))
    record = ScoreMetrics(
        **detection_metrics(is_noisy, scores),
        **fitted,
        t_score_s=seconds,
        # Jobs compile in parallel: the longest compilation of any of them.
        t_score_compile_s=max(c["compile_seconds"] for c in chunks.values()),
        examples_per_s=len(index) / seconds if seconds > 0 else float("inf"),
        shard_seconds=[
            sum(chunks[j]["seconds"] for j in plan.shard(i, cfg.score.shards))
            for i in range(cfg.score.shards)
        ],
        score_cache_hit=counts["chunks_scored"] == 0,
        score_choices=store.choices() or {},
        n_scored=len(index),
        n_noisy_scored=int(is_noisy.sum()),
        **compared,
    )
    return record, score_table(prep, index, scores)


def score_table(prep: Prepared, index: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """scores.csv: one row per scored example, with what is needed to inspect it."""
    data = prep.data
    columns = {"example": index, "source_index": data.train_index[index]}
    columns |= prep.domain.score_columns(data, index)
    return pd.DataFrame(columns | {"is_noisy": data.is_noisy[index], "self_influence": scores})
