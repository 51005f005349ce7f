"""One run of an experiment: data -> noise -> train (cached) -> fit (cached) -> score ->
evaluate -> metrics.json (+ scores.csv).

The Hydra entry point `experiments/run.py` only builds a `RunConfig` and calls `run`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ifscale.artifacts import ArtifactCache
from ifscale.cleaning import (
    length_strata,
    lowest_scores,
    lowest_scores_by_stratum,
    pre_clean,
    random_selection,
)
from ifscale.config import ModelConfig, RunConfig
from ifscale.data import ImageData, apply_label_noise, load_images, stratified_subset
from ifscale.data.translation import PAD_ID, TextData, load_translation
from ifscale.influence import METHODS, Checkpoints, Task, make_method, self_influence_scores
from ifscale.influence.hvp import device_batches
from ifscale.influence.layerwise import FlaxLayerwise
from ifscale.influence.methods import Spectrum
from ifscale.influence.task import ParamView
from ifscale.models import build_model, count_params
from ifscale.train import TrainedModel, cached_training, cross_entropy, train
from ifscale.translation import train_translation, translation_task
from ifscale.utils import (
    check,
    config_hash,
    describe_device,
    fingerprint_arrays,
    git_commit,
    stream_key,
    stream_rng,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Prepared:
    """The upstream of every method: noisy data and the model trained on it."""

    data: ImageData | TextData
    model: nn.Module
    trained: TrainedModel
    cache_hit: bool
    train_key: dict[str, Any]


def load_data(cfg: RunConfig) -> ImageData | TextData:
    """The training/test data of `cfg` with its noise applied."""
    d = cfg.dataset
    if d.kind == "text":
        return load_translation(
            d.source,
            path=d.path,
            data_dir=d.data_dir,
            train_size=d.train_size,
            test_size=d.test_size,
            vocab_size=d.vocab_size,
            max_length=d.max_length,
            noise_kind=cfg.noise.kind,
            noise_rate=cfg.noise.rate,
            seed=cfg.seed,
            cache_dir=cfg.paths.cache_dir,
            noise_shares=cfg.noise.shares,
            extra_path=d.extra_path,
            extra_train_size=d.extra_train_size,
            length_policy=d.length_policy,
        )
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


def data_arrays(data: ImageData | TextData) -> tuple[np.ndarray, ...]:
    """The arrays a model is trained and tested on (content-fingerprinted for caches)."""
    if isinstance(data, TextData):
        return data.source_train, data.target_train, data.source_test, data.target_test
    return data.x_train, data.y_train, data.x_test, data.y_test


def training_key(cfg: RunConfig, data: ImageData | TextData) -> dict[str, Any]:
    """What determines the trained parameters: the cache key of training.

    Paths are left out and the data enter by content fingerprint instead, so a moved data
    folder reuses the cache while changed data (or labels) never do.
    """
    dataset = dataclasses.asdict(cfg.dataset)
    for path_key in ("data_dir", "path", "extra_path"):
        dataset.pop(path_key)
    train = dataclasses.asdict(cfg.train)
    train.pop("log_every")  # cosmetic
    return _without_unset(
        {
            "dataset": dataset,
            "data_fingerprint": fingerprint_arrays(*data_arrays(data)),
            "noise": dataclasses.asdict(cfg.noise),
            "model": dataclasses.asdict(cfg.model),
            "train": train,
            "seed": cfg.seed,
        }
    )


# Options added after caches existed, left out of cache keys while they are off, so that
# artifacts made before the option existed stay valid. (Their data still enter by content.)
_UNSET = {
    ("dataset", "extra_train_size"): None,
    ("dataset", "length_policy"): "drop",
    ("noise", "shares"): None,
    ("train", "steps"): None,
    ("train", "warmup_steps"): 0,
    # Fields of text data and Transformers, unset for images and CNNs.
    ("dataset", "kind"): "image",
    **{("model", name): None for name in ModelConfig.HYPER},
}
_TEXT_ONLY = ("train_size", "test_size", "vocab_size", "max_length")


def _without_unset(key: dict[str, Any]) -> dict[str, Any]:
    if key["dataset"].get("kind") == "image":
        for name in _TEXT_ONLY:
            key["dataset"].pop(name, None)
    for (part, name), off in _UNSET.items():
        if name in key.get(part, {}) and key[part][name] == off:
            key[part].pop(name)
    return key


def reproducible_config(cfg: RunConfig) -> dict[str, Any]:
    """The config without machine-specific paths and display settings (for hashing)."""
    d = cfg.to_dict()
    for key in ("paths", "progress"):
        d.pop(key)
    for key in ("data_dir", "path", "extra_path"):
        d["dataset"].pop(key)
    return d


def prepare(cfg: RunConfig) -> Prepared:
    """Loads the data, applies noise and trains (or reuses a cached) model."""
    data = load_data(cfg)
    log.info(
        "Data: %d training examples (%d noisy), %d test examples",
        data.n_train,
        int(data.is_noisy.sum()),
        len(data_arrays(data)[2]),
    )
    if isinstance(data, TextData):
        model = build_model(
            cfg.model.name, vocab_size=data.tokenizer.vocab_size, **cfg.model.hyperparameters()
        )

        def fit():
            return train_translation(model, data, cfg.train, cfg.seed, progress=cfg.progress)
    else:
        model = build_model(cfg.model.name, data.num_classes)

        def fit():
            return train(
                model,
                data.x_train,
                data.y_train,
                cfg.train,
                cfg.seed,
                data.x_test,
                data.y_test,
                progress=cfg.progress,
            )

    key = training_key(cfg, data)
    cache = ArtifactCache(Path(cfg.paths.cache_dir), "trained")
    trained, hit = cached_training(fit, cache, key)
    return Prepared(data, model, trained, hit, key)


def make_task(cfg: RunConfig, prep: Prepared) -> Task:
    """The influence task of the run's model and data."""
    if isinstance(prep.data, TextData):
        return translation_task(
            prep.model, cfg.method.layers, cfg.train.l2, cfg.method.sequence_loss
        )
    return classification_task(prep.model, cfg.method.layers, cfg.train.l2)


def classification_task(model: nn.Module, layers=None, l2: float = 0.0) -> Task:
    """Per-example cross-entropy of an image classifier on batches (x, y)."""

    def loss(params, batch):
        x, y = batch
        return cross_entropy(model.apply({"params": params}, x), y)

    fast = FlaxLayerwise(
        model,
        loss_from_outputs=lambda logits, batch: cross_entropy(logits, batch[1]),
        inputs_of=lambda batch: batch[0],
    )
    return Task(loss=loss, layers=layers, l2=l2, layerwise=fast)


def fit_batches(cfg: RunConfig, data: ImageData | TextData) -> list[tuple[np.ndarray, ...]]:
    """The seeded training examples whose mean loss defines H, in equal batches."""
    m = cfg.method
    total = m.fit_batch_size * m.fit_batches
    check(
        total <= data.n_train,
        "method.fit_batches",
        f"fit_batch_size x fit_batches = {total} exceeds the {data.n_train} training examples",
    )
    index = stream_rng(cfg.seed, "fit").choice(data.n_train, total, replace=False)
    return [data.train_batch(chunk) for chunk in index.reshape(m.fit_batches, m.fit_batch_size)]


def scored_subset(
    cfg: RunConfig, data: ImageData | TextData, size: int | None = None
) -> np.ndarray:
    """Indices of the training examples to score: all, or a seeded subset of `size`
    (default `score.max_examples`) with exactly the data's share of noisy examples
    (rounded), each part stratified by label (images). The subset depends only on the
    data, the seed and the size, so every method scores the same one."""
    size = cfg.score.max_examples if size is None else size
    if size is None or size >= data.n_train:
        return np.arange(data.n_train)
    noisy = np.flatnonzero(data.is_noisy)
    clean = np.flatnonzero(~data.is_noisy)
    n_noisy = round(size * len(noisy) / data.n_train)
    labels = data.y_train if isinstance(data, ImageData) else np.zeros(data.n_train, np.int64)
    parts = [
        group[stratified_subset(labels[group], k, cfg.seed, stream=f"score-{name}")]
        for group, k, name in ((noisy, n_noisy, "noisy"), (clean, size - n_noisy, "clean"))
        if k > 0
    ]
    return np.sort(np.concatenate(parts))


def _method_options(cfg: RunConfig) -> dict[str, Any]:
    options = dict(cfg.method.options)
    method_fields = {f.name for f in dataclasses.fields(METHODS[cfg.method.name])}
    if "progress" in method_fields:
        options.setdefault("progress", cfg.progress)
    return options


def fit_key(cfg: RunConfig, prep: Prepared, method) -> dict[str, Any]:
    """What determines a method's cached fit: the trained model, the fit data and the
    hyperparameters the one-time work depends on (`method.fit_fields`; e.g. Arnoldi's n
    but not p̄, so one fit serves every p̄)."""
    return {
        "trained": config_hash(prep.train_key),
        "method": cfg.method.name,
        "options": {k: getattr(method, k) for k in getattr(method, "fit_fields", ())},
        "layers": cfg.method.layers,
        "fit_batch_size": cfg.method.fit_batch_size,
        "fit_batches": cfg.method.fit_batches,
        "l2": cfg.train.l2,
        "seed": cfg.seed,
        # Left out while "sum", the only loss when fits were first cached.
        **(
            {} if cfg.method.sequence_loss == "sum" else {"sequence_loss": cfg.method.sequence_loss}
        ),
    }


def fit_method(cfg: RunConfig, prep: Prepared, method, task: Task):
    """The method's fitted state, and (fit seconds, whether the fit came from the cache).

    Methods with a cacheable spectrum (Arnoldi, RandProj, Exact) store it under
    `<cache_dir>/fits/`; the others (LISSA, TracIn) have no one-time work worth caching.
    """
    data, trained = prep.data, prep.trained
    if not method.cacheable:
        checkpoints = Checkpoints(trained.checkpoints, trained.checkpoint_lrs)
        start = time.perf_counter()
        batches = fit_batches(cfg, data)
        key = stream_key(cfg.seed, "method")
        state = method.fit(task, trained.params, batches, key, checkpoints)
        jax.block_until_ready(state)
        return state, time.perf_counter() - start, False
    view = ParamView.create(task, trained.params)
    cache = ArtifactCache(Path(cfg.paths.cache_dir), "fits")
    key = fit_key(cfg, prep, method)
    hit = cache.load(key)
    if hit is not None:
        arrays, info = hit
        log.info("Reusing the %s fit cached at %s", cfg.method.name, cache.path(key))
        return method.from_spectrum(view, Spectrum.from_arrays(arrays)), info["t_fit_s"], True
    start = time.perf_counter()
    batches = device_batches(fit_batches(cfg, data))
    spectrum = method.spectrum(view, batches, stream_key(cfg.seed, "method"))
    jax.block_until_ready(spectrum.vectors)
    t_fit = time.perf_counter() - start
    cache.save(key, spectrum.to_arrays(), {"t_fit_s": t_fit})
    return method.from_spectrum(view, spectrum), t_fit, False


def detection_metrics(is_noisy: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """AUC and AP of finding the noisy examples by ranking on `scores` (None when only one
    class is present)."""
    both = 0 < is_noisy.sum() < len(is_noisy)
    return {
        "auc": float(roc_auc_score(is_noisy, scores)) if both else None,
        "ap": float(average_precision_score(is_noisy, scores)) if both else None,
    }


def influence_stage(
    cfg: RunConfig, prep: Prepared, index: np.ndarray | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fits the method (cached), scores the training set (`index`, default
    `scored_subset`), evaluates against `is_noisy`."""
    method = make_method(cfg.method.name, **_method_options(cfg))
    task = make_task(cfg, prep)
    data = prep.data
    state, t_fit, hit = fit_method(cfg, prep, method, task)

    index = scored_subset(cfg, data) if index is None else index
    result = self_influence_scores(
        method,
        state,
        data.train_batch(index),
        batch_size=cfg.score.batch_size,
        progress=cfg.progress,
    )
    is_noisy = data.is_noisy[index]
    metrics = {
        **detection_metrics(is_noisy, result.scores),
        "t_fit_s": t_fit,
        "fit_cache_hit": hit,
        "t_score_s": result.seconds,
        "t_score_compile_s": result.compile_seconds,
        "examples_per_s": result.examples_per_s,
        "n_scored": len(index),
        "n_noisy_scored": int(is_noisy.sum()),
        "pbar": cfg.method.pbar,
        "fit_batch_size": cfg.method.fit_batch_size,
        "fit_batches": cfg.method.fit_batches,
        "n_perturbed_params": int(state.view.size),
    }
    if cfg.score.compare_examples is not None:
        compare = scored_subset(cfg, data, cfg.score.compare_examples)
        rows = np.searchsorted(index, compare)
        check(
            np.array_equal(index[np.minimum(rows, len(index) - 1)], compare),
            "score.compare_examples",
            "the comparison subset is not part of the scored examples",
        )
        found = detection_metrics(is_noisy[rows], result.scores[rows])
        metrics.update(auc_compare=found["auc"], ap_compare=found["ap"], n_compare=len(compare))
    if hasattr(state, "eigvals"):
        metrics["eigenvalues"] = np.asarray(state.eigvals, np.float64).tolist()
    return metrics, score_table(data, index, result.scores)


def pool_scores(
    cfg: RunConfig, prep: Prepared, pool: np.ndarray
) -> tuple[dict[str, Any], pd.DataFrame]:
    """`influence_stage` on the selection pool, cached under `<cache_dir>/scores/`: selections
    of several shares from the same scores (Table 3's 25% and 50% rows) score the corpus once.
    """
    cache = ArtifactCache(Path(cfg.paths.cache_dir), "scores")
    key = {
        "trained": config_hash(prep.train_key),
        "method": cfg.to_dict()["method"],  # every option, p̄ included
        "l2": cfg.train.l2,
        "seed": cfg.seed,
        "pool": fingerprint_arrays(pool),
    }
    hit = cache.load(key)
    if hit is not None:
        arrays, info = hit
        log.info("Reusing the self-influence scores cached at %s", cache.path(key))
        metrics = info["metrics"] | {"score_cache_hit": True}
        return metrics, score_table(prep.data, pool, arrays["self_influence"])
    metrics, scores = influence_stage(cfg, prep, index=pool)
    cache.save(key, {"self_influence": scores["self_influence"].to_numpy()}, {"metrics": metrics})
    return metrics | {"score_cache_hit": False}, scores


def selection_stage(cfg: RunConfig, prep: Prepared) -> tuple[dict[str, Any], pd.DataFrame]:
    """Data cleaning (Table 3): selects training pairs by `cfg.select`, trains a fresh model
    on them for `select.budget_long` steps and reports BLEU after both budgets, with the
    share of each noise kind the selection kept."""
    sel, data = cfg.select, prep.data
    n = data.n_train
    pool = np.arange(n)
    reasons = None
    if sel.method == "precleaning" or sel.after_precleaning:
        keep, reasons = pre_clean(data.train_pairs.source, data.train_pairs.target)
        pool = np.flatnonzero(keep)
    metrics: dict[str, Any] = {}
    scores = None
    start = time.perf_counter()
    if sel.method in ("random", "influence"):
        k = round(sel.fraction * n)
        check(
            1 <= k <= len(pool),
            "select.fraction",
            f"{sel.fraction} of {n} pairs is {k}, but {len(pool)} are available to select from",
        )
        if sel.method == "random":
            chosen = pool[random_selection(len(pool), seed=cfg.seed, count=k)]
        else:
            metrics, scores = pool_scores(cfg, prep, pool)
            values = scores["self_influence"].to_numpy()
            if sel.by_length:
                lengths = (data.target_train[pool] != PAD_ID).sum(axis=1)
                picked = lowest_scores_by_stratum(values, length_strata(lengths), k)
            else:
                picked = lowest_scores(values, count=k)
            chosen = pool[picked]
            scores["selected"] = np.isin(pool, chosen)
    else:  # all, or every pair pre-cleaning keeps
        chosen = pool
    t_select = time.perf_counter() - start

    selected = data.subset(chosen)
    judge = dataclasses.replace(cfg.train, steps=sel.budget_long, checkpoints=1)
    model = build_model(
        cfg.model.name, vocab_size=data.tokenizer.vocab_size, **cfg.model.hyperparameters()
    )
    key = {
        "scoring_model": config_hash(prep.train_key),
        "selection": fingerprint_arrays(chosen),
        "train": dataclasses.asdict(judge),
        "budgets": [sel.budget_short, sel.budget_long],
    }
    trained, hit = cached_training(
        lambda: train_translation(
            model,
            selected,
            judge,
            cfg.seed,
            progress=cfg.progress,
            evaluate_at=(sel.budget_short, sel.budget_long),
        ),
        ArtifactCache(Path(cfg.paths.cache_dir), "selected"),
        key,
    )
    bleu = {e["step"]: e["bleu"] for e in trained.info["evaluations"]}
    kinds = sorted(set(data.noise_kind))
    metrics |= {
        "select": dataclasses.asdict(sel),
        "n_selected": len(chosen),
        "selected_percent": 100.0 * len(chosen) / n,
        "n_pool": len(pool),
        "t_select_s": t_select,
        "kept_percent_by_kind": {
            k: 100.0 * float(np.isin(np.flatnonzero(data.noise_kind == k), chosen).mean())
            for k in kinds
        },
        "selection_percent_by_kind": {
            k: 100.0 * float(np.mean(selected.noise_kind == k)) for k in kinds
        },
        # How many pairs pre-cleaning kept and why it dropped the others.
        "precleaning_reasons": (
            None if reasons is None else dict(Counter(r or "kept" for r in reasons))
        ),
        "bleu_short": bleu.get(sel.budget_short),
        "bleu_long": bleu.get(sel.budget_long),
        "budget_short": sel.budget_short,
        "budget_long": sel.budget_long,
        "selected_train_time_s": trained.info["train_time_s"],
        "selected_train_cache_hit": hit,
    }
    return metrics, scores


def score_table(data: ImageData | TextData, index: np.ndarray, scores: np.ndarray):
    """scores.csv: one row per scored example, with what is needed to inspect it."""
    columns = {"example": index, "source_index": data.train_index[index]}
    if isinstance(data, TextData):
        columns |= {
            "noise_kind": data.noise_kind[index],
            "carries_reference_of": data.source_of[index],
            "source": [data.train_pairs.source[i] for i in index],
            "target": [data.train_pairs.target[i] for i in index],
            "clean_target": [data.clean_targets[i] for i in index],
        }
    else:
        columns |= {"label": data.y_train[index], "clean_label": data.y_train_clean[index]}
    return pd.DataFrame(columns | {"is_noisy": data.is_noisy[index], "self_influence": scores})


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
        "n_test": len(data_arrays(prep.data)[2]),
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
    }
    if isinstance(prep.data, TextData):
        metrics |= {
            "bleu": info.get("bleu"),
            "test_loss_per_token": info.get("test_loss_per_token"),
            "test_examples": info.get("test_examples"),
            "vocab_size": prep.data.tokenizer.vocab_size,
            "data_stats": prep.data.stats,
        }
        if cfg.method.name != "none":
            metrics["sequence_loss"] = cfg.method.sequence_loss
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.select.method is not None:
        select_metrics, scores = selection_stage(cfg, prep)
        metrics.update(select_metrics)
        metrics["method_options"] = dict(cfg.method.options)
        if scores is not None:
            scores.to_csv(run_dir / "scores.csv", index=False)
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
        method_metrics, scores = influence_stage(cfg, prep)
        metrics.update(method_metrics)
        metrics["method_options"] = dict(cfg.method.options)
        metrics["layers"] = cfg.method.layers
        scores.to_csv(run_dir / "scores.csv", index=False)
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
    # The resolved config beside the metrics: reports reload the run's data from it.
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info(
        "test accuracy %.4f (train %.1fs%s); metrics in %s",
        metrics["test_accuracy"],
        metrics["train_time_s"],
        ", cached" if prep.cache_hit else "",
        run_dir / "metrics.json",
    )
    return metrics
