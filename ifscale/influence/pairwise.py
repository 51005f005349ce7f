"""Explaining predictions: the training examples that support and oppose each test example.

For test examples z_1..z_m and every training example x, I(x, z) = <∇L(z), H⁻¹ ∇L(x)> (the
method's `influence`). I > 0: x is a **proponent** of z (removing x would raise L(z), by
about I/n with H the Hessian of the mean loss over n examples); I < 0: an **opponent**.
TracIn's Σ η_t <∇L(z; θ_t), ∇L(x; θ_t)> has the same sign: > 0 means the steps on x
lowered L(z).

`top_influences` streams the training set in fixed-shape batches (data-parallel over the
mesh, like self-influence scoring) and keeps a running top-k of proponents and of opponents
per test example: an [m, n] matrix is never formed. The test side is computed once
(`InfluenceMethod.test_side`: for projected methods M·U∇L(z)), so each training example
costs one projection (or one gradient) whatever m.

    from ifscale.influence import Arnoldi, top_influences
    method = Arnoldi(n=100, pbar=20)
    state = method.fit(task, params, fit_batches, key)
    top = top_influences(method, state, (x_train, y_train), (x_test[:8], y_test[:8]), k=10)
    top.proponents[0], top.proponent_scores[0]   # the 10 strongest supporters of test example 0
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ifscale.influence.protocol import InfluenceMethod
from ifscale.influence.scoring import _size, _take, place
from ifscale.influence.sharding import make_mesh
from ifscale.influence.task import Batch
from ifscale.utils import check


@dataclasses.dataclass
class TopInfluences:
    """The k strongest proponents and opponents of each of m test examples.

    Attributes:
      proponents: [m, k] positions in the training data, largest influence first.
      proponent_scores: [m, k] their influence I(x, z) (float64).
      opponents: [m, k] positions, most negative influence first.
      opponent_scores: [m, k] their influence.
      seconds: the pass over the training set, compilation excluded (the first batch is
        counted at the steady rate of the others).
      compile_seconds: the first batch (compilation and one batch).
      n_train: training examples streamed.
    """

    proponents: np.ndarray
    proponent_scores: np.ndarray
    opponents: np.ndarray
    opponent_scores: np.ndarray
    seconds: float
    compile_seconds: float
    n_train: int

    @property
    def examples_per_s(self) -> float:
        """Training examples per second (each against all m test examples)."""
        return self.n_train / self.seconds if self.seconds > 0 else float("inf")


class RunningTop:
    """The k largest and k smallest values per row seen so far, with their positions (ties
    go to the earlier position, so the result does not depend on the batch size)."""

    def __init__(self, rows: int, k: int):
        self.k = k
        self.high = (np.full((rows, 0), -np.inf), np.zeros((rows, 0), np.int64))
        self.low = (np.full((rows, 0), np.inf), np.zeros((rows, 0), np.int64))

    def add(self, scores: np.ndarray, positions: np.ndarray) -> None:
        """`scores` [rows, b] of the training examples at `positions` [b]."""
        index = np.broadcast_to(positions, scores.shape)
        self.high = self._keep(self.high, scores, index, descending=True)
        self.low = self._keep(self.low, scores, index, descending=False)

    def _keep(self, best, scores, index, descending: bool):
        values = np.concatenate([best[0], scores], axis=1)
        where = np.concatenate([best[1], index], axis=1)
        key = -values if descending else values
        order = np.lexsort((where, key), axis=1)[:, : self.k]  # by value, then position
        return np.take_along_axis(values, order, 1), np.take_along_axis(where, order, 1)


def stream_influence(
    method: InfluenceMethod,
    state,
    train: Batch,
    test_batch: Batch,
    on_batch: Callable[[int, np.ndarray], None],
    batch_size: int = 256,
    progress: bool = True,
    mesh: Mesh | None = None,
    desc: str = "influence",
) -> tuple[float, float]:
    """Streams every training example of `train` against all of `test_batch` in
    fixed-shape batches (data-parallel over the mesh), handing each batch's [m, b] influence
    (float64) to `on_batch(start, scores)`: an [m, n] matrix is never formed.

    The test side is computed once (`InfluenceMethod.test_side`), so each training example
    costs one projection (or one gradient) whatever m.

    Returns:
      (seconds of the test side and of the pass, the pass's compilation excluded: its first
      batch is counted at the steady rate of the others; seconds of the first batch:
      compilation and one batch). The test side is timed whole (for LISSA, its inverse
      Hessian-vector products are most of the cost).
    """
    n = _size(train)
    check(method.pairwise, "method.name", f"{method.name} defines no pairwise influence")
    check(n >= 1, "explain", "no training examples to attribute")
    mesh = make_mesh() if mesh is None else mesh
    n_dev = mesh.shape["data"]
    batch_size = -(-min(batch_size, n) // n_dev) * n_dev
    sample = _take(train, np.arange(min(batch_size, n)))
    state = place(method.prepare(state, sample, mesh=mesh), mesh)
    clock = time.perf_counter()
    side = jax.block_until_ready(method.test_side(state, place(test_batch, mesh)))
    side_seconds = time.perf_counter() - clock
    sharded = NamedSharding(mesh, PartitionSpec("data"))

    def batches():
        for start in range(0, n, batch_size):
            rows = np.arange(start, start + batch_size)
            valid = int(min(batch_size, n - start))
            rows[valid:] = start  # pad with a real example: no NaN from all-zero inputs
            yield start, valid, jax.device_put(_take(train, rows), sharded)

    def collect(start, valid, out):
        scores = np.asarray(out, np.float64)[:, :valid]
        if not np.isfinite(scores).all():
            raise FloatingPointError(
                f"non-finite influence for training examples from {start} (a gradient or the "
                "curvature is NaN/Inf: check the trained model and the method's eigenvalues)"
            )
        on_batch(start, scores)
        bar.update(valid)

    bar = tqdm(total=n, desc=desc, unit="ex", disable=not progress, mininterval=1.0)
    stream = batches()
    start, valid, first = next(stream)
    clock = time.perf_counter()
    out = jax.block_until_ready(method.influence_on(state, first, side))
    compile_seconds = time.perf_counter() - clock
    collect(start, valid, out)
    clock = time.perf_counter()
    pending = None  # dispatch batch i+1 before reading batch i back
    for start, valid, batch in stream:
        current = (start, valid, method.influence_on(state, batch, side))
        if pending is not None:
            collect(*pending)
        pending = current
    if pending is not None:
        collect(*pending)
    seconds = time.perf_counter() - clock
    bar.close()
    if n > batch_size:  # the first batch at the steady rate of the rest
        seconds *= n / (n - min(batch_size, n))
    else:  # one batch: time it again, compiled
        clock = time.perf_counter()
        jax.block_until_ready(method.influence_on(state, first, side))
        seconds = time.perf_counter() - clock
    return side_seconds + seconds, compile_seconds


def top_influences(
    method: InfluenceMethod,
    state,
    train: Batch,
    test_batch: Batch,
    k: int = 20,
    batch_size: int = 256,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> TopInfluences:
    """The top-k proponents and opponents in `train` of each example of `test_batch`.

    Args:
      method: a fitted influence method that defines pairwise influence.
      state: its fitted state.
      train: the training examples (a pytree of host arrays with a leading [n] axis).
      test_batch: the m test examples (a pytree with a leading [m] axis).
      k: how many proponents and opponents to keep per test example (k <= n).
      batch_size: training examples per step, rounded up to a multiple of the mesh's
        `data` size.
      progress: a progress bar in training examples/s.
      mesh: training batches are split over its `data` axis (default: all devices).

    Returns:
      `TopInfluences`; positions index `train`.
    """
    n = _size(train)
    check(1 <= k <= n, "explain.top_k", f"must be in [1, {n}] (the training examples), got {k}")
    top = RunningTop(_size(test_batch), k)
    seconds, compile_seconds = stream_influence(
        method,
        state,
        train,
        test_batch,
        lambda start, scores: top.add(scores, np.arange(start, start + scores.shape[1])),
        batch_size,
        progress,
        mesh,
        desc=f"{method.name} explain",
    )
    return TopInfluences(
        proponents=top.high[1],
        proponent_scores=top.high[0],
        opponents=top.low[1],
        opponent_scores=top.low[0],
        seconds=seconds,
        compile_seconds=compile_seconds,
        n_train=n,
    )


def subset_sums(
    method: InfluenceMethod,
    state,
    train: Batch,
    test_batch: Batch,
    masks: np.ndarray,
    batch_size: int = 256,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, float]:
    """[m, M] Σ_{i ∈ S_j} I(x_i, z) for each test example z of `test_batch` and each
    subset S_j of `train` (row j of `masks` [M, n], bool): the predictions of the linear
    datamodel that the linear datamodeling score correlates with retraining. Streamed: the
    [m, n] influence is never formed. Also returns the seconds of the test side and the
    pass (the pass's compilation excluded)."""
    masks = np.asarray(masks, np.float64)
    check(masks.ndim == 2 and masks.shape[1] == _size(train), "lds", "one mask column per example")
    sums = np.zeros((_size(test_batch), masks.shape[0]))

    def add(start, scores):
        sums[:] += scores @ masks[:, start : start + scores.shape[1]].T

    seconds, _ = stream_influence(
        method, state, train, test_batch, add, batch_size, progress, mesh, f"{method.name} lds"
    )
    return sums, seconds
