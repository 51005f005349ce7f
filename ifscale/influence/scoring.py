"""Streams a data set through a method in fixed-shape batches, data-parallel over devices.

Batches have one shape (the last is padded), so the scoring function compiles once. Each
batch is split over the `data` axis of the mesh (`ifscale.influence.sharding`; default: all
devices) along its leading axis. The method's state is replicated, except arrays already laid
out on the mesh (directions sharded over `model` stay sharded), so the same code uses one
CPU, 8 GPUs or a TPU slice. Scores go back to the host batch by batch: device memory does not
grow with the data set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ifscale.influence.protocol import InfluenceMethod
from ifscale.influence.sharding import make_mesh
from ifscale.influence.task import Batch
from ifscale.utils import check


@dataclasses.dataclass
class ScoreResult:
    """Scores of every example and how long they took.

    Attributes:
      scores: [n] float64.
      seconds: scoring time of all n examples with compilation excluded: the first batch
        compiles (its scores are kept), the clock times the batches after it (waiting for
        the device before it stops), and the first batch is counted at that steady rate.
        With a single batch, that batch is run a second time to be timed.
      compile_seconds: time of the first batch (compilation, route choice, one batch).
      examples_per_s: n / seconds, the steady rate.
    """

    scores: np.ndarray
    seconds: float
    compile_seconds: float

    @property
    def examples_per_s(self) -> float:
        return len(self.scores) / self.seconds if self.seconds > 0 else float("inf")


def place(tree, mesh: Mesh):
    """Places `tree` on `mesh`: arrays already sharded on it keep their sharding (e.g.
    directions over `model`), every other array is replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def put(x):
        laid_out = isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding)
        return x if laid_out and x.sharding.mesh == mesh else jax.device_put(x, replicated)

    return jax.tree_util.tree_map(put, tree)


def _take(data: Batch, index: np.ndarray) -> Batch:
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[index], data)


def stream_scores(
    score_fn: Callable[[Batch], jnp.ndarray],
    data: Batch,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "score",
    mesh: Mesh | None = None,
) -> ScoreResult:
    """Applies `score_fn` ([b]-shaped scores of a batch) to every example of `data`.

    Args:
      score_fn: maps a batch (pytree, leading axis b) to [b] scores.
      data: a pytree of arrays with a leading [n] axis (NumPy, on the host).
      batch_size: examples per step; rounded up to a multiple of the device count.
      progress: progress bar with examples/s.
      desc: progress bar label.
      mesh: batches are split over its `data` axis (default: all devices).

    Returns:
      A `ScoreResult`.

    Raises:
      FloatingPointError: a score is NaN or Inf (names the example indices).
    """
    check(batch_size >= 1, "score.batch_size", f"must be >= 1, got {batch_size}")
    n = _size(data)
    check(n >= 1, "score", "no examples to score")
    mesh = make_mesh() if mesh is None else mesh
    n_dev = mesh.shape["data"]
    batch_size = -(-min(batch_size, n) // n_dev) * n_dev
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    # Not jitted here: methods jit their own pieces (and loop over HVP batches or
    # checkpoints in Python, which XLA's CPU backend runs faster than a loop in one jit).
    fn = score_fn

    def batch_at(start: int) -> tuple[Batch, int]:
        index = np.arange(start, start + batch_size)
        valid = int(min(batch_size, n - start))
        index[valid:] = index[0]  # pad with a real example: no NaN from all-zero inputs
        return jax.device_put(_take(data, index), sharded), valid

    scores = np.empty(n, np.float64)
    bar = tqdm(total=n, desc=desc, unit="ex", disable=not progress, mininterval=1.0)

    def collect(item, update: bool = True):
        out, start, valid = item
        values = np.asarray(out, np.float64)[:valid]
        if not np.isfinite(values).all():
            bad = start + np.flatnonzero(~np.isfinite(values))
            raise FloatingPointError(
                f"non-finite influence scores for examples {bad[:10].tolist()} "
                "(a gradient or the curvature is NaN/Inf: check the trained model and the "
                "method's eigenvalues)"
            )
        scores[start : start + valid] = values
        if update:
            bar.update(valid)

    # The first batch compiles; its scores are kept, so a slow method (LISSA r = 100) does
    # not pay for a discarded warm-up batch.
    warm_start = time.perf_counter()
    first, valid = batch_at(0)
    collect((jax.block_until_ready(fn(first)), 0, valid))
    compile_seconds = time.perf_counter() - warm_start
    timed_from = batch_size if n > batch_size else 0  # one batch: time it again

    start_time = time.perf_counter()
    pending = None  # double-buffer: dispatch batch i+1 before reading batch i back
    for start in range(timed_from, n, batch_size):
        batch, valid = batch_at(start)
        current = (fn(batch), start, valid)
        if pending is not None:
            collect(pending, update=timed_from > 0)
        pending = current
    collect(pending, update=timed_from > 0)
    elapsed = time.perf_counter() - start_time
    bar.close()
    # Seconds for all n examples at the steady rate of the timed batches.
    seconds = elapsed * n / (n - timed_from)
    return ScoreResult(scores=scores, seconds=seconds, compile_seconds=compile_seconds)


def _size(data: Batch) -> int:
    return len(jax.tree_util.tree_leaves(data)[0])


def self_influence_scores(
    method: InfluenceMethod,
    state,
    data: Batch,
    batch_size: int = 256,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> ScoreResult:
    """Self-influence of every example of `data` under a fitted method, data-parallel over
    the `data` axis of `mesh` (default: all devices)."""
    mesh = make_mesh() if mesh is None else mesh
    state = method.prepare(state, _take(data, np.arange(min(batch_size, _size(data)))))
    state = place(state, mesh)
    return stream_scores(
        lambda b: method.self_influence(state, b),
        data,
        batch_size,
        progress,
        desc=f"{method.name} self-influence",
        mesh=mesh,
    )
