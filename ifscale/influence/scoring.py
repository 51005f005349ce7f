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
from collections.abc import Callable, Sequence

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


def stream_chunks(
    score_fn: Callable[[Batch], jnp.ndarray],
    fetch: Callable[[np.ndarray], Batch],
    spans: Sequence[tuple[int, int]],
    on_chunk: Callable[[int, np.ndarray, float, float], None],
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "score",
    mesh: Mesh | None = None,
) -> float:
    """Scores chunks of examples one after another, handing each finished chunk over.

    The examples of a chunk are read only when it is scored (`fetch`), so host memory holds
    one chunk, not the data set. Batches never cross a chunk boundary (the last batch of a
    chunk is padded): a chunk's scores do not depend on which other chunks a run scores, so a
    resumed or sharded run gives the same bits as one run over everything.

    Args:
      score_fn: maps a batch (pytree, leading axis b) to [b] scores.
      fetch: the examples at positions `index` (NumPy, on the host).
      spans: (start, stop) positions of each chunk to score, in order.
      on_chunk: called as on_chunk(i, scores [stop - start] float64, seconds, compile)
        when chunk `spans[i]` is done; seconds exclude compilation (the first batch of the
        run compiles and is counted at the steady rate of the batches after it; when it is a
        chunk's only batch, it is run a second time to be timed); compile: the seconds of
        that first batch for the first chunk, 0 for the others.
      batch_size: examples per step; rounded up to a multiple of the mesh's `data` size.
      progress: progress bar with examples/s.
      desc: progress bar label.
      mesh: batches are split over its `data` axis (default: all devices).

    Returns:
      The seconds of the first batch (compilation, route choice, one batch).

    Raises:
      FloatingPointError: a score is NaN or Inf (names the example positions).
    """
    check(batch_size >= 1, "score.batch_size", f"must be >= 1, got {batch_size}")
    if not spans:
        return 0.0
    mesh = make_mesh() if mesh is None else mesh
    n_dev = mesh.shape["data"]
    longest = max(stop - start for start, stop in spans)
    batch_size = -(-min(batch_size, longest) // n_dev) * n_dev
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    # Not jitted here: methods jit their own pieces (and loop over HVP batches or
    # checkpoints in Python, which XLA's CPU backend runs faster than a loop in one jit).

    def batches():
        """(chunk i, offset in the chunk, valid rows, device batch) in order."""
        for i, (start, stop) in enumerate(spans):
            host = fetch(np.arange(start, stop))
            for offset in range(0, stop - start, batch_size):
                rows = np.arange(offset, offset + batch_size)
                valid = int(min(batch_size, stop - start - offset))
                rows[valid:] = offset  # pad with a real example: no NaN from all-zero inputs
                yield i, offset, valid, jax.device_put(_take(host, rows), sharded)

    total = sum(stop - start for start, stop in spans)
    bar = tqdm(total=total, desc=desc, unit="ex", disable=not progress, mininterval=1.0)
    buffers = [np.empty(stop - start, np.float64) for start, stop in spans]
    filled = [0] * len(spans)
    clock = {"mark": 0.0, "skipped": 0}  # the first chunk's untimed (compile) rows
    compile_seconds = 0.0

    def collect(i, offset, valid, out):
        values = np.asarray(out, np.float64)[:valid]
        if not np.isfinite(values).all():
            bad = spans[i][0] + offset + np.flatnonzero(~np.isfinite(values))
            raise FloatingPointError(
                f"non-finite influence scores for examples {bad[:10].tolist()} "
                "(a gradient or the curvature is NaN/Inf: check the trained model and the "
                "method's eigenvalues)"
            )
        buffers[i][offset : offset + valid] = values
        filled[i] += valid
        bar.update(valid)
        if filled[i] == len(buffers[i]):
            now = time.perf_counter()
            seconds = now - clock["mark"]
            n_chunk = len(buffers[i])
            if clock["skipped"]:  # the compile batch is counted at this chunk's steady rate
                seconds *= n_chunk / (n_chunk - clock["skipped"])
                clock["skipped"] = 0
            on_chunk(i, buffers[i], seconds, compile_seconds if i == 0 else 0.0)
            buffers[i] = None  # one chunk in host memory at a time
            clock["mark"] = time.perf_counter()

    stream = batches()
    i, offset, valid, first = next(stream)
    warm_start = time.perf_counter()
    out = jax.block_until_ready(score_fn(first))
    compile_seconds = time.perf_counter() - warm_start
    clock["mark"] = time.perf_counter()
    if valid == spans[0][1] - spans[0][0]:  # the compile batch is the whole first chunk
        out = jax.block_until_ready(score_fn(first))
    else:
        clock["skipped"] = valid
    collect(i, offset, valid, out)
    pending = None  # double-buffer: dispatch batch i+1 before reading batch i back
    for i, offset, valid, batch in stream:
        current = (i, offset, valid, score_fn(batch))
        if pending is not None:
            collect(*pending)
        pending = current
    if pending is not None:
        collect(*pending)
    bar.close()
    return compile_seconds


def stream_scores(
    score_fn: Callable[[Batch], jnp.ndarray],
    data: Batch,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "score",
    mesh: Mesh | None = None,
) -> ScoreResult:
    """Applies `score_fn` ([b]-shaped scores of a batch) to every example of `data` (one
    chunk of `stream_chunks`).

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
    n = _size(data)
    check(n >= 1, "score", "no examples to score")
    done = {}
    compile_seconds = stream_chunks(
        score_fn,
        lambda index: _take(data, index),
        [(0, n)],
        lambda i, scores, seconds, _: done.update(scores=scores, seconds=seconds),
        batch_size,
        progress,
        desc,
        mesh,
    )
    return ScoreResult(done["scores"], done["seconds"], compile_seconds)


def _size(data: Batch) -> int:
    return len(jax.tree_util.tree_leaves(data)[0])


def prepared_scorer(
    method: InfluenceMethod,
    state,
    sample: Batch,
    mesh: Mesh,
    choices: dict | None = None,
) -> tuple[Callable[[Batch], jnp.ndarray], dict]:
    """The [b] self-influence scores of a batch under a fitted method, its state prepared on
    `sample` (a batch of the data to score: route choice, or the earlier `choices`) and
    placed on `mesh`; and the choices made (`InfluenceMethod.choices`)."""
    state = place(method.prepare(state, sample, choices, mesh), mesh)
    return (lambda batch: method.self_influence(state, batch)), method.choices(state)


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
    sample = _take(data, np.arange(min(batch_size, _size(data))))
    return stream_scores(
        prepared_scorer(method, state, sample, mesh)[0],
        data,
        batch_size,
        progress,
        desc=f"{method.name} self-influence",
        mesh=mesh,
    )
