"""The Transformer on sentence pairs: its influence task, training, greedy translation and
BLEU, and the stored SentencePiece model.

The influence task of a sentence pair is the summed (or, with `sequence_loss="mean"`, the
mean) token cross-entropy of the reference given the source (padding masked): the same
`Task` interface as the image classifiers, so every influence method and the scoring engine
are shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ifscale.cache.arrays import ArrayStore
from ifscale.cache.keys import TOKENIZER_VERSION, tokenizer_key
from ifscale.config import TrainConfig
from ifscale.data.text import TextData, Tokenizer, train_tokenizer
from ifscale.influence.layerwise import FlaxLayerwise
from ifscale.influence.task import Task
from ifscale.models.transformer import (
    PAD_ID,
    Transformer,
    greedy_decode,
    named_subsets,
    pair_losses,
    token_losses,
)
from ifscale.train import TrainedModel, train_loop
from ifscale.utils import ConfigError, stream_key


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

    def outputs(params, batch):  # [b, T, vocab] logits, teacher-forced
        source, target = batch
        return model.apply({"params": params}, source, target)

    def loss_from_outputs(logits, batch):
        return pair_losses(logits, batch[1], sequence_loss)

    def loss(params, batch):
        return loss_from_outputs(outputs(params, batch), batch)

    def sample_targets(params, batch, key):
        """Each target token drawn from the model's distribution given the true prefix
        (padding kept)."""
        source, target = batch
        drawn = jax.random.categorical(key, outputs(params, batch)).astype(target.dtype)
        return source, jnp.where(target == PAD_ID, target, drawn)

    return Task(
        loss=loss,
        layers=resolve_layers(model, layers),
        l2=l2,
        # x and δ of every Dense and attention projection (K-FAC's factors).
        layerwise=FlaxLayerwise(model, loss_from_outputs, lambda b: (b[0], b[1]), unpack=True),
        outputs=outputs,
        loss_from_outputs=loss_from_outputs,
        sample_targets=sample_targets,
    )


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
