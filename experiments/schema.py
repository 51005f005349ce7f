"""Registers ifscale's config dataclasses in Hydra's ConfigStore.

The dataclasses of `ifscale.config` (and the method and dataset schemas that
`ifscale.run.compose` and `ifscale.domains` build on them) are the only definition of types
and defaults; this module makes them Hydra schemas (the library itself never imports
Hydra). `conf/` files extend them: a preset starts with `defaults: [<schema>, _self_]` and
sets what it changes.

  config_schema                 the run (`conf/config.yaml` builds on it)
  dataset/base_<kind>           a data domain's schema: base_images, base_translation
  model/base_cnn, base_transformer
  method/<name>                 none and every method: the shared keys + its hyperparameters
  noise/base, train/default, score/default, select/default
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from ifscale.config import (
    CNNConfig,
    NoiseConfig,
    RunConfig,
    ScoreConfig,
    SelectConfig,
    TrainConfig,
    TransformerConfig,
)
from ifscale.domains import DATA_SCHEMAS
from ifscale.run.compose import METHOD_SCHEMAS


def register() -> None:
    """Stores every schema (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=RunConfig)
    for kind, schema in DATA_SCHEMAS.items():
        store.store(group="dataset", name=f"base_{kind}", node=schema)
    store.store(group="model", name="base_cnn", node=CNNConfig)
    store.store(group="model", name="base_transformer", node=TransformerConfig)
    for name, schema in METHOD_SCHEMAS.items():
        store.store(group="method", name=name, node=schema)
    store.store(group="noise", name="base", node=NoiseConfig)
    store.store(group="train", name="default", node=TrainConfig)
    store.store(group="score", name="default", node=ScoreConfig)
    store.store(group="select", name="default", node=SelectConfig)
