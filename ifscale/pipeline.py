"""One run of an experiment: data -> noise -> train (cached) -> fit (cached, `fit_stage`) ->
score (stored in chunks, `ifscale.cache.chunks`) -> evaluate -> metrics.json (+ scores.csv).

Every stage goes through the run's data kind (`ifscale.kinds`) and the method's interface
(`ifscale.influence.protocol`), never asking which kind or method it has. The Hydra entry
point `experiments/run.py` only builds a `RunConfig` and calls `run`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ifscale.cache.arrays import ArrayStore
from ifscale.cache.atomic import write_text
from ifscale.cache.chunks import ChunkPlan, ScoreStore
from ifscale.cache.keys import SCORES_VERSION, TRAINED_VERSION, score_keys, training_key
from ifscale.config import RunConfig
from ifscale.data import stratified_subset
from ifscale.distributed import barrier, local_mesh, localize
from ifscale.explain_stage import check_explain_request, explain_stage
from ifscale.fit_stage import fit_method, require_stored_fit, run_mesh
from ifscale.influence import InfluenceMethod
from ifscale.influence.projection import convolves, cpu_data_parallel
from ifscale.influence.scoring import prepared_scorer, stream_chunks
from ifscale.influence.task import ParamView, check_layers
from ifscale.kinds import DataKind, Dataset, kind_of
from ifscale.models import count_params
from ifscale.record import RunMetrics
from ifscale.selection import selection_stage
from ifscale.train import TrainedModel, check_schedule
from ifscale.utils import (
    DegenerateModelError,
    check,
    config_hash,
    describe_device,
    fingerprint_arrays,
    git_commit,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Prepared:
    """The upstream of every method: the kind, its noisy data and the model trained on it."""

    kind: DataKind
    data: Dataset
    model: nn.Module
    trained: TrainedModel
    cache_hit: bool
    train_key: dict[str, Any]


def reproducible_config(cfg: RunConfig) -> dict[str, Any]:
    """The config without machine-specific paths and display settings (for hashing)."""
    d = cfg.to_dict()
    for key in ("paths", "progress"):
        d.pop(key)
    for key in ("data_dir", "path", "extra_path"):
        d["dataset"].pop(key, None)
    return d


@dataclasses.dataclass
class Inputs:
    """The data and model of a run, checked before any training (`check_inputs`)."""

    kind: DataKind
    data: Dataset
    model: nn.Module
    shapes: Any = None  # the parameters' shapes (jax.ShapeDtypeStruct), traced once


def check_config(cfg: RunConfig) -> None:
    """What can be refused before any data is read (ConfigError, one line naming the key):
    the cache folder (a folder, writable) and the device mesh (`mesh.data` x `mesh.model`
    fit the devices). `experiments/run.py` runs it before Hydra makes the run folder."""
    cache = Path(cfg.paths.cache_dir)
    check(
        not cache.exists() or cache.is_dir(),
        "paths.cache_dir",
        f"{cache} is a file, not a folder",
    )
    existing = next(p for p in (cache, *cache.absolute().parents) if p.exists())
    check(
        os.access(existing, os.W_OK),
        "paths.cache_dir",
        f"{cache} is not writable ({existing} is read-only here): give a writable folder "
        "(paths.cache_dir=... or IFSCALE_CACHE_DIR)",
    )
    run_mesh(cfg)


def check_inputs(cfg: RunConfig) -> Inputs:
    """Everything that can be refused before training, refused now (ConfigError, one line
    naming the key or file): `check_config`, the data (loaded and checked by the kind:
    labels, pixels, files, corpora), whether the model can take them, whether
    `method.layers` names parameters of the model (traced for shapes only, no compute), and
    the projection route on this mesh. What `stage=check` runs, and the first thing every
    run does."""
    check_config(cfg)
    kind = kind_of(cfg.dataset)
    data = kind.load(cfg)
    model = kind.build_model(cfg, data)
    kind.check_data(cfg, data, model)
    check_schedule(cfg.train, data.n_train)
    if cfg.stage == "explain":
        check_explain_request(cfg, kind, data)
    shapes = None  # traced only where used: a method's layers, stage=check's summary
    if cfg.method.name != "none" or cfg.stage == "check":
        shapes = jax.eval_shape(lambda: kind.init_params(model, data, cfg.seed))
    if cfg.method.name != "none":
        task = kind.task(model, cfg)
        check_layers(task.layers, shapes)
        _check_route(cfg, task, shapes, data.train_batch(np.arange(min(2, data.n_train))))
    return Inputs(kind, data, model, shapes)


def _check_route(cfg: RunConfig, task, shapes, example) -> None:
    """Refuses `method.route=grad` where it would give wrong scores (a convolution on a CPU
    mesh with `mesh.data` > 1, `grad_route_is_wrong`), before any training; "auto" and
    "fastest" avoid it there by themselves."""
    if cfg.method.options().get("route") != "grad" or shapes is None:
        return
    check(
        not (cpu_data_parallel(run_mesh(cfg)) and convolves(task.loss, shapes, example)),
        "method.route",
        "'grad' gives wrong per-example gradients of a convolution when several CPU devices "
        "share the batch (an XLA CPU fault); use method.route=jvp (or layerwise), or "
        "mesh.data=1",
    )


def prepare(cfg: RunConfig, inputs: Inputs | None = None) -> Prepared:
    """Loads and checks the data (`check_inputs`, unless given), applies noise and trains
    (or reuses a cached) model."""
    inputs = inputs or check_inputs(cfg)
    kind, data, model = inputs.kind, inputs.data, inputs.model
    log.info(
        "Data: %d training examples (%d noisy), %d test examples",
        data.n_train,
        int(data.is_noisy.sum()),
        kind.n_test(data),
    )
    key = training_key(cfg, fingerprint_arrays(*kind.arrays(data)))
    if cfg.score.require_fit and cfg.stage != "fit":
        require_stored_fit(cfg, key)  # before training: a scoring job never trains for nothing
    trained, hit = ArrayStore(cfg.paths.cache_dir, "trained", TRAINED_VERSION).get_or_build(
        key,
        lambda: kind.train(model, data, cfg.train, cfg.seed, progress=cfg.progress),
        lambda t: (t.to_arrays(), t.info),
        TrainedModel.from_arrays,
    )
    if cfg.method.name != "none":  # influence needs a model whose outputs move
        problem = kind.degenerate(model, trained.params, data)
        if problem is not None:
            raise DegenerateModelError(problem)
    return Prepared(kind, data, model, trained, hit, key)


def scored_subset(cfg: RunConfig, prep: Prepared, size: int | None = None) -> np.ndarray:
    """Indices of the training examples to score: all, or a seeded subset of `size`
    (default `score.max_examples`) with exactly the data's share of noisy examples
    (rounded), each part stratified by the kind's strata (image labels). The subset
    depends only on the data, the seed and the size, so every method scores the same one."""
    data = prep.data
    size = cfg.score.max_examples if size is None else size
    if size is None or size >= data.n_train:
        return np.arange(data.n_train)
    noisy = np.flatnonzero(data.is_noisy)
    clean = np.flatnonzero(~data.is_noisy)
    n_noisy = round(size * len(noisy) / data.n_train)
    strata = prep.kind.strata(data)
    parts = [
        group[stratified_subset(strata[group], k, cfg.seed, stream=f"score-{name}")]
        for group, k, name in ((noisy, n_noisy, "noisy"), (clean, size - n_noisy, "clean"))
        if k > 0
    ]
    return np.sort(np.concatenate(parts))


def detection_metrics(is_noisy: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """AUC and AP of finding the noisy examples by ranking on `scores` (None when only one
    class is present)."""
    both = 0 < is_noisy.sum() < len(is_noisy)
    return {
        "auc": float(roc_auc_score(is_noisy, scores)) if both else None,
        "ap": float(average_precision_score(is_noisy, scores)) if both else None,
    }


def score_store(cfg: RunConfig, prep: Prepared, index: np.ndarray) -> ScoreStore:
    """Where the scores of `index` under `cfg.method` are stored, chunk by chunk: keyed by
    what determines them (trained model, every method option, the scored examples)."""
    method = cfg.to_dict()["method"]  # every option, p̄ included
    method_key, data_key = score_keys(cfg, config_hash(prep.train_key), method, index)
    plan = ChunkPlan(len(index), cfg.score.chunk)
    return ScoreStore(cfg.paths.cache_dir, SCORES_VERSION, method_key, data_key, plan).open()


def score_chunks(
    cfg: RunConfig,
    prep: Prepared,
    method: InfluenceMethod,
    state,
    index: np.ndarray,
    store: ScoreStore,
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
        if jax.process_count() > 1:  # no collectives while scoring: this process's devices
            mesh = local_mesh(cfg.mesh.model)
            state = localize(state, mesh)
        else:
            mesh = run_mesh(cfg)
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


def influence_stage(
    cfg: RunConfig, prep: Prepared, index: np.ndarray | None = None, score: bool = True
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Fits the method (cached), scores the training set (`index`, default
    `scored_subset`) chunk by chunk into its `ScoreStore`, and evaluates the gathered
    scores against `is_noisy`.

    With `score.shards` > 1 only this job's shard is scored and its metrics (no scores
    table) are returned; with `score=False` nothing is scored: the stored chunks are merged
    (IncompleteScores names missing shards).
    """
    method = cfg.method.build(progress=cfg.progress)
    task = prep.kind.task(prep.model, cfg)
    data = prep.data
    state, t_fit, hit = fit_method(cfg, prep, method, task)
    index = scored_subset(cfg, prep) if index is None else index
    store = score_store(cfg, prep, index)
    counts = {"chunks": store.plan.count, "chunks_reused": store.plan.count, "chunks_scored": 0}
    if score:
        counts = score_chunks(cfg, prep, method, state, index, store)
    fitted = {
        "t_fit_s": t_fit,
        "fit_cache_hit": hit,
        "pbar": cfg.method.pbar,
        "fit_batch_size": cfg.method.fit_batch_size,
        "fit_batches": cfg.method.fit_batches,
        "n_perturbed_params": ParamView.count(task, prep.trained.params),
        "shards": cfg.score.shards,
        **counts,
    }
    if score and cfg.score.shards > 1:
        return fitted | {"shard": cfg.score.shard, "n_scored": len(index)}, None

    scores, chunks = store.gather(cfg.score.shards)
    plan = store.plan
    seconds = sum(c["seconds"] for c in chunks.values())
    is_noisy = data.is_noisy[index]
    metrics = {
        **detection_metrics(is_noisy, scores),
        **fitted,
        "t_score_s": seconds,
        # Jobs compile in parallel: the longest compilation of any of them.
        "t_score_compile_s": max(c["compile_seconds"] for c in chunks.values()),
        "examples_per_s": len(index) / seconds if seconds > 0 else float("inf"),
        "shard_seconds": [
            sum(chunks[j]["seconds"] for j in plan.shard(i, cfg.score.shards))
            for i in range(cfg.score.shards)
        ],
        "score_cache_hit": counts["chunks_scored"] == 0,
        "score_choices": store.choices() or {},
        "n_scored": len(index),
        "n_noisy_scored": int(is_noisy.sum()),
    }
    if cfg.score.compare_examples is not None:
        compare = scored_subset(cfg, prep, cfg.score.compare_examples)
        rows = np.searchsorted(index, compare)
        check(
            np.array_equal(index[np.minimum(rows, len(index) - 1)], compare),
            "score.compare_examples",
            "the comparison subset is not part of the scored examples",
        )
        found = detection_metrics(is_noisy[rows], scores[rows])
        metrics.update(auc_compare=found["auc"], ap_compare=found["ap"], n_compare=len(compare))
    metrics.update(method.fitted_metrics(state))
    return metrics, score_table(prep, index, scores)


def pool_scores(
    cfg: RunConfig, prep: Prepared, pool: np.ndarray
) -> tuple[dict[str, Any], pd.DataFrame]:
    """`influence_stage` on a selection pool. Its chunks are stored like every scoring, so
    selections of several shares from the same scores (Table 3's 25% and 50% rows) score the
    corpus once."""
    check(cfg.score.shards == 1, "score.shards", "selections score their pool in one job")
    return influence_stage(cfg, prep, index=pool)


def score_table(prep: Prepared, index: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """scores.csv: one row per scored example, with what is needed to inspect it."""
    data = prep.data
    columns = {"example": index, "source_index": data.train_index[index]}
    columns |= prep.kind.score_columns(data, index)
    return pd.DataFrame(columns | {"is_noisy": data.is_noisy[index], "self_influence": scores})


def run(cfg: RunConfig, run_dir: str | os.PathLike, merge: bool = False) -> dict[str, Any]:
    """Runs the pipeline and writes `metrics.json` (and `scores.csv`) into `run_dir`;
    returns the metrics. With `merge`, nothing is fitted or scored: the stored chunks of
    every shard are gathered (`experiments/merge.py`), or IncompleteScores names the shards
    that are missing. In a multi-process job only process 0 writes."""
    start = time.perf_counter()
    check(
        not merge or (cfg.method.name != "none" and cfg.select.method is None),
        "method",
        "a merge gathers the self-influence scores of a method: give method=<name>",
    )
    if merge:  # a merge never fits: the fit is the shard jobs' (or stage=fit's)
        cfg = dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, require_fit=True))
    inputs = check_inputs(cfg)
    if cfg.stage == "check":
        return _report_check(cfg, inputs)
    prep = prepare(cfg, inputs)
    info = prep.trained.info
    metrics = {
        "experiment": cfg.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "n_params": count_params(prep.trained.params),
        "n_train": prep.data.n_train,
        "n_test": prep.kind.n_test(prep.data),
        "noise": {
            "kind": cfg.noise.kind,
            "rate": cfg.noise.rate,
            "n_noisy": int(prep.data.is_noisy.sum()),
        },
        "method": cfg.method.name,
        "seed": cfg.seed,
        "test_accuracy": info.get("test_accuracy"),
        "train_time_s": info["train_time_s"],
        "train_steps": info["n_steps"],
        "train_cache_hit": prep.cache_hit,
        "device": describe_device(),
        "config_hash": config_hash(reproducible_config(cfg)),
        "train_key_hash": config_hash(prep.train_key),
        "git_commit": git_commit(),
        **prep.kind.run_metrics(cfg, prep.data, info),
    }
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    scores = None
    if cfg.stage == "fit":
        method = cfg.method.build(progress=cfg.progress)
        _, t_fit, hit = fit_method(cfg, prep, method, prep.kind.task(prep.model, cfg))
        metrics |= {"stage": "fit", "t_fit_s": t_fit, "fit_cache_hit": hit}
        log.info("%s fit: %.1fs%s", cfg.method.name, t_fit, " (cached)" if hit else "")
    elif cfg.stage == "explain":
        explain_metrics, explanations = explain_stage(cfg, prep)
        metrics |= explain_metrics | {"method_options": cfg.method.options()}
    elif cfg.select.method is not None:
        select_metrics, scores = selection_stage(
            cfg, prep, lambda pool: pool_scores(cfg, prep, pool)
        )
        metrics |= select_metrics | {"method_options": cfg.method.options()}
        log.info(
            "selection %s (%.0f%% of the pairs): BLEU %.1f after %d steps, %.1f after %d",
            cfg.select.method,
            metrics["selected_percent"],
            metrics["bleu_short"],
            metrics["budget_short"],
            metrics["bleu_long"],
            metrics["budget_long"],
        )
    elif cfg.method.name != "none":
        method_metrics, scores = influence_stage(cfg, prep, score=not merge)
        metrics |= method_metrics | {
            "method_options": cfg.method.options(),
            "layers": _plain(cfg.method.layers),
        }
        if scores is None:
            metrics["stage"] = "shard"
            log.info(
                "shard %d of %d: %d chunks scored, %d reused; merge with experiments/merge.py",
                cfg.score.shard,
                cfg.score.shards,
                metrics["chunks_scored"],
                metrics["chunks_reused"],
            )
        else:
            if merge:
                metrics["stage"] = "merge"
            log.info(
                "%s: AUC %.4f, AP %.4f over %d examples (fit %.1fs, score %.1fs, %.0f ex/s)",
                cfg.method.name,
                metrics["auc"] or float("nan"),
                metrics["ap"] or float("nan"),
                metrics["n_scored"],
                metrics["t_fit_s"],
                metrics["t_score_s"],
                metrics["examples_per_s"],
            )
    metrics["wall_time_s"] = time.perf_counter() - start
    record = RunMetrics.from_dict(metrics)
    if jax.process_index() != 0:  # one writer per job
        return record.to_dict()
    if scores is not None:
        scores.to_csv(run_dir / "scores.csv", index=False)
    if cfg.stage == "explain":
        explanations.to_csv(run_dir / "explanations.csv", index=False)
        written = prep.kind.write_explanations(run_dir, explanations, prep.data)
        log.info("explanations in %s", ", ".join(["explanations.csv", *written]))
    # The resolved config beside the metrics: reports reload the run's data from it.
    write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    # Last, and whole: a run folder with metrics.json is a finished run (the reports read
    # only those).
    write_text(run_dir / "metrics.json", record.to_json())
    log.info(
        "test accuracy %.4f (train %.1fs%s); metrics in %s",
        metrics["test_accuracy"],
        metrics["train_time_s"],
        ", cached" if prep.cache_hit else "",
        run_dir / "metrics.json",
    )
    return record.to_dict()


def _report_check(cfg: RunConfig, inputs: Inputs) -> dict[str, Any]:
    """`stage=check`: logs what a run would use and writes nothing."""
    data, shapes = inputs.data, inputs.shapes
    summary = {
        "stage": "check",
        "dataset": cfg.dataset.name,
        "n_train": data.n_train,
        "n_noisy": int(data.is_noisy.sum()),
        "n_test": inputs.kind.n_test(data),
        "model": cfg.model.name,
        "n_params": None if shapes is None else count_params(shapes),
        "method": cfg.method.name,
    }
    log.info("check passed: %s", ", ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def _plain(layers):
    return list(layers) if isinstance(layers, tuple) else layers
