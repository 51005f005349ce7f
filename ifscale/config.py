"""Typed, validated run configuration built from a plain dict (e.g. a resolved Hydra config).

The library never imports Hydra: `experiments/run.py` resolves the Hydra config to a dict
and calls `RunConfig.from_dict`, which checks every value and raises `ConfigError` naming
the key, before any data is read or anything is compiled.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from ifscale.data.crawl_noise import CRAWL_NOISE_KINDS
from ifscale.data.images import SOURCES
from ifscale.data.noise import KINDS as NOISE_KINDS
from ifscale.data.translation import LENGTH_POLICIES, TEXT_SOURCES
from ifscale.influence.methods import METHODS as INFLUENCE_METHODS
from ifscale.influence.methods import make_method
from ifscale.models import MODELS, TRANSLATION_MODELS
from ifscale.models.transformer import SEQUENCE_REDUCTIONS
from ifscale.train import TrainConfig
from ifscale.utils import ConfigError, check

METHODS = ("none", *INFLUENCE_METHODS)


DATA_KINDS = ("image", "text")


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Where the data come from (`conf/dataset/*.yaml`).

    Attributes:
      name: names the data in metrics and tables.
      kind: "image" (classification, `ifscale.data.images`) or "text" (German→English
        translation, `ifscale.data.translation`).
      source: image: "hub" | "tfds" | "npz"; text: "parallel_text" | "tfds".
      data_dir: where downloaded data are kept; path: a .npz file or a corpus folder.
      subset_fraction, subset_size, scale: image options.
      train_size, test_size, vocab_size, max_length: text options (first pairs kept,
        SentencePiece vocabulary, tokens per sentence).
      extra_path, extra_train_size: text: another corpus folder whose first training
        pairs are appended (mixed domains, Table 3).
      length_policy: text: training pairs over max_length are "drop"ped or "truncate"d.
    """

    name: str = "mnist"
    kind: str = "image"
    source: str = "hub"
    data_dir: str | None = None
    path: str | None = None
    subset_fraction: float | None = None
    subset_size: int | None = None
    scale: bool = True
    train_size: int | None = None
    test_size: int | None = None
    vocab_size: int = 4000
    max_length: int = 64
    extra_path: str | None = None
    extra_train_size: int | None = None
    length_policy: str = "drop"

    def validate(self) -> None:
        check(self.kind in DATA_KINDS, "dataset.kind", f"must be one of {DATA_KINDS}")
        if self.kind == "text":
            check(
                self.source in TEXT_SOURCES,
                "dataset.source",
                f"text data: must be one of {TEXT_SOURCES}, got {self.source!r}",
            )
            for key in ("train_size", "test_size"):
                value = getattr(self, key)
                check(value is None or value >= 1, f"dataset.{key}", "must be >= 1 or null")
            check(self.vocab_size >= 8, "dataset.vocab_size", "must be >= 8")
            check(self.max_length >= 2, "dataset.max_length", "must be >= 2")
            if self.source == "parallel_text":
                check(self.path is not None, "dataset.path", "parallel_text needs a folder")
                check(Path(self.path).is_dir(), "dataset.path", f"{self.path} is not a folder")
            if self.extra_path is not None:
                check(
                    Path(self.extra_path).is_dir(),
                    "dataset.extra_path",
                    f"{self.extra_path} is not a folder",
                )
            check(
                self.length_policy in LENGTH_POLICIES,
                "dataset.length_policy",
                f"must be one of {LENGTH_POLICIES}, got {self.length_policy!r}",
            )
            return
        check(
            self.source in SOURCES,
            "dataset.source",
            f"must be one of {SOURCES}, got {self.source!r}",
        )
        check(
            self.subset_fraction is None or self.subset_size is None,
            "dataset",
            "give subset_fraction or subset_size, not both",
        )
        if self.subset_fraction is not None:
            check(
                0 < self.subset_fraction <= 1,
                "dataset.subset_fraction",
                f"must be in (0, 1], got {self.subset_fraction}",
            )
        if self.subset_size is not None:
            check(
                self.subset_size >= 1,
                "dataset.subset_size",
                f"must be >= 1, got {self.subset_size}",
            )
        if self.source == "npz":
            check(self.path is not None, "dataset.path", "source 'npz' needs a .npz path")
            check(Path(self.path).is_file(), "dataset.path", f"{self.path} does not exist")


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """Synthetic noise: `kind` with a `rate` (mislabel, permute), or for kind "crawl" a
    share per crawl-noise kind in `shares` (`ifscale.data.crawl_noise`)."""

    kind: str = "none"
    rate: float = 0.0
    shares: dict | None = None

    def validate(self) -> None:
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
                check(
                    isinstance(share, int | float) and 0 <= share < 1,
                    f"noise.shares.{kind}",
                    f"must be in [0, 1), got {share!r}",
                )
            check(sum(self.shares.values()) < 1, "noise.shares", "must sum to less than 1")
        check(self.rate >= 0, "noise.rate", f"must be >= 0, got {self.rate}")
        check(self.rate < 1, "noise.rate", f"must be < 1, got {self.rate}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model: a registered name, plus a Transformer's hyperparameters (null for CNNs)."""

    name: str = "cnn_large"
    width: int | None = None
    heads: int | None = None
    hidden: int | None = None
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    dropout: float | None = None

    HYPER = ("width", "heads", "hidden", "encoder_layers", "decoder_layers", "dropout")

    def validate(self) -> None:
        known = sorted([*MODELS, *TRANSLATION_MODELS])
        check(
            self.name in known,
            "model.name",
            f"unknown model {self.name!r}; choose from {known}",
        )
        for key in self.HYPER:
            value = getattr(self, key)
            if self.name in MODELS:
                check(value is None, f"model.{key}", f"{self.name} takes no {key}")
            elif key == "dropout":
                check(value is None or 0 <= value < 1, "model.dropout", "must be in [0, 1)")
            else:
                check(value is None or value >= 1, f"model.{key}", "must be >= 1")
        if self.width is not None and self.heads is not None:
            check(
                self.width % self.heads == 0,
                "model.heads",
                f"width {self.width} must be divisible by heads {self.heads}",
            )

    def hyperparameters(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.HYPER}


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Which influence method, on which parameters, with which fit data.

    Attributes:
      name: "none" (train only) or a method of `ifscale.influence.METHODS`.
      layers: perturbed parameters as path prefixes (e.g. ["Dense_1"]), or the name of a
        subset the model defines (Transformer: "all", "last3_decoder"); null: all.
      fit_batch_size: examples per fit batch (the HVP micro-batch; LISSA's HVP batch).
      fit_batches: number of fit batches; H is the Hessian of the mean training loss over
        fit_batch_size * fit_batches seeded training examples.
      sequence_loss: how a sentence pair's token losses make its loss, the one whose
        influence is scored (translation only): "sum" (the summed token cross-entropy, as
        trained per token) or "mean" (divided by the target's length: long pairs no longer
        get larger gradients, hence larger self-influence, for their length alone).
      options: the method's own hyperparameters (`method.pbar`, `method.n`, ...), checked
        against its dataclass.
    """

    name: str = "none"
    layers: tuple[str, ...] | str | None = None
    fit_batch_size: int = 128
    fit_batches: int = 20
    sequence_loss: str = "sum"
    options: dict = dataclasses.field(default_factory=dict)

    PIPELINE_KEYS = ("name", "layers", "fit_batch_size", "fit_batches", "sequence_loss")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MethodConfig:
        layers = raw.get("layers")
        if layers is not None and not isinstance(layers, str):
            check(
                isinstance(layers, list | tuple) and all(isinstance(x, str) for x in layers),
                "method.layers",
                f"must be a list of parameter path prefixes, got {layers!r}",
            )
            layers = tuple(layers)
        values = {
            k: raw[k]
            for k in ("name", "fit_batch_size", "fit_batches", "sequence_loss")
            if k in raw
        }
        for key in ("fit_batch_size", "fit_batches"):
            if key in values:
                values[key] = _coerce(values[key], int, f"method.{key}")
        options = {k: v for k, v in raw.items() if k not in cls.PIPELINE_KEYS}
        return cls(layers=layers, options=options, **values)

    def validate(self) -> None:
        check(
            self.name in METHODS,
            "method.name",
            f"unknown method {self.name!r}; choose from {METHODS}",
        )
        check(self.fit_batch_size >= 1, "method.fit_batch_size", "must be >= 1")
        check(self.fit_batches >= 1, "method.fit_batches", "must be >= 1")
        check(
            self.sequence_loss in SEQUENCE_REDUCTIONS,
            "method.sequence_loss",
            f"must be one of {SEQUENCE_REDUCTIONS}, got {self.sequence_loss!r}",
        )
        if self.name != "none":
            make_method(self.name, **self.options)  # raises ConfigError naming the key

    @property
    def pbar(self) -> int | None:
        return self.options.get("pbar")


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """How the training set is scored.

    Attributes:
      batch_size: examples per scoring step (split over all devices).
      max_examples: score a seeded subset of this many training examples, stratified by
        label and noise flag (null: all of them).
      compare_examples: also report AUC/AP on the seeded subset of this size (the one
        `max_examples` of the same size would score), so that runs scoring all examples
        and runs scoring a subset can be compared on identical examples (Table 1).
    """

    batch_size: int = 256
    max_examples: int | None = None
    compare_examples: int | None = None

    def validate(self) -> None:
        check(self.batch_size >= 1, "score.batch_size", "must be >= 1")
        check(
            self.max_examples is None or self.max_examples >= 1,
            "score.max_examples",
            "must be >= 1 or null",
        )
        check(
            self.compare_examples is None or self.compare_examples >= 1,
            "score.compare_examples",
            "must be >= 1 or null",
        )
        check(
            self.compare_examples is None
            or self.max_examples is None
            or self.max_examples == self.compare_examples,
            "score.compare_examples",
            f"the comparison subset ({self.compare_examples}) must be the scored set: "
            f"score.max_examples must be null or equal to it, got {self.max_examples}",
        )


SELECTIONS = ("all", "precleaning", "random", "influence")


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """Data cleaning (Table 3): select part of the noisy training set, train a fresh model
    on it, report BLEU after a short and a long budget.

    Attributes:
      method: null (no cleaning stage), "all" (no cleaning), "precleaning" (heuristic
        filters, `ifscale.cleaning`), "random" (the control), "influence" (lowest
        self-influence under `method`, from the model trained on the whole noisy set).
      fraction: share of the whole training set to keep (random, influence).
      after_precleaning: select from the pre-cleaned pairs only (random, influence).
      by_length: (influence) keep `fraction` of each target-length decile, its lowest
        scores, instead of the lowest scores overall: the selection keeps the corpus's
        length distribution whatever the scores' length bias.
      budget_short, budget_long: training steps of the fresh model at which BLEU is
        measured.
    """

    method: str | None = None
    fraction: float = 1.0
    after_precleaning: bool = False
    by_length: bool = False
    budget_short: int = 300
    budget_long: int = 1500

    def validate(self) -> None:
        check(
            self.method is None or self.method in SELECTIONS,
            "select.method",
            f"must be null or one of {SELECTIONS}, got {self.method!r}",
        )
        check(0 < self.fraction <= 1, "select.fraction", f"must be in (0, 1], got {self.fraction}")
        check(
            not self.by_length or self.method == "influence",
            "select.by_length",
            f"stratifies selection by influence, not select.method={self.method!r}",
        )
        check(
            1 <= self.budget_short <= self.budget_long,
            "select.budget_short",
            f"must be in [1, budget_long={self.budget_long}], got {self.budget_short}",
        )


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    cache_dir: str = ".cache"
    data_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run of the pipeline needs."""

    dataset: DatasetConfig = DatasetConfig()
    noise: NoiseConfig = NoiseConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    method: MethodConfig = MethodConfig()
    score: ScoreConfig = ScoreConfig()
    select: SelectConfig = SelectConfig()
    paths: PathsConfig = PathsConfig()
    name: str = "default"
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Builds and validates a config; raises `ConfigError` naming a bad key."""
        cfg = _build(cls, raw, "")
        for part in (
            cfg.dataset,
            cfg.noise,
            cfg.model,
            cfg.train,
            cfg.method,
            cfg.score,
            cfg.select,
        ):
            part.validate()
        check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", "must be an integer >= 0")
        text = cfg.dataset.kind == "text"
        check(
            text == (cfg.model.name in TRANSLATION_MODELS),
            "model.name",
            f"{cfg.model.name} does not fit {cfg.dataset.kind} data ({cfg.dataset.name}); "
            f"{'translation' if text else 'image'} models: "
            f"{sorted(TRANSLATION_MODELS if text else MODELS)}",
        )
        noise_kinds = ("none", "permute", "crawl") if text else ("none", "mislabel")
        check(
            cfg.noise.kind in noise_kinds,
            "noise.kind",
            f"{cfg.dataset.kind} data take noise {noise_kinds}, got {cfg.noise.kind!r}",
        )
        check(
            not isinstance(cfg.method.layers, str) or text,
            "method.layers",
            "named subsets are defined for translation models; give path prefixes",
        )
        check(
            cfg.method.sequence_loss == "sum" or text,
            "method.sequence_loss",
            "a per-token mean is defined for translation data; image classifiers have one loss",
        )
        if cfg.select.method is not None:
            check(text, "select.method", "data cleaning is defined for translation data")
            check(
                cfg.select.method != "influence" or cfg.method.name in ("arnoldi", "randproj"),
                "method.name",
                f"selection by influence needs arnoldi or randproj, got {cfg.method.name!r}",
            )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The config as `from_dict` takes it (method options flat, as in the YAML)."""
        d = dataclasses.asdict(self)
        method = d["method"]
        options = method.pop("options")
        if isinstance(method["layers"], tuple):
            method["layers"] = list(method["layers"])
        d["method"] = {**method, **options}
        return d


def _build(cls, raw: Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{prefix}{sorted(unknown)[0]}: unknown key; known: {sorted(names)}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if hint is MethodConfig:
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping, got {value!r}")
            values[name] = MethodConfig.from_dict(value)
        elif dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str):
    """Checks `value` against a simple type hint (int, float, str, bool, X | None)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key}: must not be null")
    for typ in options:
        if typ is bool and isinstance(value, bool):
            return value
        if typ is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if typ is str and isinstance(value, str):
            return value
        if typ is dict and isinstance(value, dict):
            return dict(value)
    names = " or ".join(getattr(t, "__name__", str(t)) for t in options)
    raise ConfigError(f"{key}: expected {names}, got {value!r}")
