"""Typed run configuration: the one place where the types and defaults of every setting live.

Each part of a run is a dataclass. `experiments/schema.py` registers them in Hydra's
ConfigStore, so Hydra and OmegaConf refuse unknown keys and wrong types naming the key;
`conf/` YAML files hold only presets and table rows. Library users build the dataclasses
directly, or from a plain dict with `RunConfig.from_dict`. Range and cross-field checks run
once, in `__post_init__`, and raise `ConfigError` naming the key; the library code that
receives a config does not check it again.

The schema of a part can depend on a choice: each kind of data has its own dataset schema (a
`DataConfig` subclass beside its kind in `ifscale/kinds/`, picked by `dataset.kind`), CNNs and
Transformers their own model schemas (by `model.name`), and each influence method its own
method schema (by `method.name`: the shared keys of `MethodConfig` plus the method's
hyperparameters). The settings of the optional stages (`explain`, `select`) are in
`ifscale/stage_config.py`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ifscale.data.crawl_noise import CRAWL_NOISE_KINDS
from ifscale.data.noise import KINDS as NOISE_KINDS
from ifscale.influence.methods import METHODS as INFLUENCE_METHODS
from ifscale.influence.methods import make_method
from ifscale.models.transformer import SEQUENCE_LOSSES
from ifscale.stage_config import ExplainConfig, SelectConfig
from ifscale.train import TrainConfig
from ifscale.utils import ConfigError, check

# --------------------------------------------------------------------------------- data


@dataclasses.dataclass
class DataConfig:
    """What every dataset schema has (`conf/dataset/*.yaml` choose a schema and preset).

    Attributes:
      kind: which kind of data (`ifscale.kinds`): "images" or "translation"; fixed by the
        schema.
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


# ------------------------------------------------------------------------------- models


@dataclasses.dataclass
class ModelConfig:
    """A registered model (`conf/model/*.yaml`); the data kind says which it accepts."""

    name: str = "cnn_large"


@dataclasses.dataclass
class CNNConfig(ModelConfig):
    """The MNIST CNNs (`ifscale.models.cnn`): a name, no hyperparameters."""


@dataclasses.dataclass
class TransformerConfig(ModelConfig):
    """The encoder-decoder Transformer (`ifscale.models.transformer`).

    Attributes:
      width: model width; heads: attention heads (must divide width); hidden: feed-forward
        width; encoder_layers, decoder_layers: block counts; dropout: while training.
    """

    name: str = "transformer_small"
    width: int = 96
    heads: int = 4
    hidden: int = 384
    encoder_layers: int = 2
    decoder_layers: int = 4
    dropout: float = 0.1

    def __post_init__(self):
        for key in ("width", "heads", "hidden", "encoder_layers", "decoder_layers"):
            check(getattr(self, key) >= 1, f"model.{key}", "must be >= 1")
        check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        check(
            self.width % self.heads == 0,
            "model.heads",
            f"width {self.width} must be divisible by heads {self.heads}",
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


MODEL_SCHEMAS: dict[str, type[ModelConfig]] = {
    "cnn_small": CNNConfig,
    "cnn_large": CNNConfig,
    "transformer_tiny": TransformerConfig,
    "transformer_small": TransformerConfig,
}


# ------------------------------------------------------------------------------ methods


@dataclasses.dataclass
class MethodConfig:
    """The keys every method shares (`method=none` too, so that they can be overridden in
    any multirun); each method's schema adds its hyperparameters (see `METHOD_SCHEMAS`).

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
        check(
            self.name in METHOD_SCHEMAS,
            "method.name",
            f"unknown method {self.name!r}; choose from {sorted(METHOD_SCHEMAS)}",
        )
        if self.name != "none":
            self.build()  # the method's own __post_init__ checks its hyperparameters

    def options(self) -> dict[str, Any]:
        """The method's own hyperparameters (the keys beyond the shared ones)."""
        shared = {f.name for f in dataclasses.fields(MethodConfig)}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in shared
        }

    def build(self, progress: bool = True):
        """The influence method these settings describe."""
        return make_method(self.name, progress=progress, **self.options())

    @property
    def pbar(self) -> int | None:
        return self.options().get("pbar")


# Settings of the shared keys that differ for one method.
_SHARED_DEFAULTS = {"tracin": {"fit_batches": 1}}  # TracIn uses no fit batches


def _method_schema(name: str, method_cls: type) -> type[MethodConfig]:
    """`MethodConfig` plus the hyperparameters of `method_cls` (its dataclass fields, with
    their types and defaults), as one schema: defined once, in the method's class."""
    hints = typing.get_type_hints(method_cls)
    fields = [
        (f.name, hints[f.name], dataclasses.field(default=f.default))
        for f in dataclasses.fields(method_cls)
        if f.name != "progress"  # a display setting of the run (`progress`), not of the method
    ]
    shared = [("name", str, dataclasses.field(default=name))] + [
        (key, type(value), dataclasses.field(default=value))
        for key, value in _SHARED_DEFAULTS.get(name, {}).items()
    ]
    return dataclasses.make_dataclass(
        f"{method_cls.__name__}Config", shared + fields, bases=(MethodConfig,)
    )


METHOD_SCHEMAS: dict[str, type[MethodConfig]] = {
    "none": MethodConfig,
    **{name: _method_schema(name, cls) for name, cls in INFLUENCE_METHODS.items()},
}


def method_config(name: str, **values) -> MethodConfig:
    """The method schema of `name` with `values` set (a library shortcut)."""
    check(
        name in METHOD_SCHEMAS,
        "method.name",
        f"unknown method {name!r}; choose from {sorted(METHOD_SCHEMAS)}",
    )
    return METHOD_SCHEMAS[name](**values)


# ------------------------------------------------------------------------ scoring, select


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
      require_fit: refuse to fit: score only with a cached fit (`stage=fit` made it), so
        that many scoring jobs never each run the fit.
      chunk: scores are stored in chunks of this many examples under
        `<cache_dir>/scores/` (`ifscale.scores`); a rerun skips finished chunks, so a killed
        run redoes at most one.
      shards, shard: score only the `shard`-th of `shards` contiguous parts of the scored
        set (whole chunks); `experiments/merge.py` (or a multirun's callback) gathers them.
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


STAGES = ("all", "check", "fit", "score", "explain")


@dataclasses.dataclass
class PathsConfig:
    cache_dir: str = ".cache"
    data_dir: str | None = None


# ---------------------------------------------------------------------------------- run


@dataclasses.dataclass
class RunConfig:
    """Everything one run of the pipeline needs.

    `stage`: "all" (train, fit, score), "check" (load and check the inputs, then stop),
    "fit" (train and fit only: the fit is cached for scoring jobs), "score" (with
    `score.require_fit`, only from a cached fit) or "explain" (the top proponents and
    opponents of chosen test predictions, `explain`).

    The data kind of `dataset` checks that the other parts fit it (a Transformer on
    images, permutation noise on images... are refused here).
    """

    # No defaults: the data and the model are always chosen (their schema depends on them).
    dataset: DataConfig = MISSING
    noise: NoiseConfig = dataclasses.field(default_factory=NoiseConfig)
    model: ModelConfig = MISSING
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    select: SelectConfig = dataclasses.field(default_factory=SelectConfig)
    explain: ExplainConfig = dataclasses.field(default_factory=ExplainConfig)
    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    name: str = "default"
    seed: int = 0
    progress: bool = True
    stage: str = "all"

    def __post_init__(self):
        from ifscale.kinds import kind_of  # the kinds import this module

        check(self.seed >= 0, "seed", "must be an integer >= 0")
        check(self.stage in STAGES, "stage", f"must be one of {STAGES}, got {self.stage!r}")
        check(
            self.stage in ("all", "check") or self.method.name != "none",
            "stage",
            f"stage={self.stage} needs a method (method=arnoldi, ...)",
        )
        check(
            self.stage in ("all", "check") or self.select.method is None,
            "stage",
            "the fit and score stages are for scoring runs, not data cleaning (select)",
        )
        if self.stage == "explain":
            from ifscale.influence import METHODS

            check(
                self.method.name != "none" and METHODS[self.method.name].pairwise,
                "method.name",
                f"stage=explain needs a method with pairwise influence (arnoldi, randproj, "
                f"exact, lissa, tracin), got {self.method.name!r}",
            )
        kind_of(self.dataset).check(self)
        if self.select.method == "influence":
            check(
                self.method.name in ("arnoldi", "randproj", "loss"),
                "method.name",
                "selection by influence needs arnoldi or randproj (or the loss baseline), got "
                f"{self.method.name!r}",
            )

    @classmethod
    def schema(cls, dataset_kind: str = "images", model: str = "cnn_large", method: str = "none"):
        """The OmegaConf schema of a run whose parts have these schemas."""
        from ifscale.kinds import DATA_CONFIGS

        check(
            dataset_kind in DATA_CONFIGS,
            "dataset.kind",
            f"must be one of {sorted(DATA_CONFIGS)}, got {dataset_kind!r}",
        )
        check(
            model in MODEL_SCHEMAS,
            "model.name",
            f"unknown model {model!r}; choose from {sorted(MODEL_SCHEMAS)}",
        )
        check(
            method in METHOD_SCHEMAS,
            "method.name",
            f"unknown method {method!r}; choose from {sorted(METHOD_SCHEMAS)}",
        )
        base = OmegaConf.structured(cls)
        parts = {
            "dataset": OmegaConf.structured(DATA_CONFIGS[dataset_kind]),
            "model": OmegaConf.structured(MODEL_SCHEMAS[model]),
            "method": OmegaConf.structured(METHOD_SCHEMAS[method]),
        }
        return OmegaConf.merge(base, parts)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Builds and checks a config from a plain dict (e.g. `to_dict`'s output, a run's
        `config.json` or a resolved Hydra config); raises `ConfigError` naming the bad key."""
        from ifscale.legacy import upgrade_old_run_config

        raw = upgrade_old_run_config(raw)
        schema = cls.schema(
            raw.get("dataset", {}).get("kind", "images"),
            raw.get("model", {}).get("name", "cnn_large"),
            raw.get("method", {}).get("name", "none"),
        )
        try:
            merged = OmegaConf.merge(schema, raw)
        except OmegaConfBaseException as e:
            raise ConfigError(one_line(e)) from None
        return build(merged)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (as `from_dict` takes it)."""
        d = dataclasses.asdict(self)
        if isinstance(d["method"]["layers"], tuple):
            d["method"]["layers"] = list(d["method"]["layers"])
        return d


def build(cfg) -> RunConfig:
    """A `RunConfig` from a composed OmegaConf config (Hydra's), every part checked."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None


def one_line(error: OmegaConfBaseException) -> str:
    """OmegaConf's error as `<full key>: <message>`."""
    message = str(getattr(error, "msg", "") or error).splitlines()[0]
    key = getattr(error, "full_key", None)
    return f"{key}: {message}" if key else message
