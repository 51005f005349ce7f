"""A run's config composed and checked across its parts, with the registries of the layers
above `ifscale.config`: which schema a dataset, model or method name takes, and whether the
parts fit together.

- `METHOD_SCHEMAS`: the schema of each method is `MethodConfig`'s shared keys plus the
  dataclass fields of its class in `ifscale.influence.methods` (types and defaults defined
  once, there), joined by `method_schema`.
- `schema(...)`: the OmegaConf schema of a run whose parts have given schemas.
- `validate(cfg)`: what a built config must also satisfy (a known method with valid
  hyperparameters, a pairwise method for `stage=explain`, a domain that takes the model,
  the noise and the options: `Domain.check`); `build` (from Hydra) and `from_dict` (from
  plain data, e.g. a run's `config.json`) call it.
- `upgrade_old_run_config`: config.json files written by older versions, read as today's.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ifscale.config import MODEL_SCHEMAS, MethodConfig, RunConfig
from ifscale.domains import DATA_SCHEMAS, domain_of
from ifscale.influence.methods import METHODS, make_method
from ifscale.influence.protocol import InfluenceMethod
from ifscale.utils import ConfigError, check

# Settings of the shared keys that differ for one method.
# TracIn and the gradient similarities use no fit batches (one, for the example it traces).
_SHARED_DEFAULTS = {
    "tracin": {"fit_batches": 1},
    "graddot": {"fit_batches": 1},
    "gradcos": {"fit_batches": 1},
}


def method_schema(name: str, method_cls: type) -> type[MethodConfig]:
    """`MethodConfig` plus the hyperparameters of `method_cls` (its dataclass fields, with
    their types and defaults), as one schema named `<Class>Config`."""
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
    **{name: method_schema(name, cls) for name, cls in METHODS.items()},
}


def _known_method(name: str) -> None:
    check(
        name in METHOD_SCHEMAS,
        "method.name",
        f"unknown method {name!r}; choose from {sorted(METHOD_SCHEMAS)}",
    )


def method_config(name: str, **values) -> MethodConfig:
    """The method schema of `name` with `values` set (a library shortcut), checked."""
    _known_method(name)
    config = METHOD_SCHEMAS[name](**values)
    if name != "none":
        build_method(config)  # the method's own __post_init__ checks its hyperparameters
    return config


def build_method(method: MethodConfig, progress: bool = True) -> InfluenceMethod:
    """The influence method that `method` (a run's `method` settings) describes."""
    return make_method(method.name, progress=progress, **method.options())


def method_of(cfg: RunConfig) -> InfluenceMethod:
    """The run's influence method, with the run's progress bars."""
    return build_method(cfg.method, progress=cfg.progress)


def validate(cfg: RunConfig) -> RunConfig:
    """Checks what a built config must satisfy beyond its parts' own checks (ConfigError
    naming the key); returns it."""
    _known_method(cfg.method.name)
    if cfg.method.name != "none":
        method = build_method(cfg.method)
        needed = method.checkpoints_needed()
        check(
            cfg.train.kept_checkpoints >= needed,
            "train.kept_checkpoints",
            f"{cfg.method.name} reads {needed} kept checkpoints of training "
            f"({_checkpoint_options(cfg.method)}), but training keeps "
            f"{cfg.train.kept_checkpoints}",
        )
        check(
            not method.classifiers_only or domain_of(cfg.dataset).classifier,
            "method.name",
            f"{cfg.method.name} is defined for classifiers (a logit per class); "
            f"{cfg.dataset.kind} models have none",
        )
        check(
            method.retrained_models()[0] == 0 or domain_of(cfg.dataset).retrains,
            "method.ensemble",
            f"retrained models are not defined for {cfg.dataset.kind} data; use "
            "method.ensemble=checkpoints",
        )
    if cfg.stage == "explain":
        check(
            METHODS[cfg.method.name].pairwise,
            "method.name",
            "stage=explain needs a method with pairwise influence "
            f"({', '.join(n for n, m in METHODS.items() if m.pairwise)}), got "
            f"{cfg.method.name!r}",
        )
    domain_of(cfg.dataset).check(cfg)
    return cfg


def _checkpoint_options(method: MethodConfig) -> str:
    options = method.options()
    return ", ".join(f"method.{k}={options[k]}" for k in ("checkpoints", "models") if k in options)


def schema(dataset_kind: str = "images", model: str = "cnn_large", method: str = "none"):
    """The OmegaConf schema of a run whose parts have these schemas."""
    check(
        dataset_kind in DATA_SCHEMAS,
        "dataset.kind",
        f"must be one of {sorted(DATA_SCHEMAS)}, got {dataset_kind!r}",
    )
    check(
        model in MODEL_SCHEMAS,
        "model.name",
        f"unknown model {model!r}; choose from {sorted(MODEL_SCHEMAS)}",
    )
    _known_method(method)
    parts = {
        "dataset": OmegaConf.structured(DATA_SCHEMAS[dataset_kind]),
        "model": OmegaConf.structured(MODEL_SCHEMAS[model]),
        "method": OmegaConf.structured(METHOD_SCHEMAS[method]),
    }
    return OmegaConf.merge(OmegaConf.structured(RunConfig), parts)


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Builds and checks a config from a plain dict (e.g. `RunConfig.to_dict`'s output, a
    run's `config.json` or a resolved Hydra config); raises `ConfigError` naming the bad
    key."""
    raw = upgrade_old_run_config(raw)
    chosen = schema(
        raw.get("dataset", {}).get("kind", "images"),
        raw.get("model", {}).get("name", "cnn_large"),
        raw.get("method", {}).get("name", "none"),
    )
    try:
        merged = OmegaConf.merge(chosen, raw)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    return build(merged)


def build(cfg) -> RunConfig:
    """A checked `RunConfig` from a composed OmegaConf config (Hydra's)."""
    try:
        built = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    return validate(built)


def one_line(error: OmegaConfBaseException) -> str:
    """OmegaConf's error as `<full key>: <message>`."""
    message = str(getattr(error, "msg", "") or error).splitlines()[0]
    key = getattr(error, "full_key", None)
    return f"{key}: {message}" if key else message


def upgrade_old_run_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's `config.json` written by an older ifscale in today's layout, so reports still
    read old run folders: before the typed schemas (`dataset.kind` "image" or "text",
    `train.checkpoints`), and before `stage=select` (a selection ran as stage "all")."""
    dataset = raw.get("dataset", {})
    old_kind = dataset.get("kind") in ("image", "text")
    old_select = (raw.get("select") or {}).get("method") is not None and raw.get(
        "stage", "all"
    ) == "all"
    if not (old_kind or old_select):
        return raw
    raw = copy.deepcopy(raw)
    if old_select:
        raw["stage"] = "select"
    if old_kind:
        kind = "translation" if dataset["kind"] == "text" else "images"
        fields = {f.name for f in dataclasses.fields(DATA_SCHEMAS[kind])}
        raw["dataset"] = {k: v for k, v in dataset.items() if k in fields} | {"kind": kind}
        raw["model"] = {k: v for k, v in raw.get("model", {}).items() if v is not None}
        train = raw.get("train", {})
        if "checkpoints" in train:
            train["kept_checkpoints"] = train.pop("checkpoints")
    return raw
