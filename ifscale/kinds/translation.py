"""German→English translation with the Transformer: the data kind of Tables 2 and 3.

Training, greedy translation, BLEU, and the influence task of a sentence pair: the summed
(or, with `sequence_loss="mean"`, the mean) token cross-entropy of the reference given the
source (padding masked), the same `Task` interface as the image classifiers, so every
influence method and the scoring engine are shared.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifscale.cache.arrays import ArrayStore
from ifscale.cache.keys import TOKENIZER_VERSION, tokenizer_key
from ifscale.config import DataConfig
from ifscale.data.text import (
    LENGTH_POLICIES,
    TEXT_SOURCES,
    TextData,
    Tokenizer,
    load_translation,
    train_tokenizer,
)
from ifscale.influence.task import Task
from ifscale.kinds import DataKind
from ifscale.models import TRANSLATION_MODELS, build_model
from ifscale.models.transformer import (
    PAD_ID,
    SUBSET_NAMES,
    Transformer,
    greedy_decode,
    named_subsets,
    pair_losses,
    token_losses,
)
from ifscale.train import TrainConfig, TrainedModel, train_loop
from ifscale.utils import ConfigError, check, stream_key


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


def resolve_layers(model: Transformer, layers) -> tuple[str, ...] | None:
    """Path prefixes of `layers`: a subset name of the model ("all", "last3_decoder"),
    prefixes, or None (all)."""
    if not isinstance(layers, str):
        return layers
    subsets = named_subsets(model)
    if layers not in subsets:
        raise ConfigError(f"method.layers: unknown subset {layers!r}; choose from {list(subsets)}")
    return subsets[layers]


def translation_task(
    model: Transformer, layers=None, l2: float = 0.0, sequence_loss: str = "sum"
) -> Task:
    """Per-example loss of a sentence pair batch (source ids, target ids): the token
    cross-entropy of the target (dropout off), summed over its tokens ("sum") or their
    "mean" (length-normalised)."""

    def loss(params, batch):
        source, target = batch
        logits = model.apply({"params": params}, source, target)
        return pair_losses(logits, target, sequence_loss)

    return Task(loss=loss, layers=resolve_layers(model, layers), l2=l2)


def stored_tokenizer(cache_dir: str | os.PathLike) -> Callable[[list[str], int], Tokenizer]:
    """`train_tokenizer`, with its models stored under `<cache_dir>/tokenizers/` keyed by
    text and size (`ifscale.cache`): a truncated or damaged model is refused and trained
    again, never used."""
    store = ArrayStore(cache_dir, "tokenizers", TOKENIZER_VERSION)

    def tokenizer(sentences: list[str], vocab_size: int) -> Tokenizer:
        found, _ = store.get_or_build(
            tokenizer_key(sentences, vocab_size, seed=0),
            lambda: train_tokenizer(sentences, vocab_size),
            lambda t: ({"model": np.frombuffer(t.model_proto, np.uint8)}, {}),
            lambda arrays, info: Tokenizer(arrays["model"].tobytes()),
        )
        return found

    return tokenizer


def init_translation_params(model: Transformer, data: TextData, seed: int):
    example = data.source_train[:1], data.target_train[:1]
    return model.init(stream_key(seed, "init"), *example)["params"]


def _batched(arrays, batch_size: int):
    """Yields (rows, padded batch): equal-sized batches (one compilation), the last padded
    with copies of row 0."""
    n = len(arrays[0])
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        batch = []
        for a in arrays:
            part = a[start : start + rows]
            if rows < batch_size:
                part = np.concatenate([part, np.repeat(a[:1], batch_size - rows, axis=0)])
            batch.append(part)
        yield rows, tuple(batch)


def translate(
    model: Transformer, params, data: TextData, source: np.ndarray, batch_size: int = 200
) -> list[str]:
    """Greedy translations of the source id rows, as text."""
    out = []
    for rows, (src,) in _batched((source,), min(batch_size, len(source))):
        ids = greedy_decode(model, params, jnp.asarray(src), source.shape[1])
        out.extend(data.tokenizer.decode(np.asarray(ids)[:rows]))
    return out


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacreBLEU's default 13a tokenisation)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def test_metrics(model: Transformer, params, data: TextData, batch_size: int = 200) -> dict:
    """Teacher-forced token accuracy and loss on the test split, and greedy BLEU."""

    @jax.jit
    def counts(params, source, target):
        logits = model.apply({"params": params}, source, target)
        mask = target != PAD_ID
        correct = (jnp.argmax(logits, -1) == target) & mask
        return correct.sum(), mask.sum(), token_losses(logits, target).sum()

    correct = tokens = loss = 0.0
    size = min(batch_size, len(data.source_test))
    for rows, (src, tgt) in _batched((data.source_test, data.target_test), size):
        tgt = tgt.copy()
        tgt[rows:] = PAD_ID  # padding rows count nothing
        c, t, sl = counts(params, jnp.asarray(src), jnp.asarray(tgt))
        correct, tokens, loss = correct + float(c), tokens + float(t), loss + float(sl)
    hypotheses = translate(model, params, data, data.source_test, batch_size)
    return {
        "test_accuracy": correct / tokens,  # next-token accuracy given the reference prefix
        "test_loss_per_token": loss / tokens,
        "bleu": bleu(hypotheses, list(data.test_pairs.target)),
        "test_examples": [
            {"source": s, "reference": r, "translation": h}
            for s, r, h in zip(
                data.test_pairs.source[:5], data.test_pairs.target[:5], hypotheses[:5], strict=True
            )
        ],
    }


def train_translation(
    model: Transformer,
    data: TextData,
    cfg: TrainConfig,
    seed: int,
    progress: bool = True,
    evaluate_at: tuple[int, ...] = (),
) -> TrainedModel:
    """Trains on the (noisy) training pairs with the mean token cross-entropy (dropout
    on), then measures `test_metrics` (also after each step count in `evaluate_at`)."""

    def loss_fn(params, batch, key):
        source, target = batch
        logits = model.apply({"params": params}, source, target, train=True, rngs={"dropout": key})
        losses = token_losses(logits, target)
        return losses.sum() / jnp.maximum((target != PAD_ID).sum(), 1)

    params = init_translation_params(model, data, seed)
    return train_loop(
        params,
        loss_fn,
        (data.source_train, data.target_train),
        cfg,
        seed,
        evaluate=lambda p: test_metrics(model, p, data),
        progress=progress,
        evaluate_at=evaluate_at,
    )


class TranslationKind(DataKind):
    """Sentence pairs (source ids, target ids); noise permutes references or adds crawl
    noise."""

    name: ClassVar[str] = "translation"
    models: ClassVar[tuple[str, ...]] = tuple(TRANSLATION_MODELS)
    noise_kinds: ClassVar[tuple[str, ...]] = ("none", "permute", "crawl")

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

    def write_explanations(self, folder, table, data: TextData) -> list[str]:
        from ifscale.reports.explain import text_explanations

        (Path(folder) / "explanations.md").write_text(text_explanations(table))
        return ["explanations.md"]

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
