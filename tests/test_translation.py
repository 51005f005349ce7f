"""The translation experiment: tokeniser, data, Transformer, per-pair loss, layer subsets,
the whole pipeline on a slice of the real Multi30k."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ifscale.cache.keys import fit_key
from ifscale.data.text import (
    EOS_ID,
    PAD_ID,
    load_translation,
    read_parallel_text,
    to_ids,
    train_tokenizer,
)
from ifscale.domains.translation import bleu, resolve_layers, stored_tokenizer, translation_task
from ifscale.influence.methods import make_method
from ifscale.influence.task import ParamView
from ifscale.models import build_model
from ifscale.models.transformer import greedy_decode, pair_losses
from ifscale.run.compose import from_dict
from ifscale.run.pipeline import run
from ifscale.utils import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": 32, "heads": 2, "hidden": 64, "encoder_layers": 1, "decoder_layers": 4}


@pytest.fixture(scope="module")
def multi30k() -> Path:
    folder = Path(os.environ.get("IFSCALE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    folder = folder / "multi30k"
    if not (folder / "train.de").exists():
        pytest.fail(f"the shared Multi30k corpus is not at {folder} (set IFSCALE_SHARED_DATA)")
    return folder


@pytest.fixture(scope="module")
def small_corpus(multi30k, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return load_translation(
        "parallel_text",
        path=str(multi30k),
        train_size=400,
        test_size=20,
        vocab_size=400,
        max_length=24,
        noise_kind="permute",
        noise_rate=0.1,
        seed=0,
        tokenizer_fn=stored_tokenizer(cache),
    )


def test_tokenizer_round_trips_real_sentences(multi30k, tmp_path):
    corpus = read_parallel_text(multi30k)["train"]
    text = [*corpus.source[:2000], *corpus.target[:2000]]
    tokenizer = stored_tokenizer(tmp_path)(text, 500)
    ids, lengths = to_ids(tokenizer, text[:300], max_length=200)
    # Lossless on text it was trained on, up to SentencePiece's whitespace normalisation
    # (runs of spaces collapse: the corpus has a few double spaces).
    assert tokenizer.decode(ids) == [" ".join(t.split()) for t in text[:300]]
    assert tokenizer.vocab_size == 500
    # EOS ends each row; padding (0) follows; the counted length includes EOS.
    for row, n in zip(ids, lengths, strict=True):
        assert row[n - 1] == EOS_ID and np.all(row[n:] == PAD_ID) and np.all(row[: n - 1] > EOS_ID)
    # Cached: the same model comes back from the file, and another size is another model.
    assert stored_tokenizer(tmp_path)(text, 500).model_proto == tokenizer.model_proto
    stored = list((tmp_path / "tokenizers").glob("*/0000.npy"))
    assert len(stored) == 1
    assert stored_tokenizer(tmp_path)(text, 400).vocab_size == 400
    # A truncated or edited stored model is refused and trained again, never used.
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:-1] + bytes([b[-1] ^ 1])):
        stored[0].write_bytes(damage(stored[0].read_bytes()))
        assert stored_tokenizer(tmp_path)(text, 500).model_proto == tokenizer.model_proto


def test_tokenizer_errors_name_the_key():
    with pytest.raises(ConfigError, match="dataset.vocab_size"):
        train_tokenizer(["ein Hund", "a dog"], 5000)


def test_load_translation_permutes_counts_and_drops_long_pairs(small_corpus, multi30k):
    data = small_corpus
    raw = read_parallel_text(multi30k)["train"]
    stats = data.stats
    assert stats["train_pairs_read"] == 400
    assert data.n_train == 400 - stats["train_pairs_dropped_too_long"]
    assert stats["train_pairs_dropped_too_long"] > 0  # 24 tokens is tight on purpose
    assert data.is_noisy.sum() == 40 - stats["noisy_pairs_dropped_too_long"]
    # Ground truth: a pair is noisy exactly when its reference is not its own.
    for row, i in enumerate(data.train_index):
        assert data.train_pairs.source[row] == raw.source[i]
        assert (data.train_pairs.target[row] != raw.target[i]) == data.is_noisy[row]
        if data.source_of[row] >= 0:  # the pair whose reference it carries was kept
            assert data.train_pairs.target[row] == raw.target[data.train_index[data.source_of[row]]]
    # The ids are the tokenised text, every kept pair within the limit.
    assert data.source_train.shape == data.target_train.shape == (data.n_train, 24)
    assert np.all((data.target_train == EOS_ID).sum(1) == 1)
    assert data.tokenizer.decode(data.target_train[:5]) == [
        " ".join(t.split()) for t in data.train_pairs.target[:5]
    ]
    assert len(data.test_pairs) == 20 and data.source_test.shape == (20, 24)


def test_load_translation_is_deterministic(small_corpus, multi30k, tmp_path):
    again = load_translation(
        "parallel_text",
        path=str(multi30k),
        train_size=400,
        test_size=20,
        vocab_size=400,
        max_length=24,
        noise_kind="permute",
        noise_rate=0.1,
        seed=0,
        tokenizer_fn=stored_tokenizer(tmp_path),  # a fresh tokenizer: deterministic too
    )
    np.testing.assert_array_equal(again.target_train, small_corpus.target_train)
    np.testing.assert_array_equal(again.is_noisy, small_corpus.is_noisy)


def test_wmt17_tfds_loader_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    from ifscale.data.corpora import load_wmt17_tfds

    with tfds.testing.mock_data(num_examples=12):
        splits = load_wmt17_tfds(None, train_size=8)
    assert len(splits["train"]) == 8
    assert {"train", "val", "test"} <= set(splits)
    assert all(isinstance(s, str) for s in splits["train"].source + splits["test"].target)


def _tiny(vocab_size: int, **changes):
    return build_model("transformer_tiny", vocab_size=vocab_size, **{**TINY, **changes})


@pytest.mark.slow  # end to end, minutes: make test-slow
def test_tiny_transformer_learns_to_copy():
    """The architecture, masks, shifting and greedy decoding work together: the tiny
    model learns to copy random sequences of varying length."""
    vocab, length = 12, 8
    rng = np.random.default_rng(0)

    def batch(n):
        lengths = rng.integers(2, length - 1, n)
        src = np.zeros((n, length), np.int32)
        for i, k in enumerate(lengths):
            src[i, :k] = rng.integers(4, vocab, k)
            src[i, k] = EOS_ID
        return src, src.copy()

    model = _tiny(vocab, width=64, hidden=128, dropout=0.0)
    src, tgt = batch(2)
    params = model.init(jax.random.key(0), src, tgt)["params"]
    tx = optax.adam(3e-3)
    state = tx.init(params)

    @jax.jit
    def step(params, state, src, tgt):
        loss, grads = jax.value_and_grad(
            lambda p: pair_losses(model.apply({"params": p}, src, tgt), tgt).mean()
        )(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(500):
        params, state, loss = step(params, state, *batch(64))
    src, tgt = batch(200)
    out = np.asarray(greedy_decode(model, params, jnp.asarray(src), length))
    exact = np.mean(np.all(out == tgt, axis=1))
    assert exact > 0.9, f"copied {exact:.0%} of sequences exactly (loss {float(loss):.3f})"


def test_padded_batch_loss_equals_each_pair_alone(small_corpus):
    data = small_corpus
    model = _tiny(data.tokenizer.vocab_size)
    src, tgt = data.source_train[:4], data.target_train[:4]
    params = model.init(jax.random.key(1), src, tgt)["params"]
    loss = jax.jit(translation_task(model).loss)  # one compilation per shape, not op by op
    together = np.asarray(loss(params, (src, tgt)))
    for i in range(4):
        # Alone, cut to its own lengths: no padding at all.
        n_src, n_tgt = int((src[i] > 0).sum()), int((tgt[i] > 0).sum())
        alone = loss(params, (src[i : i + 1, :n_src], tgt[i : i + 1, :n_tgt]))
        np.testing.assert_allclose(together[i], float(alone[0]), rtol=2e-5)
        # With much more padding than in the batch.
        padded = np.zeros((1, 40), np.int32)
        src_p, tgt_p = padded.copy(), padded.copy()
        src_p[0, :n_src], tgt_p[0, :n_tgt] = src[i, :n_src], tgt[i, :n_tgt]
        np.testing.assert_allclose(together[i], float(loss(params, (src_p, tgt_p))[0]), 2e-5)
    # The per-pair loss is the summed token cross-entropy: more tokens, more loss.
    assert np.all(together > 0)
    # The length-normalised option divides each pair's sum by its target tokens (EOS
    # included, padding not).
    mean = translation_task(model, sequence_loss="mean").loss(params, (src, tgt))
    np.testing.assert_allclose(np.asarray(mean), together / (tgt > 0).sum(axis=1), rtol=1e-6)


def test_sequence_loss_is_checked_by_the_config_and_keys_the_fit(multi30k):
    def config(sequence_loss):
        return from_dict(
            {
                "dataset": {
                    "name": "multi30k",
                    "kind": "translation",
                    "source": "parallel_text",
                    "path": str(multi30k),
                },
                "model": {"name": "transformer_tiny", **TINY},
                "method": {"name": "arnoldi", "n": 8, "pbar": 2, "sequence_loss": sequence_loss},
            }
        )

    with pytest.raises(ConfigError, match="method.sequence_loss"):
        config("max")
    method = make_method("arnoldi", n=8, pbar=2)
    keys = {loss: fit_key(config(loss), "model", method.fit_options()) for loss in ("sum", "mean")}
    assert keys["mean"] == {**keys["sum"], "sequence_loss": "mean"}


def test_last3_decoder_selects_exactly_those_parameters(small_corpus):
    model = _tiny(small_corpus.tokenizer.vocab_size)
    params = model.init(
        jax.random.key(0), small_corpus.source_train[:1], small_corpus.target_train[:1]
    )["params"]
    view = ParamView.create(translation_task(model, "last3_decoder"), params)
    decoder = params["decoder"]
    expected = {
        f"decoder/layers_{i}/{path}" for i in (1, 2, 3) for path in _paths(decoder[f"layers_{i}"])
    }
    assert set(view.names) == expected
    assert view.size == sum(
        x.size for i in (1, 2, 3) for x in jax.tree_util.tree_leaves(decoder[f"layers_{i}"])
    )
    everything = ParamView.create(translation_task(model, "all"), params)
    assert everything.size == sum(x.size for x in jax.tree_util.tree_leaves(params))
    with pytest.raises(ConfigError, match="method.layers"):
        resolve_layers(model, "last4_encoder")


def _paths(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _paths(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}"


def test_bleu_is_sacrebleu():
    refs = ["A dog runs on the grass .", "Two men are talking ."]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(["cat", "boat"], refs) < 5


@pytest.mark.slow  # end to end, minutes: make test-slow
def test_pipeline_scores_permuted_pairs_on_real_multi30k(multi30k, tmp_path):
    """The library pipeline end to end on 300 real pairs: train, BLEU, Arnoldi on the last
    three decoder layers, scores.csv with the text, the cache reused."""
    raw = {
        "dataset": {
            "name": "multi30k",
            "kind": "translation",
            "source": "parallel_text",
            "path": str(multi30k),
            "train_size": 300,
            "test_size": 16,
            "vocab_size": 300,
            "max_length": 24,
        },
        "noise": {"kind": "permute", "rate": 0.1},
        "model": {"name": "transformer_tiny", **TINY, "dropout": 0.0},
        "train": {
            "optimizer": "adam",
            "learning_rate": 3e-3,
            "warmup_steps": 5,
            "batch_size": 32,
            "epochs": 2,
            "kept_checkpoints": 1,
        },
        "method": {
            "name": "arnoldi",
            "n": 12,
            "pbar": 5,
            "layers": "last3_decoder",
            "fit_batch_size": 16,
            "fit_batches": 2,
        },
        "score": {"batch_size": 32},
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "progress": False,
    }
    metrics = run(from_dict(raw), tmp_path / "run")
    assert metrics["model"] == "transformer_tiny"
    assert metrics["layers"] == "last3_decoder"
    assert 0 <= metrics["bleu"] <= 100 and 0 < metrics["test_accuracy"] < 1
    assert metrics["n_scored"] == metrics["n_train"]
    assert 0 < metrics["n_noisy_scored"] <= 30
    assert 0 <= metrics["auc"] <= 1 and 0 < metrics["ap"] <= 1
    assert len(metrics["eigenvalues"]) == 5
    scores = __import__("pandas").read_csv(tmp_path / "run" / "scores.csv")
    assert {"source", "target", "is_noisy", "self_influence", "carries_reference_of"} <= set(
        scores.columns
    )
    assert scores["is_noisy"].sum() == metrics["n_noisy_scored"]
    assert np.isfinite(scores["self_influence"]).all()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert from_dict(saved) == from_dict(raw)

    again = run(from_dict(raw), tmp_path / "again")
    assert again["train_cache_hit"] and again["fit_cache_hit"]
    assert again["auc"] == metrics["auc"] and again["bleu"] == metrics["bleu"]


@pytest.mark.slow  # end to end, minutes: make test-slow
def test_selection_stage_keeps_the_lowest_self_influence_of_the_precleaned_pairs(
    multi30k, tmp_path
):
    """Table 3's cleaning stage on 400 real pairs with crawl noise: pre-cleaning, then
    Arnoldi's lowest scores, a fresh model judged after two budgets."""
    import pandas as pd

    from ifscale.domains import domain_of
    from ifscale.domains.translation.cleaning import pre_clean

    raw = {
        "dataset": {
            "name": "noisy_parallel_text",
            "kind": "translation",
            "source": "parallel_text",
            "path": str(multi30k),
            "train_size": 400,
            "test_size": 16,
            "vocab_size": 400,
            "max_length": 32,
            "length_policy": "truncate",
        },
        "noise": {"kind": "crawl", "shares": {"garbage": 0.1, "misaligned": 0.1}},
        "model": {"name": "transformer_tiny", **TINY, "dropout": 0.0},
        "train": {
            "optimizer": "adam",
            "learning_rate": 3e-3,
            "batch_size": 32,
            "epochs": 1,
            "kept_checkpoints": 1,
        },
        "method": {"name": "arnoldi", "n": 8, "pbar": 4, "fit_batch_size": 16, "fit_batches": 1},
        "select": {
            "method": "influence",
            "fraction": 0.5,
            "after_precleaning": True,
            "budget_short": 4,
            "budget_long": 8,
        },
        "score": {"batch_size": 32},
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "progress": False,
        "stage": "select",
    }
    cfg = from_dict(raw)
    metrics = run(cfg, tmp_path / "run")
    assert metrics["n_train"] == 400  # truncate: no pair dropped, noise included
    assert metrics["n_selected"] == 200 and metrics["selected_percent"] == 50.0
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    data = domain_of(cfg.dataset).load(cfg)
    keep, _ = pre_clean(data.train_pairs.source, data.train_pairs.target)
    # Scored: exactly the pre-cleaned pool; selected: its 200 lowest self-influences.
    np.testing.assert_array_equal(scores["example"], np.flatnonzero(keep))
    assert metrics["n_pool"] == keep.sum() == metrics["precleaning_reasons"]["kept"]
    chosen = scores[scores["selected"]]
    assert len(chosen) == 200
    assert chosen["self_influence"].max() <= scores.loc[~scores["selected"], "self_influence"].min()
    # The kept shares per kind agree with the selection.
    for kind, kept in metrics["kept_percent_by_kind"].items():
        total = (data.noise_kind == kind).sum()
        assert kept == pytest.approx(100 * (chosen["noise_kind"] == kind).sum() / total)
    assert metrics["kept_percent_by_kind"]["garbage"] < 20  # pre-cleaning drops garbage
    assert 0 <= metrics["bleu_short"] <= 100 and 0 <= metrics["bleu_long"] <= 100
    assert (metrics["budget_short"], metrics["budget_long"]) == (4, 8)
