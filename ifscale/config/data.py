"""The data of a run: the base of every dataset schema, and the noise planted in it."""

from __future__ import annotations

import dataclasses
import typing

from ifscale.utils import check

# mislabel: images; permute, crawl: translation pairs (crawl: `ifscale.data.crawl_noise`).
NOISE_KINDS = ("none", "mislabel", "permute", "crawl")
# The kinds of web-crawl noise, each with its share of the pairs (`noise.shares`).
CRAWL_NOISE_KINDS = (
    "misaligned",
    "untranslated",
    "wrong_language",
    "truncated",
    "garbage",
    "length_ratio",
)


@dataclasses.dataclass
class DataConfig:
    """What every dataset schema has (`conf/dataset/*.yaml` choose a schema and preset).
    Each domain of data (`ifscale.domains`) subclasses it with its own keys.

    Attributes:
      kind: which domain of data: "images" or "translation"; fixed by the schema.
      name: names the data in metrics and tables.
      source: where the data come from (see the schema).
      data_dir: where downloaded data are kept.
      path: a file or folder of your own data.
    """

    kind: str = "images"
    name: str = "data"
    source: str = ""
    data_dir: str | None = None
    path: str | None = None

    KIND: typing.ClassVar[str] = ""

    def __post_init__(self):
        check(
            self.kind == self.KIND,
            "dataset.kind",
            f"is {self.KIND!r} for this dataset schema, got {self.kind!r}",
        )


@dataclasses.dataclass
class NoiseConfig:
    """Synthetic noise: `kind` with a `rate` (mislabel, permute), or for kind "crawl" a
    share per crawl-noise kind in `shares` (`ifscale.data.crawl_noise`)."""

    kind: str = "none"
    rate: float = 0.0
    shares: dict[str, float] | None = None

    def __post_init__(self):
        check(
            self.kind in NOISE_KINDS,
            "noise.kind",
            f"must be one of {NOISE_KINDS}, got {self.kind!r}",
        )
        if self.kind == "crawl":
            check(bool(self.shares), "noise.shares", "crawl noise needs a share per kind")
            unknown = set(self.shares) - set(CRAWL_NOISE_KINDS)
            check(not unknown, "noise.shares", f"unknown kinds {sorted(unknown)}")
            for kind, share in self.shares.items():
                check(0 <= share < 1, f"noise.shares.{kind}", f"must be in [0, 1), got {share}")
            check(sum(self.shares.values()) < 1, "noise.shares", "must sum to less than 1")
        check(0 <= self.rate < 1, "noise.rate", f"must be in [0, 1), got {self.rate}")
