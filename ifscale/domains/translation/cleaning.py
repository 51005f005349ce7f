"""Data cleaning for the paper's Table 3: heuristic pre-cleaning, and selection by
self-influence (keep the pairs with the lowest scores, the most typical ones).

Pre-cleaning is the cheap filtering applied to crawled corpora before neural filtering:
length limits and length ratio, copy detection, a character-set check, a language check
on the target, and exact duplicates. Each filter names why it dropped a pair.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from ifscale.utils import check, stream_rng

# Frequent function words: a target with more German than English ones is not English.
_GERMAN = frozenset(
    [
        "der",
        "die",
        "das",
        "und",
        "ist",
        "ein",
        "eine",
        "einem",
        "einer",
        "eines",
        "mit",
        "auf",
        "den",
        "dem",
        "des",
        "nicht",
        "sich",
        "zu",
        "von",
        "im",
        "sind",
        "vor",
        "auf",
        "bei",
        "für",
        "über",
    ]
)
_ENGLISH = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "is",
        "are",
        "of",
        "with",
        "on",
        "to",
        "at",
        "for",
        "his",
        "her",
        "their",
        "by",
        "from",
    ]
)
_MARKUP = re.compile(r"https?://|www\.|<[^>]+>|\s\|\s|\.php|\.html?")


@dataclasses.dataclass(frozen=True)
class PreCleaning:
    """Heuristic filters and their thresholds.

    Attributes:
      min_words, max_words: word counts allowed on each side.
      max_length_ratio: the longer side may have at most this many times the words of the
        shorter.
      copy_overlap: drop a pair whose source and target share more than this share of
        their (lower-cased) words (Jaccard): an untranslated copy.
      min_letter_share: letters among the target's non-space characters, at least.
      language_check: drop targets with more German than English function words.
      drop_duplicates: keep only the first of identical pairs.
    """

    min_words: int = 1
    max_words: int = 80
    max_length_ratio: float = 2.0
    copy_overlap: float = 0.6
    min_letter_share: float = 0.75
    language_check: bool = True
    drop_duplicates: bool = True

    def reason(self, source: str, target: str) -> str | None:
        """Why the pair is dropped (the first filter that fires), or None to keep it."""
        src, tgt = source.split(), target.split()
        if not (self.min_words <= len(src) <= self.max_words) or not (
            self.min_words <= len(tgt) <= self.max_words
        ):
            return "length"
        if max(len(src), len(tgt)) > self.max_length_ratio * min(len(src), len(tgt)):
            return "length_ratio"
        a, b = {w.lower() for w in src}, {w.lower() for w in tgt}
        if len(a & b) / len(a | b) > self.copy_overlap:
            return "copy"
        chars = [c for c in target if not c.isspace()]
        if _MARKUP.search(target) or sum(c.isalpha() for c in chars) < (
            self.min_letter_share * len(chars)
        ):
            return "charset"
        if self.language_check:
            words = [w.strip(".,;:!?\"'()").lower() for w in tgt]
            german = sum(w in _GERMAN for w in words)
            if german and german > sum(w in _ENGLISH for w in words):
                return "language"
        return None


def pre_clean(
    source: Sequence[str], target: Sequence[str], config: PreCleaning | None = None
) -> tuple[np.ndarray, list[str | None]]:
    """Applies `config`'s filters.

    Returns:
      (keep [n] bool, reason of each pair: None if kept, else the filter that dropped it:
      "length", "length_ratio", "copy", "charset", "language" or "duplicate").
    """
    config = config or PreCleaning()
    reasons: list[str | None] = []
    seen: set[tuple[str, str]] = set()
    for s, t in zip(source, target, strict=True):
        why = config.reason(s, t)
        if why is None and config.drop_duplicates:
            if (s, t) in seen:
                why = "duplicate"
            seen.add((s, t))
        reasons.append(why)
    keep = np.array([r is None for r in reasons], bool)
    return keep, reasons


def _count(n: int, fraction: float) -> int:
    check(0 < fraction <= 1, "select.fraction", f"must be in (0, 1], got {fraction}")
    k = round(fraction * n)
    check(k >= 1, "select.fraction", f"{fraction} of {n} pairs selects none")
    return k


def lowest_scores(scores: np.ndarray, fraction: float | None = None, count: int | None = None):
    """Sorted indices of the `count` (or round(fraction · n)) lowest scores; ties go to
    the earlier index."""
    k = count if count is not None else _count(len(scores), fraction)
    check(1 <= k <= len(scores), "select.fraction", f"cannot select {k} of {len(scores)}")
    return np.sort(np.argsort(scores, kind="stable")[:k])


def length_strata(lengths: np.ndarray, bins: int = 10) -> np.ndarray:
    """[n] stratum (0 to bins - 1) of each length: its quantile bin, equal lengths in one
    bin (so a bin can be empty or hold more than n / bins)."""
    edges = np.quantile(lengths, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, lengths, side="right")


def lowest_scores_by_stratum(scores: np.ndarray, strata: np.ndarray, count: int) -> np.ndarray:
    """Sorted indices of `count` low scores taken stratum by stratum: each stratum keeps its
    share of `count` (largest remainders; ties to the earlier stratum) and, within it, its
    lowest scores. The selection keeps the strata's proportions (e.g. the corpus's length
    distribution), so a score that grows with length cannot pick short pairs for it."""
    scores, strata = np.asarray(scores), np.asarray(strata)
    n = len(scores)
    check(1 <= count <= n, "select.fraction", f"cannot select {count} of {n}")
    labels, sizes = np.unique(strata, return_counts=True)
    quota = sizes * count / n
    take = np.floor(quota).astype(int)
    largest_remainders = np.argsort(-(quota - take), kind="stable")
    take[largest_remainders[: count - take.sum()]] += 1
    chosen = []
    for label, k in zip(labels, take, strict=True):
        members = np.flatnonzero(strata == label)
        chosen.append(members[np.argsort(scores[members], kind="stable")[:k]])
    return np.sort(np.concatenate(chosen))


def random_selection(
    n: int, fraction: float | None = None, seed: int = 0, count: int | None = None
) -> np.ndarray:
    """Sorted indices of a seeded random `count` (or round(fraction · n)) of n: the
    control."""
    k = count if count is not None else _count(n, fraction)
    check(1 <= k <= n, "select.fraction", f"cannot select {k} of {n}")
    return np.sort(stream_rng(seed, "select-random").choice(n, k, replace=False))
