"""Model registry: names used by `conf/model/*.yaml` mapped to Flax modules."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifscale.models.cnn import CNNLarge, CNNSmall
from ifscale.models.mlp import MLP, LogisticRegression
from ifscale.models.transformer import Transformer
from ifscale.utils import ConfigError

# Image classifiers: [b, h, w, c] images -> [b, classes] logits.
MODELS: dict[str, type[nn.Module]] = {
    "cnn_small": CNNSmall,
    "cnn_large": CNNLarge,
    "logreg": LogisticRegression,  # dattri's MNIST-10 benchmark models
    "mlp": MLP,
}
# Translation models: (source ids, target ids) -> [b, T, vocab] logits. The presets differ
# only in their hyperparameters, which `conf/model/<name>.yaml` spells out.
TRANSLATION_MODELS: dict[str, type[nn.Module]] = {
    "transformer_tiny": Transformer,
    "transformer_small": Transformer,
}


def build_model(name: str, num_classes: int = 10, vocab_size: int | None = None, **hyper):
    """Returns the Flax module registered as `name`.

    Args:
      name: a key of `MODELS` or `TRANSLATION_MODELS`.
      num_classes: classes of an image classifier.
      vocab_size: vocabulary of a translation model (required for those).
      hyper: a translation model's hyperparameters (width, heads, hidden, encoder_layers,
        decoder_layers, dropout); None values keep the module's defaults.
    """
    if name in TRANSLATION_MODELS:
        if vocab_size is None:
            raise ConfigError(f"model.name: {name} needs the data's vocabulary size")
        given = {k: v for k, v in hyper.items() if v is not None}
        return TRANSLATION_MODELS[name](vocab_size=vocab_size, **given)
    if name not in MODELS:
        known = sorted([*MODELS, *TRANSLATION_MODELS])
        raise ConfigError(f"model.name: unknown model {name!r}; choose from {known}")
    return MODELS[name](num_classes=num_classes)


def init_params(model: nn.Module, input_shape: tuple[int, ...], key: jax.Array):
    """Initial parameters for inputs of shape `input_shape` (without the batch axis)."""
    return model.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = [
    "MODELS",
    "TRANSLATION_MODELS",
    "MLP",
    "CNNLarge",
    "CNNSmall",
    "LogisticRegression",
    "Transformer",
    "build_model",
    "count_params",
    "init_params",
]
