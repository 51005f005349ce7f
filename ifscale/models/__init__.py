"""Model registry: names used by `conf/model/*.yaml` mapped to Flax modules."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifscale.models.cnn import CNNLarge, CNNSmall
from ifscale.utils import ConfigError

MODELS: dict[str, type[nn.Module]] = {"cnn_small": CNNSmall, "cnn_large": CNNLarge}


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """Returns the Flax module registered as `name`."""
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](num_classes=num_classes)


def init_params(model: nn.Module, input_shape: tuple[int, ...], key: jax.Array):
    """Initial parameters for inputs of shape `input_shape` (without the batch axis)."""
    return model.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = ["MODELS", "CNNLarge", "CNNSmall", "build_model", "count_params", "init_params"]
