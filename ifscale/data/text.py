"""German→English translation data: a corpus (`ifscale.data.corpora`), its noise, and
SentencePiece ids.

The pipeline: read -> take the first `train_size` training pairs -> permute a `rate` share
of the references (the noise whose pairs self-influence should find) -> train (or reuse) a
joint SentencePiece model on the noisy training text -> ids, dropping training pairs longer
than `max_length` tokens (counted).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable

import numpy as np

from ifscale.data.corpora import (
    TEXT_SOURCES,
    ParallelSplit,
    read_corpus,
    read_lines,
    read_parallel_text,
)
from ifscale.data.crawl_noise import add_crawl_noise
from ifscale.data.noise import permute_references
from ifscale.utils import ConfigError, check

log = logging.getLogger(__name__)

__all__ = [
    "TEXT_SOURCES",
    "ParallelSplit",
    "TextData",
    "Tokenizer",
    "load_translation",
    "read_corpus",
    "read_lines",
    "read_parallel_text",
    "to_ids",
    "train_tokenizer",
]
# Token ids shared with `ifscale.models.transformer`.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
    """A SentencePiece model (joint source/target vocabulary, pad 0, unk 1, bos 2, eos 3)."""

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, sentences: list[str]) -> list[list[int]]:
        """Token ids of each sentence, without BOS/EOS."""
        return self._sp.encode(list(sentences))

    def decode(self, ids) -> list[str]:
        """Sentences from id rows; stops at the first EOS and skips padding."""
        out = []
        for row in np.asarray(ids).tolist():
            if EOS_ID in row:
                row = row[: row.index(EOS_ID)]
            out.append(self._sp.decode([t for t in row if t > EOS_ID]))
        return out


def train_tokenizer(sentences: list[str], vocab_size: int, seed: int = 0) -> Tokenizer:
    """Trains a joint BPE SentencePiece model on `sentences` (deterministic: one thread)."""
    import sentencepiece as spm

    check(vocab_size >= 8, "dataset.vocab_size", f"must be >= 8, got {vocab_size}")
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=out,
            vocab_size=vocab_size,
            model_type="bpe",
            character_coverage=1.0,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:  # e.g. a vocabulary larger than the text allows
        raise ConfigError(f"dataset.vocab_size: SentencePiece training failed: {e}") from None
    return Tokenizer(out.getvalue())


def to_ids(tokenizer: Tokenizer, sentences: list[str], max_length: int):
    """[n, max_length] int32 ids (EOS-terminated, 0-padded) and the [n] token counts
    including EOS before truncation (rows longer than `max_length` are cut)."""
    encoded = tokenizer.encode(sentences)
    lengths = np.array([len(e) + 1 for e in encoded], np.int64)
    ids = np.zeros((len(encoded), max_length), np.int32)
    for i, row in enumerate(encoded):
        row = [*row, EOS_ID][:max_length]
        ids[i, : len(row)] = row
    return ids, lengths


@dataclasses.dataclass(frozen=True)
class TextData:
    """Tokenised translation data with its permutation noise.

    Attributes:
      source_train, target_train: [n, max_length] int32 ids (EOS-terminated, 0-padded).
      source_test, target_test: the same for the test split (long sentences truncated).
      train_pairs: the (noisy) training text behind the ids.
      clean_targets: each training pair's own reference, before the noise.
      test_pairs: the clean test text (references for BLEU).
      is_noisy: [n] which training pairs are noisy (their reference is not their own).
      noise_kind: [n] "clean", "permuted", or the crawl-noise kind of each pair.
      source_of: [n] the training row whose reference each pair carries (permutation
        noise; -1 where that row was dropped).
      train_index: [n] position of each pair in the corpus's training split.
      tokenizer: the SentencePiece model.
      stats: counts of dropped and truncated pairs.
    """

    source_train: np.ndarray
    target_train: np.ndarray
    source_test: np.ndarray
    target_test: np.ndarray
    train_pairs: ParallelSplit
    clean_targets: list[str]
    test_pairs: ParallelSplit
    is_noisy: np.ndarray
    noise_kind: np.ndarray
    source_of: np.ndarray
    train_index: np.ndarray
    tokenizer: Tokenizer
    stats: dict

    @property
    def n_train(self) -> int:
        return len(self.source_train)

    def train_batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.source_train[index], self.target_train[index]

    def subset(self, index: np.ndarray) -> TextData:
        """The same data with only the training pairs at `index` (a selection)."""
        index = np.asarray(index)
        return dataclasses.replace(
            self,
            source_train=self.source_train[index],
            target_train=self.target_train[index],
            train_pairs=ParallelSplit(
                [self.train_pairs.source[i] for i in index],
                [self.train_pairs.target[i] for i in index],
            ),
            clean_targets=[self.clean_targets[i] for i in index],
            is_noisy=self.is_noisy[index],
            noise_kind=self.noise_kind[index],
            source_of=np.full(len(index), -1),
            train_index=self.train_index[index],
        )


LENGTH_POLICIES = ("drop", "truncate")


def load_translation(
    source: str = "parallel_text",
    path: str | None = None,
    data_dir: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    vocab_size: int = 4000,
    max_length: int = 64,
    noise_kind: str = "none",
    noise_rate: float = 0.0,
    seed: int = 0,
    tokenizer_fn: Callable[[list[str], int], Tokenizer] = train_tokenizer,
    noise_shares: dict[str, float] | None = None,
    extra_path: str | None = None,
    extra_train_size: int | None = None,
    length_policy: str = "drop",
) -> TextData:
    """Reads a German→English corpus, adds noise, tokenises.

    Args:
      source, path, data_dir: see the module docstring.
      train_size: keep the first this many training pairs (null: all).
      test_size: keep the first this many test pairs (null: all). The test split is
        `test`, or `val` when the corpus has no test split.
      vocab_size: SentencePiece vocabulary (joint German/English).
      max_length: tokens per sentence including EOS; longer test sources are truncated.
      noise_kind: "none", "permute" (a `noise_rate` share of references permuted) or
        "crawl" (`ifscale.data.crawl_noise`, a share per kind in `noise_shares`).
      seed: seeds the noise.
      tokenizer_fn: trains the tokenizer from the training text and the vocabulary size
        (default `train_tokenizer`; a run passes one that stores it, see
        `ifscale.kinds.translation.stored_tokenizer`).
      extra_path, extra_train_size: another `parallel_text` folder whose first
        `extra_train_size` training pairs are appended (a corpus of mixed domains).
      length_policy: training pairs over `max_length` tokens are dropped ("drop") or cut
        ("truncate": noise that makes pairs long stays in the corpus).
    """
    splits = read_corpus(source, path, data_dir, train_size)
    train = splits["train"]
    if train_size is not None:
        if train_size > len(train):  # not an error (a cap), but never silent
            log.warning(
                "dataset.train_size=%d but the corpus has %d training pairs: using all %d",
                train_size,
                len(train),
                len(train),
            )
        train = ParallelSplit(train.source[:train_size], train.target[:train_size])
    if extra_path is not None:
        extra = read_parallel_text(extra_path, splits=("train",))["train"]
        size = len(extra) if extra_train_size is None else extra_train_size
        train = ParallelSplit(
            train.source + extra.source[:size], train.target + extra.target[:size]
        )
    test = splits.get("test") or splits["val"]
    if test_size is not None:
        test = ParallelSplit(test.source[:test_size], test.target[:test_size])
    n = len(train)
    if noise_kind == "permute":
        targets, is_noisy, source_of = permute_references(train.target, noise_rate, seed)
        kind = np.where(is_noisy, "permuted", "clean")
    elif noise_kind == "crawl":
        crawl = add_crawl_noise(train.source, train.target, noise_shares or {}, seed)
        targets, is_noisy, kind, source_of = crawl.target, crawl.is_noisy, crawl.kind, np.arange(n)
    else:
        targets, is_noisy, source_of = list(train.target), np.zeros(n, bool), np.arange(n)
        kind = np.full(n, "clean")

    tokenizer = tokenizer_fn([*train.source, *targets], vocab_size)
    src, src_len = to_ids(tokenizer, train.source, max_length)
    tgt, tgt_len = to_ids(tokenizer, targets, max_length)
    too_long = (src_len > max_length) | (tgt_len > max_length)
    keep = np.flatnonzero(~too_long) if length_policy == "drop" else np.arange(n)
    if len(keep) == 0:
        raise ConfigError(f"dataset.max_length: every training pair is over {max_length} tokens")
    src_test, src_test_len = to_ids(tokenizer, test.source, max_length)
    tgt_test, tgt_test_len = to_ids(tokenizer, test.target, max_length)
    stats = {
        "train_pairs_requested": train_size,
        "train_pairs_read": n,
        "train_pairs_dropped_too_long": int(n - len(keep)),
        "noisy_pairs_dropped_too_long": int(is_noisy.sum() - is_noisy[keep].sum()),
        "train_pairs_truncated": int(too_long.sum()) if length_policy == "truncate" else 0,
        "test_pairs": len(test),
        "test_sources_truncated": int((src_test_len > max_length).sum()),
        "test_targets_truncated": int((tgt_test_len > max_length).sum()),
    }
    if stats["train_pairs_dropped_too_long"]:
        log.info(
            "Dropped %d of %d training pairs over %d tokens",
            stats["train_pairs_dropped_too_long"],
            n,
            max_length,
        )
    # Rows of `source_of` refer to corpus positions; map them to kept rows where possible.
    row_of = np.full(n, -1)
    row_of[keep] = np.arange(len(keep))
    return TextData(
        source_train=src[keep],
        target_train=tgt[keep],
        source_test=src_test,
        target_test=tgt_test,
        train_pairs=ParallelSplit([train.source[i] for i in keep], [targets[i] for i in keep]),
        clean_targets=[train.target[i] for i in keep],
        test_pairs=test,
        is_noisy=is_noisy[keep],
        noise_kind=np.asarray(kind)[keep].astype(str),
        source_of=row_of[source_of[keep]],
        train_index=keep,
        tokenizer=tokenizer,
        stats=stats,
    )
