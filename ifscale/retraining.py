"""Many small models trained at once: the retrainings behind the linear datamodeling score.

`train_many` trains one model per row of `subsets` (indices into the training set), each
from its own seed, as `ifscale.train.train_loop` would train it alone on those examples
(the same initialisation key, the same shuffles, optimiser, schedule and L2 term), but a
group of `parallel` models at a time in one compiled program: `jax.vmap` over the models of
a `jax.lax.scan` over the training steps. That is where JAX beats a loop over models: one
compilation, no Python per step, every model of the group in each kernel.

With `parallel` = 1 there is nothing to vectorise, and the steps are dispatched from Python
instead, one compiled step each: XLA's CPU backend runs a convolution inside a while loop
(what `scan` compiles to) several times slower than the same step called on its own
(cnn_small, 78 steps of batch 64 on the 2-core CPU: 4.3 s in a scan, 0.8 s step by step),
and a convolution vectorised over models slower than the models one by one, so
convolutional models train fastest one at a time (`lds.parallel=1`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ifscale.config import TrainConfig
from ifscale.train import (
    TrainingDivergedError,
    check_schedule,
    l2_penalty,
    make_optimizer,
    make_schedule,
)
from ifscale.utils import check, stream_key, stream_rng


def batch_indices(subset: np.ndarray, cfg: TrainConfig, seed: int) -> np.ndarray:
    """[steps, batch_size] the rows of the training set each step of one model takes: its
    subset shuffled each epoch by the seed's "shuffle" stream, as `train_loop` does."""
    n = len(subset)
    total = check_schedule(cfg, n)
    per_epoch = n // cfg.batch_size
    rng = stream_rng(seed, "shuffle")
    steps = []
    while len(steps) < total:
        order = rng.permutation(n)
        for i in range(min(per_epoch, total - len(steps))):
            steps.append(subset[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]])
    return np.stack(steps).astype(np.int32)


def train_many(
    init: Callable[[jax.Array], Any],
    loss_fn: Callable[[Any, tuple, jax.Array], jnp.ndarray],
    arrays: tuple[np.ndarray, ...],
    subsets: np.ndarray,
    seeds: Sequence[int],
    cfg: TrainConfig,
    parallel: int = 16,
    progress: bool = True,
    on_group: Callable[[np.ndarray, Any], None] | None = None,
) -> dict[str, float]:
    """Trains len(subsets) models, `parallel` at a time; hands each group's parameters
    (stacked on a leading [g] axis) to `on_group(models, params)`.

    Args:
      init: `key -> params` of one untrained model.
      loss_fn: `(params, batch, key) -> scalar` mean loss of a batch (a tuple of row slices
        of `arrays`; `key` seeds dropout, as in `train_loop`); `cfg.l2` is added here.
      arrays: the whole training set, arrays sharing a leading axis.
      subsets: [M, s] the training examples of each model (indices into `arrays`).
      seeds: [M] each model's seed (initialisation and shuffles).
      cfg: optimisation settings (as `train_loop`'s).
      parallel: models trained at once (vectorised over models).
      progress: a progress bar in models.
      on_group: called with (the models' positions in `subsets`, their params).

    Returns:
      {"seconds": wall time, "compile_seconds": the first group's compilation, "models": M}.

    Raises:
      TrainingDivergedError: a model's loss became NaN or infinite (names the model).
    """
    subsets = np.asarray(subsets)
    check(subsets.ndim == 2 and len(subsets) == len(seeds), "lds", "one seed per subset")
    check(parallel >= 1, "lds.parallel", f"must be >= 1, got {parallel}")
    total = check_schedule(cfg, subsets.shape[1])
    schedule = make_schedule(cfg, total)
    tx = make_optimizer(cfg, schedule)
    device_arrays = tuple(jnp.asarray(a) for a in arrays)
    run = _compiled(init, loss_fn, tx, cfg.l2, stepwise=parallel == 1)
    start = time.perf_counter()
    compile_seconds = 0.0
    bar = tqdm(total=len(subsets), desc="retrain", unit="model", disable=not progress)
    for first in range(0, len(subsets), parallel):
        models = np.arange(first, min(first + parallel, len(subsets)))
        # Equal group sizes (one compilation): the last group is padded with its first model.
        padded = np.concatenate([models, np.full(parallel - len(models), models[0])])
        steps = np.stack([batch_indices(subsets[j], cfg, int(seeds[j])) for j in padded])
        keys = jnp.stack([stream_key(int(seeds[j]), "init") for j in padded])
        dropout = jnp.stack([stream_key(int(seeds[j]), "dropout") for j in padded])
        began = time.perf_counter()
        params, losses = run(keys, dropout, jnp.asarray(steps.transpose(1, 0, 2)), device_arrays)
        jax.block_until_ready(params)
        if first == 0:
            compile_seconds = time.perf_counter() - began
        finite = np.isfinite(np.asarray(losses)).all(axis=0)[: len(models)]
        if not finite.all():
            bad = int(models[np.flatnonzero(~finite)[0]])
            raise TrainingDivergedError(
                f"retraining model {bad} (subset {bad}): the training loss became NaN or "
                f"infinite; look at train.learning_rate={cfg.learning_rate}"
            )
        if on_group is not None:
            kept = len(models)
            on_group(models, jax.tree_util.tree_map(lambda a, k=kept: a[:k], params))
        bar.update(len(models))
    bar.close()
    return {
        "seconds": time.perf_counter() - start,
        "compile_seconds": compile_seconds,
        "models": len(subsets),
    }


def _compiled(init, loss_fn, tx, l2: float, stepwise: bool = False):
    def objective(params, batch, key):
        return loss_fn(params, batch, key) + l2_penalty(params, l2)

    if stepwise:
        return _stepwise(init, objective, tx)

    @jax.jit
    def run(keys, dropout, steps, arrays):
        """keys, dropout [g] (initialisation, dropout); steps [T, g, B] row indices;
        -> params [g, ...], losses [T, g]."""
        params = jax.vmap(init)(keys)
        opt_state = jax.vmap(tx.init)(params)

        def one(params, opt_state, rows, key):
            batch = tuple(a[rows] for a in arrays)
            loss, grads = jax.value_and_grad(objective)(params, batch, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        def step(carry, rows):
            params, opt_state, count = carry
            keys = jax.vmap(lambda k: jax.random.fold_in(k, count))(dropout)
            params, opt_state, loss = jax.vmap(one)(params, opt_state, rows, keys)
            return (params, opt_state, count + 1), loss

        start = (params, opt_state, jnp.zeros((), jnp.int32))
        (params, _, _), losses = jax.lax.scan(step, start, steps)
        return params, losses

    return run


def _stepwise(init, objective, tx):
    """`run` of `_compiled` for groups of one model, its steps dispatched from Python (the
    same keys, batches and updates as the scan)."""

    @jax.jit
    def start(keys):
        params = jax.vmap(init)(keys)
        return params, jax.vmap(tx.init)(params)

    @jax.jit
    def step(params, opt_state, rows, dropout, count, arrays):
        key = jax.random.fold_in(dropout[0], count)
        params, opt_state = jax.tree_util.tree_map(lambda a: a[0], (params, opt_state))
        batch = tuple(a[rows[0]] for a in arrays)
        loss, grads = jax.value_and_grad(objective)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return jax.tree_util.tree_map(lambda a: a[None], (params, opt_state, loss))

    def run(keys, dropout, steps, arrays):
        params, opt_state = start(keys)
        losses = []
        for count in range(steps.shape[0]):
            params, opt_state, loss = step(
                params, opt_state, steps[count], dropout, jnp.int32(count), arrays
            )
            losses.append(loss)
        return params, jnp.stack(losses)

    return run
