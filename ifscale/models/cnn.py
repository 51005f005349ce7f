"""The two MNIST CNNs of the paper's experiments. Like every image model they take a
`train` flag (for dropout while training; these have none)."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp


class CNNSmall(nn.Module):
    """A ~2.7k-parameter CNN, the size of Koh & Liang's small-model experiment.

    Conv 8 3x3 -> ReLU -> AvgPool 2 -> Conv 16 3x3 -> ReLU -> AvgPool 2 -> AvgPool 2
    -> Dense 10: 2,698 parameters for 28x28x1 inputs. Small enough that the dense Hessian
    (2,698 x 2,698) is the exact reference for Figures 1-2.
    """

    num_classes: int = 10
    #: height and width below which its three poolings leave no pixel.
    min_image_size: ClassVar[int] = 8

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        # A third pooling keeps the classifier small (3x3x16 features).
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)


class CNNLarge(nn.Module):
    """The Flax MNIST example CNN: 824,458 parameters for 28x28x1 inputs.

    Conv 32 3x3 -> ReLU -> AvgPool 2 -> Conv 64 3x3 -> ReLU -> AvgPool 2 -> Dense 256
    -> ReLU -> Dense 10.
    """

    num_classes: int = 10
    #: height and width below which its two poolings leave no pixel.
    min_image_size: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(self.num_classes)(x)
