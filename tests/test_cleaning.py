"""Crawl-noise generators, pre-cleaning filters and selection (the data-cleaning
experiment's pieces), on the real Multi30k and on hand-made pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ifscale.data.crawl_noise import CRAWL_NOISE_KINDS, add_crawl_noise
from ifscale.data.text import read_parallel_text
from ifscale.domains.translation.cleaning import (
    PreCleaning,
    length_strata,
    lowest_scores,
    lowest_scores_by_stratum,
    pre_clean,
    random_selection,
)
from ifscale.utils import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHARES = {k: 0.05 for k in CRAWL_NOISE_KINDS}


@pytest.fixture(scope="module")
def clean():
    folder = Path(os.environ.get("IFSCALE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (folder / "multi30k" / "train.de").exists():
        pytest.fail(f"the shared corpora are not at {folder} (set IFSCALE_SHARED_DATA)")
    train = read_parallel_text(folder / "multi30k")["train"]
    return train.source[:4000], train.target[:4000]


@pytest.fixture(scope="module")
def corpus(clean):
    return add_crawl_noise(*clean, SHARES, seed=0)


def test_each_kind_gets_its_share_and_its_label(corpus, clean):
    source, target = clean
    n = len(source)
    shares = corpus.shares()
    for kind in CRAWL_NOISE_KINDS:
        # Exactly round(0.05 n) chosen; a rewrite that changed nothing is relabelled clean.
        assert round(0.05 * n) - 3 <= (corpus.kind == kind).sum() <= round(0.05 * n), kind
    assert shares["clean"] == pytest.approx(0.70, abs=0.005)
    assert corpus.source == list(source)  # sources are never rewritten
    assert corpus.clean_target == list(target)
    changed = np.array([a != b for a, b in zip(corpus.target, target, strict=True)])
    np.testing.assert_array_equal(changed, corpus.is_noisy)


def test_each_kind_does_what_it_says(corpus, clean):
    source, target = clean
    idx = {k: np.flatnonzero(corpus.kind == k) for k in CRAWL_NOISE_KINDS}
    targets, sources = set(target), set(source)
    for i in idx["misaligned"]:
        assert corpus.target[i] in targets and corpus.target[i] != target[i]
    for i in idx["untranslated"]:
        assert corpus.target[i] == source[i]
    for i in idx["wrong_language"]:
        assert corpus.target[i] in sources and corpus.target[i] != source[i]
    for i in idx["truncated"]:
        words, full = corpus.target[i].split(), target[i].split()
        assert words == full[: len(words)] and len(words) < len(full)
    for i in idx["length_ratio"]:
        assert corpus.target[i].startswith(target[i])
        assert len(corpus.target[i].split()) >= 3 * len(source[i].split())
    for i in idx["garbage"]:
        assert corpus.target[i] not in targets


def test_noise_is_seeded(corpus, clean):
    again = add_crawl_noise(*clean, SHARES, seed=0)
    assert again.target == corpus.target
    np.testing.assert_array_equal(again.kind, corpus.kind)
    other = add_crawl_noise(*clean, SHARES, seed=1)
    assert other.target != corpus.target


def test_bad_shares_name_the_key(clean):
    with pytest.raises(ConfigError, match="noise.shares"):
        add_crawl_noise(*clean, {"spam": 0.1}, seed=0)
    with pytest.raises(ConfigError, match="noise.shares"):
        add_crawl_noise(*clean, {k: 0.2 for k in CRAWL_NOISE_KINDS}, seed=0)
    with pytest.raises(ConfigError, match="noise.shares.garbage"):
        add_crawl_noise(*clean, {"garbage": -0.1}, seed=0)


@pytest.mark.parametrize(
    "source, target, reason",
    [
        ("Ein Hund läuft über das Gras.", "A dog runs across the grass.", None),
        ("Ein Hund läuft über das Gras.", "A dog runs across the grass.", "duplicate"),
        ("Ein Hund.", "A dog is running on the green grass near a big old tree.", "length_ratio"),
        ("Ein Hund läuft über das Gras.", "Ein Hund läuft über das Gras.", "copy"),
        ("Eine Frau singt ein Lied.", "Visit http://www.example.com/index.php?id=3 now", "charset"),
        ("Eine Frau singt ein Lied.", "Home | About us | Contact", "charset"),
        ("Eine Frau singt ein Lied.", "x7#@ q=+% 99_8 zz", "charset"),
        ("Eine Frau singt ein Lied.", "Der Mann ist mit dem Hund.", "language"),
        ("Eine Frau singt.", "", "length"),
    ],
)
def test_pre_cleaning_filters_what_it_claims(source, target, reason):
    first = ("Ein Hund läuft über das Gras.", "A dog runs across the grass.")
    pairs = [first, (source, target)] if reason == "duplicate" else [(source, target)]
    keep, reasons = pre_clean([p[0] for p in pairs], [p[1] for p in pairs])
    assert reasons[-1] == reason
    assert keep[-1] == (reason is None)
    assert reasons[0] is None or len(pairs) == 1


def test_pre_cleaning_removes_most_noise_and_keeps_most_clean_pairs(corpus):
    keep, reasons = pre_clean(corpus.source, corpus.target)
    kept = {k: keep[corpus.kind == k].mean() for k in ("clean", *CRAWL_NOISE_KINDS)}
    assert kept["clean"] > 0.85
    for kind in ("untranslated", "wrong_language", "garbage", "length_ratio"):
        assert kept[kind] < 0.2, (kind, kept[kind])
    # Misaligned pairs look like clean ones to heuristics: that is what the neural filter is
    # for. Pre-cleaning keeps most of them.
    assert kept["misaligned"] > 0.5
    assert set(reasons) <= {
        None,
        "length",
        "length_ratio",
        "copy",
        "charset",
        "language",
        "duplicate",
    }
    assert PreCleaning(language_check=False).reason("Ein Hund.", "Der Hund.") is None


def test_selection_keeps_exactly_the_lowest_scores():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000)
    chosen = lowest_scores(scores, 0.1)
    assert len(chosen) == 100 and np.all(np.diff(chosen) > 0)
    assert scores[chosen].max() < np.delete(scores, chosen).min()
    ties = np.zeros(10)
    np.testing.assert_array_equal(lowest_scores(ties, 0.3), [0, 1, 2])  # stable on ties
    control = random_selection(1000, 0.1, seed=0)
    assert len(control) == 100 and len(np.unique(control)) == 100
    np.testing.assert_array_equal(control, random_selection(1000, 0.1, seed=0))
    with pytest.raises(ConfigError, match="select.fraction"):
        lowest_scores(scores, 0.0001)
    with pytest.raises(ConfigError, match="select.fraction"):
        random_selection(10, 1.5, seed=0)


def test_stratified_selection_keeps_each_strata_share_and_its_lowest_scores():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 40, 1000)
    scores = lengths + rng.normal(size=1000)  # a score with a strong length bias
    strata = length_strata(lengths)
    assert set(np.unique(strata)) <= set(range(10))
    # Equal lengths share a stratum; longer pairs never sit in a lower one.
    order = np.argsort(lengths, kind="stable")
    assert np.all(np.diff(strata[order]) >= 0)
    chosen = lowest_scores_by_stratum(scores, strata, 250)
    assert len(chosen) == 250 and np.all(np.diff(chosen) > 0)
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        kept = np.intersect1d(members, chosen)
        # Each stratum keeps its share (to within the rounding of one pair)...
        assert abs(len(kept) - 250 * len(members) / 1000) < 1
        # ...and, within it, its lowest scores.
        rest = np.setdiff1d(members, kept)
        if len(kept) and len(rest):
            assert scores[kept].max() <= scores[rest].min()
    # The overall lowest scores would take short pairs only; the strata keep the lengths.
    assert lengths[lowest_scores(scores, count=250)].mean() < 0.6 * lengths.mean()
    assert abs(lengths[chosen].mean() - lengths.mean()) < 0.1 * lengths.mean()
    with pytest.raises(ConfigError, match="select.fraction"):
        lowest_scores_by_stratum(scores, strata, 0)
