"""The fully connected models of dattri's MNIST-10 benchmark (Deng et al., "dattri",
NeurIPS 2024): logistic regression and a 784-128-64-10 MLP, on flattened images."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp


class LogisticRegression(nn.Module):
    """One Dense layer on the flattened image: 7,850 parameters for 28x28x1 inputs (with
    biases), so the dense Hessian is the exact reference."""

    num_classes: int = 10
    min_image_size: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


class MLP(nn.Module):
    """784-128-64-10 with ReLU, and dropout 0.1 after each hidden layer while training
    (dattri's): 109,386 parameters for 28x28x1 inputs. Influence sees it without dropout."""

    num_classes: int = 10
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    min_image_size: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
