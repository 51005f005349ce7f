"""The influence method of a run, how it scores, and on which devices."""

from __future__ import annotations

import dataclasses
from typing import Any

from ifscale.utils import check

# How a sentence pair's token losses make the loss whose influence is scored.
SEQUENCE_LOSSES = ("sum", "mean")


@dataclasses.dataclass
class MethodConfig:
    """The keys every method shares (`method=none` too, so that they can be overridden in
    any multirun).

    The schema of a method is these keys plus the hyperparameters of its class (the
    dataclass fields of `ifscale.influence.methods.<name>`, with their types and defaults:
    defined once, there); `ifscale.run.compose.METHOD_SCHEMAS` joins the two.

    Attributes:
      name: "none" (train only) or a method of `ifscale.influence.METHODS`.
      layers: perturbed parameters as path prefixes (e.g. ["Dense_1"]), or the name of a
        subset the model defines (Transformer: "all", "last3_decoder"); null: all.
      fit_batch_size: examples per fit batch (the HVP micro-batch; LISSA's HVP batch).
      fit_batches: number of fit batches; H is the Hessian of the mean training loss over
        fit_batch_size * fit_batches seeded training examples.
      sequence_loss: how a sentence pair's token losses make the loss whose influence is
        scored (translation only): "sum" (the summed token cross-entropy, as trained per
        token) or "mean" (divided by the target's length).
    """

    name: str = "none"
    layers: Any = None
    fit_batch_size: int = 128
    fit_batches: int = 20
    sequence_loss: str = "sum"

    def __post_init__(self):
        layers = self.layers
        if layers is not None and not isinstance(layers, str):
            check(
                isinstance(layers, list | tuple) and all(isinstance(x, str) for x in layers),
                "method.layers",
                f"must be a list of parameter path prefixes or a subset name, got {layers!r}",
            )
            self.layers = tuple(layers)
        check(self.fit_batch_size >= 1, "method.fit_batch_size", "must be >= 1")
        check(self.fit_batches >= 1, "method.fit_batches", "must be >= 1")
        check(
            self.sequence_loss in SEQUENCE_LOSSES,
            "method.sequence_loss",
            f"must be one of {SEQUENCE_LOSSES}, got {self.sequence_loss!r}",
        )

    def options(self) -> dict[str, Any]:
        """The method's own hyperparameters (the keys beyond the shared ones)."""
        shared = {f.name for f in dataclasses.fields(MethodConfig)}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in shared
        }

    @property
    def pbar(self) -> int | None:
        return self.options().get("pbar")


@dataclasses.dataclass
class ScoreConfig:
    """How the training set is scored.

    Attributes:
      batch_size: examples per scoring step (split over all devices).
      max_examples: score a seeded subset of this many training examples, stratified by
        label and noise flag (null: all of them).
      compare_examples: also report AUC/AP on the seeded subset of this size (the one
        `max_examples` of the same size would score), so that runs scoring all examples
        and runs scoring a subset can be compared on identical examples (Table 1).
      require_fit: refuse to fit: score only with a stored fit (`stage=fit` made it), so
        that many scoring jobs never each run the fit.
      chunk: scores are stored in chunks of this many examples under
        `<cache_dir>/scores/` (`ifscale.cache.chunks`); a rerun skips finished chunks, so a
        killed run redoes at most one.
      shards, shard: score only the `shard`-th of `shards` contiguous parts of the scored
        set (whole chunks); `stage=merge` (`experiments/merge.py`, or a multirun's
        callback) gathers them.
    """

    batch_size: int = 256
    max_examples: int | None = None
    compare_examples: int | None = None
    require_fit: bool = False
    chunk: int = 1024
    shards: int = 1
    shard: int = 0

    def __post_init__(self):
        check(self.batch_size >= 1, "score.batch_size", "must be >= 1")
        check(self.chunk >= 1, "score.chunk", f"must be >= 1, got {self.chunk}")
        check(self.shards >= 1, "score.shards", f"must be >= 1, got {self.shards}")
        check(
            0 <= self.shard < self.shards,
            "score.shard",
            f"must be in [0, score.shards={self.shards}), got {self.shard}",
        )
        for key in ("max_examples", "compare_examples"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"score.{key}", "must be >= 1 or null")
        check(
            self.compare_examples is None
            or self.max_examples is None
            or self.max_examples == self.compare_examples,
            "score.compare_examples",
            f"the comparison subset ({self.compare_examples}) must be the scored set: "
            f"score.max_examples must be null or equal to it, got {self.max_examples}",
        )


@dataclasses.dataclass
class MeshConfig:
    """The device mesh (`ifscale.influence.sharding`): HVPs and scoring are data-parallel
    over `data`; the Krylov basis, eigenvectors and projection directions are sharded over
    `model` along the parameter axis.

    Attributes:
      data: devices on the data axis (null: all devices not on `model`).
      model: devices on the parameter axis (a power of two up to 1024).
    """

    data: int | None = None
    model: int = 1

    def __post_init__(self):
        check(self.data is None or self.data >= 1, "mesh.data", "must be >= 1 or null")
        check(self.model >= 1, "mesh.model", f"must be >= 1, got {self.model}")
