"""Synthetic web-crawl noise for the data-cleaning experiment (the paper's Table 3).

A clean parallel corpus is mixed with the kinds of noise found in crawled data. Each kind
is a seeded generator that rewrites the target (or both sides) of the pairs chosen for it;
every pair keeps its kind label ("clean" or the kind) for analysis.

Kinds (`CRAWL_NOISE_KINDS`):
  misaligned     the target of another chosen pair (a derangement: none keeps its own)
  untranslated   target = source (an untranslated copy)
  wrong_language the target is a German sentence (the source of another pair)
  truncated      the target cut to its first 20-50% of words (at least one word dropped)
  garbage        the target is boilerplate or garbage: navigation text, URLs, markup,
                 random character runs
  length_ratio   the target followed by unrelated targets until it has 3x the source's
                 words (an extreme length ratio)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from ifscale.config import CRAWL_NOISE_KINDS
from ifscale.utils import check, stream_rng

_BOILERPLATE = (
    "Click here to subscribe to our newsletter",
    "All rights reserved.",
    "Home | About us | Contact | Privacy policy",
    "Add to cart",
    "Page {n} of {m}",
    "Posted by admin on {n}/{m}/2016",
    "http://www.example-{n}.com/index.php?id={m}",
    '<div class="footer">{n}</div>',
    "Copyright (c) 20{n} - Terms of use",
    "Read more >>",
)


@dataclasses.dataclass(frozen=True)
class CrawlCorpus:
    """A noisy parallel corpus.

    Attributes:
      source, target: the pairs, noise included.
      kind: [n] "clean" or the noise kind of each pair.
      clean_target: each pair's original reference.
    """

    source: list[str]
    target: list[str]
    kind: np.ndarray
    clean_target: list[str]

    @property
    def is_noisy(self) -> np.ndarray:
        return self.kind != "clean"

    def shares(self) -> dict[str, float]:
        """Share of each kind (clean included) in the corpus."""
        return {k: float(np.mean(self.kind == k)) for k in ("clean", *CRAWL_NOISE_KINDS)}


def _garbage(rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        template = _BOILERPLATE[rng.integers(len(_BOILERPLATE))]
        return template.format(n=rng.integers(1, 99), m=rng.integers(1, 99))
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789#@%&*=+_/"))
    words = ["".join(rng.choice(alphabet, rng.integers(2, 12))) for _ in range(rng.integers(2, 9))]
    return " ".join(words)


def add_crawl_noise(
    source: Sequence[str],
    target: Sequence[str],
    shares: Mapping[str, float],
    seed: int,
) -> CrawlCorpus:
    """Rewrites disjoint, seeded shares of the pairs with each noise kind.

    Args:
      source, target: a clean parallel corpus (German source, English target).
      shares: {kind: share of all pairs}; kinds not given get none. Exactly
        round(share · n) pairs get each kind; the shares must sum to less than 1.
      seed: seeds the choice of pairs and every generator.

    Returns:
      The `CrawlCorpus`.
    """
    n = len(source)
    check(len(target) == n, "dataset", f"{n} sources but {len(target)} targets")
    unknown = set(shares) - set(CRAWL_NOISE_KINDS)
    check(not unknown, "noise.shares", f"unknown kinds {sorted(unknown)}; {CRAWL_NOISE_KINDS}")
    for kind, share in shares.items():
        check(0 <= share < 1, f"noise.shares.{kind}", f"must be in [0, 1), got {share}")
    counts = {k: round(shares.get(k, 0.0) * n) for k in CRAWL_NOISE_KINDS}
    check(
        sum(counts.values()) < n,
        "noise.shares",
        f"the shares sum to {sum(shares.values()):.3f}: no clean pairs would remain",
    )
    rng = stream_rng(seed, "crawl-noise")
    order = rng.permutation(n)
    kind = np.full(n, "clean", dtype=object)
    src, tgt = list(source), list(target)
    start = 0
    for name in CRAWL_NOISE_KINDS:
        chosen = order[start : start + counts[name]]
        start += counts[name]
        kind[chosen] = name
        if name == "misaligned" and len(chosen) >= 2:
            perm = np.arange(len(chosen))
            while np.any(perm == np.arange(len(chosen))):
                perm = rng.permutation(len(chosen))
            for i, j in zip(chosen, chosen[perm], strict=True):
                tgt[i] = target[j]
        elif name == "misaligned":
            kind[chosen] = "clean"  # a single pair cannot be misaligned with itself
        for i in chosen if name != "misaligned" else ():
            if name == "untranslated":
                tgt[i] = source[i]
            elif name == "wrong_language":
                other = (i + 1 + rng.integers(n - 1)) % n  # any pair but this one
                tgt[i] = source[other]
            elif name == "truncated":
                words = target[i].split()
                keep = max(1, min(len(words) - 1, int(len(words) * rng.uniform(0.2, 0.5))))
                tgt[i] = " ".join(words[:keep]) if len(words) > 1 else target[i][:1]
            elif name == "garbage":
                tgt[i] = _garbage(rng)
            elif name == "length_ratio":
                # Unrelated targets appended until the target has 3x the source's words.
                parts, words = [target[i]], len(target[i].split())
                while words < 3 * max(len(source[i].split()), 1):
                    other = target[rng.integers(n)]
                    parts.append(other)
                    words += len(other.split())
                tgt[i] = " ".join(parts)
    # A rewrite that left the text unchanged (e.g. a copy of an identical sentence) is clean.
    same = np.array([tgt[i] == target[i] for i in range(n)])
    kind[same] = "clean"
    return CrawlCorpus(src, tgt, kind.astype(str), list(target))
