"""The models retrained from other seeds that a method's fit reads beside the trained one
(TRAK's ensemble, `method.ensemble=retrained`; `InfluenceMethod.retrained_models`).

Model j (j = 0, 1, ...) trains with the run's training config from seed
`ENSEMBLE_SEED + 1000·seed + j` (none is the run's own or a ground-truth model's,
`ifscale.run.groundtruth.model_seeds`), on every training example or on a seeded draw of
round(α n) of them (stream "ensemble-subsets", draw j), with `ifscale.retraining.train_many`
(`lds.parallel` models at a time, as the ground truth). Each model's flat parameters are one
chunk of a `ChunkStore` under `<cache>/ensembles/`, stored as soon as it is trained, so a
killed job resumes; the store's key leaves out the ensemble's size, so an ensemble of 5
reuses the 2 models of an ensemble of 2. `stage=retrain` trains a shard's models
(`score.shards`, `score.shard`: contiguous ranges of models, on any Hydra launcher); the fit
trains whatever is missing. `prep` is the run's `ifscale.run.context.Prepared`.
"""

from __future__ import annotations

import logging
import time

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from ifscale.cache.chunks import ChunkPlan, ChunkStore
from ifscale.cache.keys import ENSEMBLE_VERSION, ensemble_keys
from ifscale.config import RunConfig
from ifscale.influence.protocol import Checkpoints
from ifscale.retraining import train_many
from ifscale.utils import check, fingerprint_arrays, stream_rng

log = logging.getLogger(__name__)

# The largest ensemble a store holds (its chunk plan; model j is chunk j).
POOL = 4096
ENSEMBLE_SEED = 1_000_000_000
SEED_STRIDE = 1000  # model seeds per run seed


def ensemble_seeds(cfg: RunConfig, models: np.ndarray) -> np.ndarray:
    return ENSEMBLE_SEED + SEED_STRIDE * cfg.seed + np.asarray(models)


def ensemble_subsets(cfg: RunConfig, n: int, fraction: float, models: np.ndarray) -> np.ndarray:
    """[len(models), round(α n)] the sorted training examples of each model (all of them
    for α = 1)."""
    if fraction == 1.0:
        return np.tile(np.arange(n), (len(models), 1))
    size = round(fraction * n)
    rng = stream_rng(cfg.seed, "ensemble-subsets")
    draws = [np.sort(rng.choice(n, size, replace=False)) for _ in range(int(max(models)) + 1)]
    return np.stack([draws[j] for j in models])


def _store(cfg: RunConfig, prep, fraction: float, size: int) -> ChunkStore:
    fingerprint = fingerprint_arrays(*prep.domain.arrays(prep.data))
    method_key, data_key = ensemble_keys(cfg, fingerprint, fraction)
    plan = ChunkPlan(POOL, 1)
    return ChunkStore(
        cfg.paths.cache_dir, ENSEMBLE_VERSION, method_key, data_key, plan, "ensembles", (size,)
    ).open()


def train_ensemble(
    cfg: RunConfig, prep, count: int, fraction: float, models: range | None = None
) -> dict:
    """Trains the models among `models` (default: all `count`) that are not stored yet;
    returns what it cost."""
    # Seeds are 1000 apart per run seed: more models would share another seed's.
    check(count < SEED_STRIDE, "method.models", f"at most {SEED_STRIDE} models, got {count + 1}")
    size = ravel_pytree(prep.trained.params)[0].size
    store = _store(cfg, prep, fraction, size)
    wanted = list(models if models is not None else range(count))
    todo = np.array([j for j in wanted if j not in store.done(wanted)], int)
    log.info(
        "ensemble: %d of %d retrained models stored, %d to train (%s)",
        len(wanted) - len(todo),
        len(wanted),
        len(todo),
        store.folder,
    )
    if len(todo) == 0:
        return {"ensemble_models_trained": 0, "ensemble_train_seconds": 0.0}
    parts = prep.domain.retraining(prep.model, prep.data, cfg)
    last = [time.perf_counter()]

    def done(positions: np.ndarray, params) -> None:
        # Each model of a group is stored with its share of the group's seconds
        # (compilation included in the first group's).
        now = time.perf_counter()
        each = (now - last[0]) / len(positions)
        last[0] = now
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
        for position, row in zip(positions, np.asarray(flat, np.float64), strict=True):
            store.save(int(todo[position]), row[None], each)

    info = train_many(
        parts.init,
        parts.loss,
        parts.arrays,
        ensemble_subsets(cfg, prep.data.n_train, fraction, todo),
        ensemble_seeds(cfg, todo),
        cfg.train,
        min(cfg.lds.parallel, len(todo)),
        cfg.progress,
        done,
    )
    return {"ensemble_models_trained": len(todo), "ensemble_train_seconds": info["seconds"]}


def ensemble_checkpoints(
    cfg: RunConfig, prep, count: int, fraction: float
) -> tuple[Checkpoints, float]:
    """The `count` retrained models as `Checkpoints` (params stacked on a leading axis, lrs
    ones), trained first where missing; and the seconds their training took (stored with
    each model, so the same whether they were trained now or before)."""
    train_ensemble(cfg, prep, count, fraction)
    flat, unravel = ravel_pytree(prep.trained.params)
    store = _store(cfg, prep, fraction, flat.size)
    found = store.done(range(count))
    check(len(found) == count, "method.models", "an ensemble model went missing while loading")
    rows = np.stack([found[j]["scores"][0] for j in range(count)]).astype(flat.dtype)
    stacked = jax.vmap(unravel)(rows)
    seconds = sum(found[j]["seconds"] for j in range(count))
    return Checkpoints(stacked, np.ones(count)), seconds
