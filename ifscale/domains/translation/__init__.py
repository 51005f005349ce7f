"""The translation domain: German→English sentence pairs and the Transformer, the data of
Tables 2 and 3 (`training`: the model's task, training, translation and BLEU; `cleaning` and
`selection`: Table 3's data cleaning, `stage=select`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import flax.linen as nn
import numpy as np

from ifscale.config import DataConfig
from ifscale.data.text import LENGTH_POLICIES, TEXT_SOURCES, TextData, load_translation
from ifscale.domains.base import Domain
from ifscale.domains.translation.selection import select_and_judge
from ifscale.domains.translation.training import (
    bleu,
    init_translation_params,
    resolve_layers,
    stored_tokenizer,
    train_translation,
    translate,
    translation_task,
)
from ifscale.influence.task import Task
from ifscale.models import TRANSLATION_MODELS, build_model
from ifscale.models.transformer import SUBSET_NAMES, Transformer
from ifscale.utils import check

__all__ = [
    "TextDataConfig",
    "TranslationDomain",
    "bleu",
    "resolve_layers",
    "stored_tokenizer",
    "translate",
    "translation_task",
]


@dataclasses.dataclass
class TextDataConfig(DataConfig):
    """German→English sentence pairs (`ifscale.data.text`).

    Attributes:
      source: "parallel_text" (a folder `path` of {train,val,test}.{de,en}) | "tfds"
        (WMT17) | "paracrawl".
      train_size, test_size: keep the first pairs of each split (null: all).
      vocab_size: joint SentencePiece vocabulary.
      max_length: tokens per sentence, EOS included.
      extra_path, extra_train_size: another corpus folder whose first training pairs are
        appended (mixed domains, Table 3).
      length_policy: training pairs over max_length are "drop"ped or "truncate"d.
    """

    kind: str = "translation"
    name: str = "parallel_text"
    source: str = "parallel_text"
    train_size: int | None = None
    test_size: int | None = None
    vocab_size: int = 4000
    max_length: int = 64
    extra_path: str | None = None
    extra_train_size: int | None = None
    length_policy: str = "drop"

    KIND: ClassVar[str] = "translation"

    def __post_init__(self):
        super().__post_init__()
        check(
            self.source in TEXT_SOURCES,
            "dataset.source",
            f"text data: must be one of {TEXT_SOURCES}, got {self.source!r}",
        )
        for key in ("train_size", "test_size", "extra_train_size"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"dataset.{key}", "must be >= 1 or null")
        check(self.vocab_size >= 8, "dataset.vocab_size", "must be >= 8")
        check(self.max_length >= 2, "dataset.max_length", "must be >= 2")
        check(
            self.length_policy in LENGTH_POLICIES,
            "dataset.length_policy",
            f"must be one of {LENGTH_POLICIES}, got {self.length_policy!r}",
        )
        if self.source == "parallel_text":
            check(self.path is not None, "dataset.path", "parallel_text needs a folder")
            check(Path(self.path).is_dir(), "dataset.path", f"{self.path} is not a folder")
        if self.extra_path is not None:
            check(
                Path(self.extra_path).is_dir(),
                "dataset.extra_path",
                f"{self.extra_path} is not a folder",
            )


class TranslationDomain(Domain):
    """Sentence pairs (source ids, target ids); noise permutes references or adds crawl
    noise."""

    name: ClassVar[str] = "translation"
    models: ClassVar[tuple[str, ...]] = tuple(TRANSLATION_MODELS)
    noise_kinds: ClassVar[tuple[str, ...]] = ("none", "permute", "crawl")
    selects: ClassVar[bool] = True

    def check(self, cfg) -> None:
        super().check(cfg)
        check(
            not isinstance(cfg.method.layers, str) or cfg.method.layers in SUBSET_NAMES,
            "method.layers",
            f"unknown subset {cfg.method.layers!r}; choose from {list(SUBSET_NAMES)} or give "
            "path prefixes",
        )
        check(
            cfg.method.name != "el2n",
            "method.name",
            "el2n is defined for classifiers (images); for translation use loss "
            "(method.sequence_loss=sum or mean)",
        )

    def load(self, cfg) -> TextData:
        d = cfg.dataset
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
            tokenizer_fn=stored_tokenizer(cfg.paths.cache_dir),
            noise_shares=cfg.noise.shares,
            extra_path=d.extra_path,
            extra_train_size=d.extra_train_size,
            length_policy=d.length_policy,
        )

    def init_params(self, model: nn.Module, data: TextData, seed: int):
        return init_translation_params(model, data, seed)

    def arrays(self, data: TextData) -> tuple[np.ndarray, ...]:
        return data.source_train, data.target_train, data.source_test, data.target_test

    def n_test(self, data: TextData) -> int:
        return len(data.source_test)

    def build_model(self, cfg, data: TextData) -> nn.Module:
        return build_model(
            cfg.model.name, vocab_size=data.tokenizer.vocab_size, **cfg.model.hyperparameters()
        )

    def train(self, model, data: TextData, train_cfg, seed, progress=True, evaluate_at=()):
        return train_translation(model, data, train_cfg, seed, progress, evaluate_at)

    def task(self, model: Transformer, cfg) -> Task:
        return translation_task(model, cfg.method.layers, cfg.train.l2, cfg.method.sequence_loss)

    def test_batch(self, data: TextData, index: np.ndarray):
        return data.source_test[index], data.target_test[index]

    def test_columns(self, model, params, data: TextData, index) -> dict[str, Any]:
        index = np.asarray(index)
        return {
            "test_source": [data.test_pairs.source[i] for i in index],
            "test_reference": [data.test_pairs.target[i] for i in index],
            "test_translation": translate(model, params, data, data.source_test[index]),
        }

    def select(self, cfg, prep, score_pool):
        return select_and_judge(cfg, prep, score_pool)

    def score_columns(self, data: TextData, index: np.ndarray) -> dict[str, Any]:
        return {
            "noise_kind": data.noise_kind[index],
            "carries_reference_of": data.source_of[index],
            "source": [data.train_pairs.source[i] for i in index],
            "target": [data.train_pairs.target[i] for i in index],
            "clean_target": [data.clean_targets[i] for i in index],
        }

    def run_metrics(self, cfg, data: TextData, info: dict[str, Any]) -> dict[str, Any]:
        metrics = {
            "bleu": info.get("bleu"),
            "test_loss_per_token": info.get("test_loss_per_token"),
            "test_examples": info.get("test_examples"),
            "vocab_size": data.tokenizer.vocab_size,
            "data_stats": data.stats,
        }
        if cfg.method.name != "none":
            metrics["sequence_loss"] = cfg.method.sequence_loss
        return metrics
