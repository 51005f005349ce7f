"""One run of an experiment: data -> noise -> train (cached) -> metrics.json.

The influence-method stage (fit, score, evaluate) plugs in after training; the Hydra entry
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

from ifscale.artifacts import ArtifactCache
from ifscale.config import RunConfig
from ifscale.data import ImageData, apply_label_noise, load_images
from ifscale.models import build_model, count_params
from ifscale.train import TrainedModel, train_cached
from ifscale.utils import config_hash, describe_device, fingerprint_arrays, git_commit

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Prepared:
    """The upstream of every method: noisy data and the model trained on it."""

    data: ImageData
    model: nn.Module
    trained: TrainedModel
    cache_hit: bool
    train_key: dict[str, Any]


def load_data(cfg: RunConfig) -> ImageData:
    """The training/test data of `cfg` with its noise applied."""
    d = cfg.dataset
    data = load_images(
        d.source,
        data_dir=d.data_dir,
        path=d.path,
        subset_fraction=d.subset_fraction,
        subset_size=d.subset_size,
        scale=d.scale,
        seed=cfg.seed,
    )
    return apply_label_noise(data, cfg.noise.kind, cfg.noise.rate, cfg.seed)


def training_key(cfg: RunConfig, data: ImageData) -> dict[str, Any]:
    """What determines the trained parameters: the cache key of training.

    Paths are left out and the data enter by content fingerprint instead, so a moved data
    folder reuses the cache while changed data (or labels) never do.
    """
    dataset = dataclasses.asdict(cfg.dataset)
    for path_key in ("data_dir", "path"):
        dataset.pop(path_key)
    train = dataclasses.asdict(cfg.train)
    train.pop("log_every")  # cosmetic
    return {
        "dataset": dataset,
        "data_fingerprint": fingerprint_arrays(
            data.x_train, data.y_train, data.x_test, data.y_test
        ),
        "noise": dataclasses.asdict(cfg.noise),
        "model": dataclasses.asdict(cfg.model),
        "train": train,
        "seed": cfg.seed,
    }


def reproducible_config(cfg: RunConfig) -> dict[str, Any]:
    """The config without machine-specific paths and display settings (for hashing)."""
    d = cfg.to_dict()
    for key in ("paths", "progress"):
        d.pop(key)
    for key in ("data_dir", "path"):
        d["dataset"].pop(key)
    return d


def prepare(cfg: RunConfig) -> Prepared:
    """Loads the data, applies noise and trains (or reuses a cached) model."""
    data = load_data(cfg)
    log.info(
        "Data: %d training examples (%d noisy), %d test examples",
        data.n_train,
        int(data.is_noisy.sum()),
        len(data.y_test),
    )
    model = build_model(cfg.model.name, data.num_classes)
    key = training_key(cfg, data)
    cache = ArtifactCache(Path(cfg.paths.cache_dir), "trained")
    trained, hit = train_cached(
        model,
        data.x_train,
        data.y_train,
        cfg.train,
        cfg.seed,
        cache,
        key,
        data.x_test,
        data.y_test,
        progress=cfg.progress,
    )
    return Prepared(data, model, trained, hit, key)


def run(cfg: RunConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Runs the pipeline and writes `metrics.json` into `run_dir`; returns the metrics."""
    start = time.perf_counter()
    prep = prepare(cfg)
    info = prep.trained.info
    metrics = {
        "experiment": cfg.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "n_params": count_params(prep.trained.params),
        "n_train": prep.data.n_train,
        "n_test": len(prep.data.y_test),
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
        "wall_time_s": time.perf_counter() - start,
    }
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info(
        "test accuracy %.4f (train %.1fs%s); metrics in %s",
        metrics["test_accuracy"],
        metrics["train_time_s"],
        ", cached" if prep.cache_hit else "",
        run_dir / "metrics.json",
    )
    return metrics
