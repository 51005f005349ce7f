"""Typed run configuration: the types, defaults and range checks of every setting.

A leaf: it imports nothing of ifscale but `ifscale.utils`, so every layer may use it. Each
part of a run is a dataclass (`data`, `model`, `method`, `stages`); `RunConfig` holds them.
`experiments/schema.py` registers them in Hydra's ConfigStore, so Hydra and OmegaConf refuse
unknown keys and wrong types naming the key; `conf/` YAML files hold only presets and table
rows. Range checks and checks across parts that need nothing but the config run once, in
`__post_init__`, and raise `ConfigError` naming the key.

What needs the registries of the layers above (which schema a dataset, model or method name
takes; whether a method explains pairs; whether a domain of data takes this model and noise)
is in `ifscale.run.compose`: `validate(cfg)` checks a built config, `from_dict` builds and
checks one from plain data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import MISSING

from ifscale.config.data import CRAWL_NOISE_KINDS, NOISE_KINDS, DataConfig, NoiseConfig
from ifscale.config.method import SEQUENCE_LOSSES, MeshConfig, MethodConfig, ScoreConfig
from ifscale.config.model import (
    MODEL_SCHEMAS,
    CNNConfig,
    ModelConfig,
    TrainConfig,
    TransformerConfig,
)
from ifscale.config.stages import ExplainConfig, LdsConfig, SelectConfig
from ifscale.utils import check

__all__ = [
    "CRAWL_NOISE_KINDS",
    "MODEL_SCHEMAS",
    "NOISE_KINDS",
    "SEQUENCE_LOSSES",
    "STAGES",
    "CNNConfig",
    "DataConfig",
    "ExplainConfig",
    "LdsConfig",
    "MeshConfig",
    "MethodConfig",
    "ModelConfig",
    "NoiseConfig",
    "PathsConfig",
    "RunConfig",
    "ScoreConfig",
    "SelectConfig",
    "TrainConfig",
    "TransformerConfig",
]

# What a run does (`stage`); `ifscale.run.stages.STAGES` holds the code of each.
STAGES = ("all", "check", "fit", "score", "explain", "select", "merge", "retrain", "lds")
# The stages that need an influence method.
METHOD_STAGES = ("fit", "score", "explain", "merge", "lds")
# Selections by influence rank the pairs by these methods' self-influence.
SELECTING_METHODS = ("arnoldi", "randproj", "loss")


@dataclasses.dataclass
class PathsConfig:
    cache_dir: str = ".cache"
    data_dir: str | None = None


@dataclasses.dataclass
class RunConfig:
    """Everything one run of the pipeline needs.

    `stage`: "all" (train; with a method, fit and score the training set), "check" (load and
    check the inputs, then stop), "fit" (train and fit only: the fit is stored for scoring
    jobs), "score" (as all; with `score.require_fit`, only from a stored fit), "explain"
    (the top proponents and opponents of chosen test predictions, `explain`), "select" (a
    data cleaning of Table 3, `select`), "merge" (gather the stored scores of a scoring's
    shards; nothing is fitted or scored), "retrain" (the ground truth of the linear
    datamodeling score: models retrained on random subsets, `lds`), "lds" (the method's
    attributions scored against that ground truth).
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
    lds: LdsConfig = dataclasses.field(default_factory=LdsConfig)
    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    name: str = "default"
    seed: int = 0
    progress: bool = True
    stage: str = "all"

    def __post_init__(self):
        check(self.seed >= 0, "seed", "must be an integer >= 0")
        check(self.stage in STAGES, "stage", f"must be one of {STAGES}, got {self.stage!r}")
        check(
            self.stage not in METHOD_STAGES or self.method.name != "none",
            "stage",
            f"stage={self.stage} needs a method (method=arnoldi, ...)",
        )
        check(
            self.select.method is None or self.stage == "select",
            "stage",
            f"select.method={self.select.method} is a data cleaning: run it with stage=select",
        )
        check(
            self.stage != "select" or self.select.method is not None,
            "select.method",
            "stage=select needs a selection: all, precleaning, random or influence",
        )
        if self.select.method == "influence":
            check(
                self.method.name in SELECTING_METHODS,
                "method.name",
                "selection by influence needs arnoldi or randproj (or the loss baseline), got "
                f"{self.method.name!r}",
            )

    def replace_method(self, options: dict[str, Any]) -> RunConfig:
        """This config with `options` of its method changed (checked on construction)."""
        return dataclasses.replace(self, method=dataclasses.replace(self.method, **options))

    @property
    def requires_stored_fit(self) -> bool:
        """Whether the run must find its method's fit stored and never fit: a scoring job
        (`score.require_fit`) or a merge."""
        return self.score.require_fit or self.stage == "merge"

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (as `ifscale.run.compose.from_dict` takes it)."""
        d = dataclasses.asdict(self)
        if isinstance(d["method"]["layers"], tuple):
            d["method"]["layers"] = list(d["method"]["layers"])
        return d
