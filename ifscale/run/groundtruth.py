"""The ground truth of the linear datamodeling score: models retrained from scratch on M
random subsets of the training set (K seeds each), and what they output on the test
examples.

Subsets, seeds and test examples are fixed by the config alone: subset j is a seeded draw
of round(α n) training examples (the run's seed, stream "lds-subsets"); model (j, k) trains
with seed `model_seeds(cfg)[j, k]`, with the run's training config; the measured test
examples are the first `lds.test_examples` of the test split, then the next
`lds.validation_examples`. The outputs [M, K, m] are stored in a `ChunkStore` under
`<cache>/retrained/`, one chunk per `lds.chunk` subsets, so a killed job resumes, shard jobs
(`score.shards`) train disjoint chunks, and every method's `stage=lds` reuses them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import numpy as np

from ifscale.cache.chunks import ChunkPlan, ChunkStore
from ifscale.cache.keys import RETRAINED_VERSION, retrained_keys
from ifscale.config import RunConfig
from ifscale.distributed import barrier
from ifscale.retraining import train_many
from ifscale.run.context import Prepared
from ifscale.train import train_loop
from ifscale.utils import fingerprint_arrays, stream_key, stream_rng

log = logging.getLogger(__name__)


def lds_examples(cfg: RunConfig, prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """(the reported test examples, the validation examples): positions in the test split,
    the first `lds.test_examples`, then the next `lds.validation_examples` (in range:
    `ifscale.run.context.check_lds_request`)."""
    m, v = cfg.lds.test_examples, cfg.lds.validation_examples
    return np.arange(m), np.arange(m, m + v)


def subsets(cfg: RunConfig, n: int) -> np.ndarray:
    """[M, round(α n)] the sorted training examples of each subset."""
    size = round(cfg.lds.fraction * n)
    rng = stream_rng(cfg.seed, "lds-subsets")
    return np.stack([np.sort(rng.choice(n, size, replace=False)) for _ in range(cfg.lds.subsets)])


def masks(cfg: RunConfig, n: int) -> np.ndarray:
    """[M, n] bool: which training examples each subset holds."""
    out = np.zeros((cfg.lds.subsets, n), bool)
    np.put_along_axis(out, subsets(cfg, n), True, axis=1)
    return out


def model_seeds(cfg: RunConfig) -> np.ndarray:
    """[M, K] the training seed of model k on subset j: distinct, and none is the run's own
    (whose model is trained on every example)."""
    M, K = cfg.lds.subsets, cfg.lds.seeds
    return 1 + cfg.seed * (M * K + 1) + np.arange(M * K).reshape(M, K)


def truth_store(cfg: RunConfig, prep: Prepared) -> ChunkStore:
    """Where the outputs of the retrained models are stored."""
    test, validation = lds_examples(cfg, prep)
    index = np.concatenate([test, validation])
    fingerprint = fingerprint_arrays(*prep.domain.arrays(prep.data))
    method_key, data_key = retrained_keys(cfg, fingerprint, index)
    plan = ChunkPlan(cfg.lds.subsets, cfg.lds.chunk)
    shape = (cfg.lds.seeds, len(index))
    return ChunkStore(
        cfg.paths.cache_dir, RETRAINED_VERSION, method_key, data_key, plan, "retrained", shape
    ).open()


def retrain(cfg: RunConfig, prep: Prepared, store: ChunkStore, chunks: list[int]) -> dict:
    """Trains the models of `chunks` (vectorised, `lds.parallel` at a time) and stores each
    chunk's outputs [subsets, K, m] as soon as its models are trained."""
    plan, K = store.plan, cfg.lds.seeds
    parts = prep.domain.retraining(prep.model, prep.data, cfg)
    test, validation = lds_examples(cfg, prep)
    batch = prep.domain.test_batch(prep.data, np.concatenate([test, validation]))
    outputs = jax.jit(jax.vmap(parts.output, in_axes=(0, None)))
    rows = [j for c in chunks for j in range(*plan.span(c))]  # the subsets to train
    chosen = subsets(cfg, prep.data.n_train)[rows]
    seeds = model_seeds(cfg)[rows]
    sizes = {c: plan.span(c)[1] - plan.span(c)[0] for c in chunks}
    pending = {c: np.zeros((size, K, len(test) + len(validation))) for c, size in sizes.items()}
    left = {c: size * K for c, size in sizes.items()}
    started = time.perf_counter()

    def done(models: np.ndarray, params) -> None:
        values = np.asarray(outputs(params, batch), np.float64)
        for model, value in zip(models, values, strict=True):
            subset, k = rows[model // K], model % K
            c = subset // plan.chunk
            pending[c][subset - plan.span(c)[0], k] = value
            left[c] -= 1
            if left[c] == 0:
                store.save(c, pending.pop(c), time.perf_counter() - started)

    info = train_many(
        parts.init,
        parts.loss,
        parts.arrays,
        np.repeat(chosen, K, axis=0),
        seeds.reshape(-1),
        cfg.train,
        cfg.lds.parallel,
        cfg.progress,
        done,
    )
    return info


def sequential_check(cfg: RunConfig, prep: Prepared, store: ChunkStore) -> dict[str, Any]:
    """Trains the first `lds.sequential` models one at a time (`train_loop`), for the speed
    of training many at once against this, and their outputs against the stored ones."""
    count = min(cfg.lds.sequential, cfg.lds.subsets * cfg.lds.seeds)
    if count == 0:
        return {}
    parts = prep.domain.retraining(prep.model, prep.data, cfg)
    test, validation = lds_examples(cfg, prep)
    batch = prep.domain.test_batch(prep.data, np.concatenate([test, validation]))
    chosen, seeds = subsets(cfg, prep.data.n_train), model_seeds(cfg)
    stored, _ = store.gather()
    start = time.perf_counter()
    gaps = []
    for model in range(count):
        j, k = divmod(model, cfg.lds.seeds)
        rows = chosen[j]
        trained = train_loop(
            parts.init(stream_key(int(seeds[j, k]), "init")),
            parts.loss,
            tuple(a[rows] for a in parts.arrays),
            cfg.train,
            int(seeds[j, k]),
            progress=False,
        )
        value = np.asarray(jax.jit(parts.output)(trained.params, batch), np.float64)
        gaps.append(float(np.max(np.abs(value - stored[j, k]))))
    seconds = time.perf_counter() - start
    return {
        "sequential_models": count,
        "sequential_models_per_s": count / seconds,
        "sequential_max_output_gap": max(gaps),
    }


def ground_truth(cfg: RunConfig, prep: Prepared, train: bool = True) -> tuple[np.ndarray, dict]:
    """[M, K, m] the measured outputs of the retrained models (test, then validation
    examples), training this job's missing chunks first (its shard's, `score.shards`; with
    `train=False` none); and what the retraining cost."""
    store = truth_store(cfg, prep)
    shard = list(store.plan.shard(cfg.score.shard, cfg.score.shards))
    mine = shard[jax.process_index() :: jax.process_count()]
    todo = [c for c in mine if c not in store.done(mine)] if train else []
    log.info(
        "ground truth: %d of %d chunks of %d subsets x %d seeds stored, %d to train (%s)",
        len(mine) - len(todo),
        len(mine),
        cfg.lds.chunk,
        cfg.lds.seeds,
        len(todo),
        store.folder,
    )
    info = retrain(cfg, prep, store, todo) if todo else {}
    barrier("ifscale-retrained")
    stats = {
        "retrained_models": info.get("models", 0),
        "retrain_seconds": info.get("seconds", 0.0),
        "retrain_compile_seconds": info.get("compile_seconds", 0.0),
        "retrain_chunks": store.plan.count,
        "retrain_chunks_reused": len(mine) - len(todo),
    }
    if cfg.score.shards > 1 and cfg.stage == "retrain":
        return np.empty(0), stats
    values, _ = store.gather(cfg.score.shards)
    if cfg.stage == "retrain":
        stats |= sequential_check(cfg, prep, store)
    return values, stats
