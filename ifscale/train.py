"""Training with Optax: one jitted step, evenly spaced checkpoints for TracIn."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ifscale.config import TrainConfig
from ifscale.models import init_params
from ifscale.utils import check, flatten_tree, stream_key, stream_rng, unflatten_tree

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainedModel:
    """The output of training.

    Attributes:
      params: final parameters (a pytree).
      checkpoint_params: the K kept checkpoints stacked along a leading axis (pytree of
        [K, ...]).
      checkpoint_steps: [K] optimizer steps completed at each checkpoint.
      checkpoint_lrs: [K] learning rate in force at each checkpoint.
      info: test_accuracy, train_time_s (wall, compilation included), final_loss, n_steps.
    """

    params: Any
    checkpoint_params: Any
    checkpoint_steps: np.ndarray
    checkpoint_lrs: np.ndarray
    info: dict[str, Any]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            **flatten_tree(self.params, "params"),
            **flatten_tree(self.checkpoint_params, "checkpoints"),
            "checkpoint_steps": self.checkpoint_steps,
            "checkpoint_lrs": self.checkpoint_lrs,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> TrainedModel:
        return cls(
            params=jax.tree_util.tree_map(jnp.asarray, unflatten_tree(arrays, "params")),
            checkpoint_params=unflatten_tree(arrays, "checkpoints"),
            checkpoint_steps=arrays["checkpoint_steps"],
            checkpoint_lrs=arrays["checkpoint_lrs"],
            info=info,
        )


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example softmax cross-entropy: [b, classes], [b] -> [b]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def l2_penalty(params, l2: float) -> jnp.ndarray:
    leaves = jax.tree_util.tree_leaves(params)
    return 0.5 * l2 * sum(jnp.vdot(x, x) for x in leaves)


def make_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, total_steps)
    if cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.learning_rate, max(total_steps - warmup, 1))
    else:
        main = optax.constant_schedule(cfg.learning_rate)
    if not warmup:
        return main
    ramp = optax.linear_schedule(cfg.learning_rate / warmup, cfg.learning_rate, max(warmup - 1, 1))
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(cfg: TrainConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(schedule)
    return optax.sgd(schedule, momentum=cfg.momentum or None)


def check_schedule(cfg: TrainConfig, n: int) -> int:
    """The number of training steps on `n` examples, or ConfigError (one line) when the
    batch is larger than the data or the kept checkpoints outnumber the steps: checked
    before training starts."""
    steps_per_epoch = n // cfg.batch_size
    check(
        steps_per_epoch >= 1,
        "train.batch_size",
        f"{cfg.batch_size} is larger than the {n} training examples",
    )
    total = cfg.steps or steps_per_epoch * cfg.epochs
    checkpoint_steps(total, cfg.kept_checkpoints)
    return total


def checkpoint_steps(total_steps: int, k: int) -> np.ndarray:
    """K evenly spaced step counts in (0, total_steps], the last being total_steps."""
    check(
        k <= total_steps,
        "train.kept_checkpoints",
        f"{k} checkpoints need at least {k} steps, but training has {total_steps}",
    )
    return np.unique(np.round(np.linspace(total_steps / k, total_steps, k)).astype(np.int64))


def accuracy(model: nn.Module, params, x: np.ndarray, y: np.ndarray, batch_size: int = 1000):
    """Top-1 accuracy, batched with a padded last batch (one compilation)."""
    predict = jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb), -1))
    correct = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        n = len(xb)
        if n < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - n, *xb.shape[1:]), xb.dtype)])
        correct += int((np.asarray(predict(params, xb))[:n] == y[start : start + n]).sum())
    return correct / len(x)


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Trains an image classifier with mean cross-entropy (+ optional L2); see `train_loop`.

    Args:
      model: a Flax module mapping [b, ...] inputs to [b, classes] logits.
      x_train, y_train: training inputs and (possibly noisy) labels.
      cfg: optimisation settings.
      seed: seeds initialisation ("init" stream) and shuffling ("shuffle" stream).
      x_test, y_test: if given, test accuracy is reported in `info`.
      progress: show a progress bar with the loss.
    """

    def loss_fn(params, batch, key):
        xb, yb = batch
        logits = model.apply({"params": params}, xb, train=True, rngs={"dropout": key})
        return cross_entropy(logits, yb).mean()

    def evaluate(params):
        if x_test is None:
            return {}
        return {"test_accuracy": accuracy(model, params, x_test, y_test)}

    params = init_params(model, x_train.shape[1:], stream_key(seed, "init"))
    return train_loop(params, loss_fn, (x_train, y_train), cfg, seed, evaluate, progress)


def train_loop(
    params,
    loss_fn,
    arrays: tuple[np.ndarray, ...],
    cfg: TrainConfig,
    seed: int,
    evaluate=None,
    progress: bool = True,
    evaluate_at: tuple[int, ...] = (),
) -> TrainedModel:
    """The training loop every model shares: shuffled equal batches, one jitted Optax step,
    K evenly spaced checkpoints, a divergence check.

    Args:
      params: initial parameters.
      loss_fn: `(params, batch, key) -> scalar` mean training loss of a batch (a tuple of
        row slices of `arrays`); `key` seeds dropout. `cfg.l2` is added here.
      arrays: the training set as arrays sharing a leading axis.
      cfg: optimisation settings.
      seed: seeds shuffling ("shuffle" stream) and dropout ("dropout" stream).
      evaluate: `params -> dict` of test metrics merged into `info` (e.g. accuracy, BLEU).
      progress: show a progress bar with the loss.
      evaluate_at: steps after which `evaluate` also runs; `info["evaluations"]` lists
        them as {"step": s, **metrics} (e.g. BLEU after a short and a long budget).

    Returns:
      A `TrainedModel`.

    Raises:
      TrainingDivergedError: the loss became NaN or infinite (names the step).
    """
    n = len(arrays[0])
    steps_per_epoch = n // cfg.batch_size
    total = check_schedule(cfg, n)
    epochs = -(-total // steps_per_epoch)
    evaluations = []
    save_at = checkpoint_steps(total, cfg.kept_checkpoints)
    schedule = make_schedule(cfg, total)
    tx = make_optimizer(cfg, schedule)

    def objective(params, batch, key):
        return loss_fn(params, batch, key) + l2_penalty(params, cfg.l2)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state, batch):
        params, opt_state, count, first_bad = state
        key = jax.random.fold_in(dropout_key, count)
        loss, grads = jax.value_and_grad(objective)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # Remember the first non-finite step without a host sync on every step.
        first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(loss), count, first_bad)
        return (params, opt_state, count + 1, first_bad), loss

    dropout_key = stream_key(seed, "dropout")
    state = (params, tx.init(params), jnp.zeros((), jnp.int32), -jnp.ones((), jnp.int32))
    rng = stream_rng(seed, "shuffle")
    saved = []
    recent = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, mininterval=1.0)
    done = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        for i in range(min(steps_per_epoch, total - done)):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            state, loss = step(state, tuple(a[idx] for a in arrays))
            recent.append(loss)
            done += 1
            if done in save_at:
                saved.append(jax.device_get(state[0]))
            if done in evaluate_at and evaluate is not None and done != total:
                evaluations.append({"step": done, **evaluate(state[0])})
            if done % cfg.log_every == 0 or done == total:
                first_bad = int(state[3])
                if first_bad >= 0:
                    bar.close()
                    bad = float(np.asarray(recent)[first_bad - (done - len(recent))])
                    raise TrainingDivergedError(
                        f"training loss became {bad} at step {first_bad + 1} of {total} "
                        f"(epoch {epoch + 1}). Look at train.learning_rate="
                        f"{cfg.learning_rate}, train.optimizer={cfg.optimizer}, "
                        f"train.momentum={cfg.momentum}, train.batch_size={cfg.batch_size}, "
                        f"train.l2={cfg.l2}, and dataset.scale (unscaled pixels make large "
                        "activations)."
                    )
                mean_loss = float(np.mean(np.asarray(recent)))
                recent = []
                bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}")
                bar.update(done - bar.n)
    bar.close()
    jax.block_until_ready(state)
    train_time = time.perf_counter() - start

    params = state[0]
    info = {
        "train_time_s": train_time,
        "final_loss": mean_loss,
        "n_steps": total,
        "steps_per_epoch": steps_per_epoch,
    }
    if evaluate is not None:
        final = evaluate(params)
        info.update(final)
        if evaluate_at:
            evaluations.append({"step": total, **final})
            info["evaluations"] = [e for e in evaluations if e["step"] in evaluate_at]
    return TrainedModel(
        params=params,
        checkpoint_params=jax.tree_util.tree_map(lambda *xs: np.stack(xs), *saved),
        checkpoint_steps=save_at,
        checkpoint_lrs=np.asarray([float(schedule(s - 1)) for s in save_at], np.float64),
        info=info,
    )
