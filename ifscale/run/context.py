"""What every stage shares: the inputs of a run, checked before any training (`Inputs`,
`check_inputs`), and the noisy data with the model trained on them (`Prepared`, `prepare`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from ifscale.cache.arrays import ArrayStore
from ifscale.cache.keys import TRAINED_VERSION, training_key
from ifscale.config import RunConfig
from ifscale.data import stratified_subset
from ifscale.domains import Dataset, Domain, domain_of
from ifscale.influence.projection import convolves, cpu_data_parallel
from ifscale.influence.task import check_layers
from ifscale.run.compose import method_of
from ifscale.run.fitting import require_stored_fit
from ifscale.run.mesh import run_mesh
from ifscale.train import TrainedModel, check_schedule
from ifscale.utils import DegenerateModelError, check, fingerprint_arrays

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Inputs:
    """The data and model of a run, checked before any training (`check_inputs`)."""

    domain: Domain
    data: Dataset
    model: nn.Module
    shapes: Any = None  # the parameters' shapes (jax.ShapeDtypeStruct), traced once


@dataclasses.dataclass
class Prepared:
    """The upstream of every method: the domain, its noisy data and the model trained on
    them, with the training's cache key."""

    domain: Domain
    data: Dataset
    model: nn.Module
    trained: TrainedModel
    cache_hit: bool
    train_key: dict[str, Any]


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
    naming the key or file): `check_config`, the data (loaded and checked by the domain:
    labels, pixels, files, corpora), whether the model can take them, whether
    `method.layers` names parameters of the model (traced for shapes only, no compute), and
    the projection route on this mesh. What `stage=check` runs, and the first thing every
    run does."""
    check_config(cfg)
    domain = domain_of(cfg.dataset)
    data = domain.load(cfg)
    model = domain.build_model(cfg, data)
    domain.check_data(cfg, data, model)
    check_schedule(cfg.train, data.n_train)
    if cfg.stage == "explain":
        check_explain_request(cfg, domain, data)
    if cfg.stage in ("retrain", "lds"):
        check_lds_request(cfg, domain, data)
    shapes = None  # traced only where used: a method's layers, stage=check's summary
    if cfg.method.name != "none" or cfg.stage == "check":
        shapes = jax.eval_shape(lambda: domain.init_params(model, data, cfg.seed))
    if cfg.method.name != "none":
        task = domain.task(model, cfg)
        check_layers(task.layers, shapes)
        example = data.train_batch(np.arange(min(2, data.n_train)))
        _check_route(cfg, task, shapes, example)
        method_of(cfg).check_model(task, shapes, example)
    return Inputs(domain, data, model, shapes)


def check_explain_request(cfg: RunConfig, domain: Domain, data: Dataset) -> None:
    """Refuses, before any training, test indices outside the test split, a count of test
    examples larger than the test split, and a top-k larger than the training set."""
    m, n = domain.n_test(data), data.n_train
    if cfg.explain.test_indices is not None:
        top = max(cfg.explain.test_indices)
        check(
            top < m,
            "explain.test_indices",
            f"{top} is out of range: the test split has {m} examples",
        )
    else:
        check(
            cfg.explain.count <= m,
            "explain.count",
            f"{cfg.explain.count} is more than the {m} test examples",
        )
    check(
        cfg.explain.top_k <= n,
        "explain.top_k",
        f"{cfg.explain.top_k} is more than the {n} training examples",
    )


def check_lds_request(cfg: RunConfig, domain: Domain, data: Dataset) -> None:
    """Refuses, before any training, more test and validation examples than the test split
    holds, and a subset share that leaves no proper subset."""
    m, v, available = cfg.lds.test_examples, cfg.lds.validation_examples, domain.n_test(data)
    check(
        m + v <= available,
        "lds.test_examples",
        f"{m} test and {v} validation examples need {m + v}, but the test split has {available}",
    )
    size = round(cfg.lds.fraction * data.n_train)
    check(
        1 <= size < data.n_train,
        "lds.fraction",
        f"{cfg.lds.fraction} of {data.n_train} training examples is {size}: no proper subset",
    )


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
    (or reuses a stored) model."""
    inputs = inputs or check_inputs(cfg)
    domain, data, model = inputs.domain, inputs.data, inputs.model
    log.info(
        "Data: %d training examples (%d noisy), %d test examples",
        data.n_train,
        int(data.is_noisy.sum()),
        domain.n_test(data),
    )
    key = training_key(cfg, fingerprint_arrays(*domain.arrays(data)))
    if cfg.requires_stored_fit and cfg.stage != "fit":
        require_stored_fit(cfg, key)  # before training: a scoring job never trains for nothing
    trained, hit = ArrayStore(cfg.paths.cache_dir, "trained", TRAINED_VERSION).get_or_build(
        key,
        lambda: domain.train(model, data, cfg.train, cfg.seed, progress=cfg.progress),
        lambda t: (t.to_arrays(), t.info),
        TrainedModel.from_arrays,
    )
    if cfg.method.name != "none":  # influence needs a model whose outputs move
        problem = domain.degenerate(model, trained.params, data)
        if problem is not None:
            raise DegenerateModelError(problem)
    return Prepared(domain, data, model, trained, hit, key)


def scored_subset(cfg: RunConfig, prep: Prepared, size: int | None = None) -> np.ndarray:
    """Indices of the training examples to score: all, or a seeded subset of `size`
    (default `score.max_examples`) with exactly the data's share of noisy examples
    (rounded), each part stratified by the domain's strata (image labels). The subset
    depends only on the data, the seed and the size, so every method scores the same one."""
    data = prep.data
    size = cfg.score.max_examples if size is None else size
    if size is None or size >= data.n_train:
        return np.arange(data.n_train)
    noisy = np.flatnonzero(data.is_noisy)
    clean = np.flatnonzero(~data.is_noisy)
    n_noisy = round(size * len(noisy) / data.n_train)
    strata = prep.domain.strata(data)
    parts = [
        group[stratified_subset(strata[group], k, cfg.seed, stream=f"score-{name}")]
        for group, k, name in ((noisy, n_noisy, "noisy"), (clean, size - n_noisy, "clean"))
        if k > 0
    ]
    return np.sort(np.concatenate(parts))
