"""Every cache key and its version, in one place.

A key is what determines a stored thing: a run reuses a stored thing exactly when its key is
equal. Machine-specific paths and display settings are left out; data enter by a content
fingerprint, so a moved data folder reuses the cache while changed data never do.

Bump a version when what determines its thing changes (or the layout of what is stored), so
that things stored before are not found (and are rebuilt once) instead of being misread.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ifscale.config import RunConfig
from ifscale.utils import config_hash, fingerprint_arrays

# Trained models (`<cache>/trained/`, an ArrayStore).
TRAINED_VERSION = 2
# Method fits: curvature spectra (`<cache>/fits/`, a SpectrumStore); 3: orbax spectra holding
# the top `keep` eigenvectors.
FIT_VERSION = 3
# Scores in chunks (`<cache>/scores/`, a ChunkStore); 4: chunks record their scoring's key.
SCORES_VERSION = 4
# The outputs of the models retrained on random subsets, the linear datamodeling score's
# ground truth (`<cache>/retrained/`, a ChunkStore).
RETRAINED_VERSION = 1
# The models retrained from other seeds for an ensemble (TRAK's, `<cache>/ensembles/`, a
# ChunkStore of flat parameters).
ENSEMBLE_VERSION = 1
# The models trained on a Table 3 selection, judged by BLEU (`<cache>/selected/`).
SELECTED_VERSION = 2
# SentencePiece models (`<cache>/tokenizers/`).
TOKENIZER_VERSION = 2

# Dataset fields that say where data are, not what they are.
_PATHS = ("data_dir", "path", "extra_path")
# Dataset fields added after models were stored, at their defaults: left out of the key, so
# those models are still found (what they change, the data's content, is fingerprinted).
_ADDED_AT_DEFAULT = {"subset_first": False, "normalize": None}


def training_key(cfg: RunConfig, data_fingerprint: str) -> dict[str, Any]:
    """What determines the trained parameters: the data (by content), the noise, the model,
    the training settings and the seed."""
    dataset = dataclasses.asdict(cfg.dataset)
    for path_key in _PATHS:
        dataset.pop(path_key, None)
    for key, default in _ADDED_AT_DEFAULT.items():
        if key in dataset and dataset[key] == default:
            dataset.pop(key)
    train = dataclasses.asdict(cfg.train)
    train.pop("log_every")  # cosmetic
    return {
        "dataset": dataset,
        "data_fingerprint": data_fingerprint,
        "noise": dataclasses.asdict(cfg.noise),
        "model": dataclasses.asdict(cfg.model),
        "train": train,
        "seed": cfg.seed,
    }


def fit_key(cfg: RunConfig, trained: str, fit_options: dict[str, Any]) -> dict[str, Any]:
    """What determines a method's stored spectrum: the trained model (`trained`, the hash of
    its key), the fit data and the hyperparameters the spectrum depends on (`fit_options`,
    the method's `fit_fields`: e.g. Arnoldi's n but not p̄, so one fit serves every p̄)."""
    return {
        "trained": trained,
        "method": cfg.method.name,
        # block 1 is the one-vector fit, curvature "hessian" the Hessian and basis_dtype
        # null the parameters' dtype, bit for bit: the keys stored before those options
        # existed stay valid.
        "options": {
            k: v
            for k, v in fit_options.items()
            if (k, v) not in (("block", 1), ("curvature", "hessian"), ("basis_dtype", None))
        },
        "layers": cfg.method.layers,
        "fit_batch_size": cfg.method.fit_batch_size,
        "fit_batches": cfg.method.fit_batches,
        "sequence_loss": cfg.method.sequence_loss,
        "l2": cfg.train.l2,
        "seed": cfg.seed,
    }


# Method options added after scores were stored, at their defaults: left out of the score
# key, so those scores are still found (at the default they change no score).
_OPTIONS_ADDED_AT_DEFAULT = {
    "arnoldi": {"damping": 0.0, "tail": None, "basis_dtype": None},
    "randproj": {"tail": None},
    "exact": {"tail": None},
}


def score_keys(
    cfg: RunConfig, trained: str, method: dict[str, Any], index: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what determines the scoring function: the trained model, every method option (p̄
    included, `method` as in config.json), the l2 term, the seed; what determines the scored
    examples: their indices)."""
    added = _OPTIONS_ADDED_AT_DEFAULT.get(method.get("name"), {})
    method = {k: v for k, v in method.items() if not (k in added and v == added[k])}
    method_key = {"trained": trained, "method": method, "l2": cfg.train.l2, "seed": cfg.seed}
    return method_key, {"index": fingerprint_arrays(index)}


def retrained_keys(
    cfg: RunConfig, data_fingerprint: str, test_index: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what determines one retrained model's outputs: everything that determines training
    (`training_key`: its seeds derive from the run's) and what is measured; what determines
    the rows: the subsets (count, share), the seeds per subset, the measured test
    examples)."""
    method_key = training_key(cfg, data_fingerprint) | {"output": cfg.lds.output}
    data_key = {
        "subsets": cfg.lds.subsets,
        "fraction": cfg.lds.fraction,
        "seeds": cfg.lds.seeds,
        "test": fingerprint_arrays(test_index),
    }
    return method_key, data_key


def ensemble_keys(
    cfg: RunConfig, data_fingerprint: str, fraction: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what determines a retrained model of an ensemble: everything that determines
    training (its seed derives from the run's and its position); what determines the
    models: the share of the training set each sees). Not the ensemble's size: model j is
    the same in every ensemble, so a larger one reuses a smaller one's models."""
    return training_key(cfg, data_fingerprint), {"fraction": fraction}


def selection_key(
    trained: str, chosen: np.ndarray, train: dict[str, Any], budgets: tuple[int, int]
) -> dict[str, Any]:
    """What determines a model trained on a selection: the scoring model, the selected
    pairs, the training settings and the budgets at which it is judged."""
    return {
        "scoring_model": trained,
        "selection": fingerprint_arrays(chosen),
        "train": train,
        "budgets": list(budgets),
    }


def tokenizer_key(sentences: list[str], vocab_size: int, seed: int) -> dict[str, Any]:
    """What determines a SentencePiece model: its training text, vocabulary size, seed."""
    return {"text": config_hash(sentences), "vocab_size": vocab_size, "seed": seed}
