"""Self-influence scores on disk in chunks: resumable, split into shards, merged into one.

Scoring is embarrassingly parallel over training examples, so the scored set (all training
examples, or `score.max_examples`' seeded subset, in order) is cut into chunks of
`score.chunk` examples, and each chunk is stored as soon as it is scored:

  <cache_dir>/scores/<method hash>/<data hash>/
    meta.json               the key: trained model, every method option, scored examples,
                            chunk size (written once, atomically)
    choices.json            what the first job chose that changes the last bits (the
                            projection route timed by route=auto): every later job, shard or
                            resume makes the same choice, so all chunks agree bit for bit
    chunk-000012.npz        scores of positions [12K, 13K) of the scored set, the digest of
                            the key, a sha256 over that digest, the positions and the scores,
                            and the seconds they took

The folder depends on what determines the scores (the fit and the data), not on a run's
time-stamped folder, so every job and every rerun of the same scoring finds it.

* Resume: a chunk is written to a temporary file in its folder, fsynced, and renamed into
  place (`os.replace`), so a killed run leaves at most a temporary file, never a partial
  chunk under a chunk's name. A chunk is also checked when read (`ifscale.cache.integrity`):
  the key it was scored under, its length, positions and checksum. One that fails (truncated,
  edited, a disk error, or a chunk of another scoring copied in: another p̄, another model)
  is refused in one line naming the file, removed and scored again, never counted as done
  because it exists. (A chunk deliberately forged with this scoring's key digest and a
  recomputed checksum cannot be told apart: the checksums guard against accidents and
  mix-ups, not against forgery.)
* Shards: shard i of N is the contiguous range of whole chunks [i C / N, (i+1) C / N) of the C
  chunks; N jobs (any Hydra launcher) score them independently. Within a multi-process JAX
  job the chunks of its shard are dealt round-robin to the processes.
* Merge: `ChunkStore.gather` returns every score once all chunks exist, or raises
  `IncompleteScores` naming the shards that are missing chunks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from ifscale.cache.atomic import write_bytes, write_json
from ifscale.cache.integrity import array_digest, key_digest
from ifscale.utils import canonical_json, config_hash

log = logging.getLogger(__name__)

# The method's scoring choices (`InfluenceMethod.choices`), made once per scoring.
CHOICES = "choices.json"


class IncompleteScores(RuntimeError):
    """Some chunks of a scored set are missing (the message names their shards)."""


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """How a scored set of `n` examples is cut into chunks of `chunk` and into shards."""

    n: int
    chunk: int

    @property
    def count(self) -> int:
        return -(-self.n // self.chunk)

    def span(self, j: int) -> tuple[int, int]:
        """Positions [start, stop) of chunk `j` in the scored set."""
        return j * self.chunk, min(self.n, (j + 1) * self.chunk)

    def shard(self, i: int, shards: int) -> range:
        """The chunks of shard `i` of `shards`: a contiguous range, sizes differing by <= 1."""
        return range(i * self.count // shards, (i + 1) * self.count // shards)

    def shard_of(self, j: int, shards: int) -> int:
        return next(i for i in range(shards) if j in self.shard(i, shards))


def _digest(scores: np.ndarray, key: str, span: tuple[int, int]) -> str:
    """The checksum of a chunk: the digest of its scoring's key, its positions, its scores."""
    return array_digest(np.asarray(scores, np.float64), key, f"{span[0]}:{span[1]}")


class ChunkStore:
    """The stored chunks of one chunked computation: the self-influence scores of one
    method fit on one scored set (`scores/`), or the outputs of the models retrained on
    one group of subsets each (`retrained/`, `ifscale.run.stages.retrain`). Chunk j holds
    the rows [start, stop) of the plan: float64 [stop - start, *row_shape].

    Args:
      root: the cache folder (`paths.cache_dir`).
      version: the version of the key layout (`ifscale.cache.keys`).
      method_key: what determines the function computed per row (trained model, method
        options...).
      data_key: what determines the rows (e.g. a fingerprint of the scored indices).
      plan: the chunking of the rows.
      kind: the subfolder of the cache ("scores", "retrained").
      row_shape: the shape of one row's values (() for one score per example).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        version: int,
        method_key: dict,
        data_key: dict,
        plan: ChunkPlan,
        kind: str = "scores",
        row_shape: tuple[int, ...] = (),
    ):
        self.plan = plan
        self.row_shape = tuple(row_shape)
        self.key = {
            "version": version,
            "method": method_key,
            "data": data_key,
            "n": plan.n,
            "chunk": plan.chunk,
        }
        if self.row_shape:  # (scores have none: their keys stay as they were)
            self.key["row_shape"] = list(self.row_shape)
        self.key_digest = key_digest(self.key)
        method_hash = config_hash({"version": version, "method": method_key})
        self.folder = Path(root) / kind / method_hash / config_hash(self.key)

    def open(self) -> ChunkStore:
        """Creates the folder and its meta.json; a folder holding another key (an edited
        meta.json, a hash collision) is emptied first."""
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "meta.json"
        if meta.exists():
            try:
                stored = json.loads(meta.read_text()).get("key")
            except (OSError, ValueError):
                stored = None
            if canonical_json(stored) == canonical_json(self.key):
                return self
            log.warning("Refusing %s: another key, or damaged. Scoring again.", meta)
            for path in [*self.folder.glob("chunk-*.npz"), self.folder / CHOICES]:
                path.unlink(missing_ok=True)
        write_json(meta, {"key": self.key})
        return self

    def choices(self) -> dict[str, Any] | None:
        """The scoring choices recorded by the first job (`record_choices`), or None (also
        for choices recorded under another key: copied in from another scoring)."""
        path = self.folder / CHOICES
        try:
            recorded = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            recorded = None
        if not isinstance(recorded, dict) or recorded.get("key") != self.key_digest:
            log.warning("Refusing %s: another scoring's, or damaged. Choosing again.", path)
            path.unlink(missing_ok=True)
            return None
        return recorded.get("choices")

    def record_choices(self, made: dict[str, Any]) -> dict[str, Any]:
        """Records `made` (the method's `choices`, e.g. its projection route) unless another
        job recorded its own first; returns the recorded ones, which every job then makes."""
        path = self.folder / CHOICES
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{CHOICES}-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": self.key_digest, "choices": made}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and exclusive: the first job's choices win
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return self.choices()

    def path(self, j: int) -> Path:
        return self.folder / f"chunk-{j:06d}.npz"

    def load(self, j: int) -> dict[str, Any] | None:
        """Chunk `j` as {scores, seconds, compile_seconds}, or None if absent or refused
        (a refused file is removed and logged)."""
        path = self.path(j)
        if not path.exists():
            return None
        start, stop = self.plan.span(j)
        try:
            with np.load(path, allow_pickle=False) as f:
                if "key" not in f:
                    raise ValueError("no key: scored by an older ifscale")
                fields = ("scores", "key", "sha256", "span", "seconds", "compile")
                chunk = {k: f[k] for k in fields}
            scores = chunk["scores"]
            if str(chunk["key"]) != self.key_digest:
                raise ValueError("a chunk of another scoring (another key)")
            shape = (stop - start, *self.row_shape)
            if scores.dtype != np.float64 or scores.shape != shape:
                raise ValueError(f"{scores.shape} {scores.dtype} values, not {shape}")
            if chunk["span"].tolist() != [start, stop]:
                raise ValueError(f"positions {chunk['span'].tolist()}, not {[start, stop]}")
            if str(chunk["sha256"]) != _digest(scores, self.key_digest, (start, stop)):
                raise ValueError("damaged (checksum mismatch)")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("Refusing %s (%s): scoring it again.", path, e)
            path.unlink(missing_ok=True)
            return None
        return {
            "scores": scores,
            "seconds": float(chunk["seconds"]),
            "compile_seconds": float(chunk["compile"]),
        }

    def save(self, j: int, scores: np.ndarray, seconds: float, compile_seconds: float = 0.0):
        """Stores chunk `j` atomically (temporary file, fsync, rename)."""
        start, stop = self.plan.span(j)
        scores = np.asarray(scores, np.float64)
        assert scores.shape == (stop - start, *self.row_shape), (scores.shape, start, stop)
        buffer = BytesIO()
        np.savez(
            buffer,
            scores=scores,
            key=np.array(self.key_digest),
            sha256=np.array(_digest(scores, self.key_digest, (start, stop))),
            span=np.array([start, stop]),
            seconds=np.array(seconds),
            compile=np.array(compile_seconds),
        )
        write_bytes(self.path(j), buffer.getvalue())

    def done(self, chunks) -> dict[int, dict[str, Any]]:
        """The finished chunks among `chunks` (each read and checked once)."""
        found = {}
        for j in chunks:
            chunk = self.load(j)
            if chunk is not None:
                found[j] = chunk
        return found

    def gather(self, shards: int = 1) -> tuple[np.ndarray, dict[int, dict[str, Any]]]:
        """All scores [n] in order and every chunk's record, or IncompleteScores naming the
        shards (of `shards`) that lack chunks."""
        chunks = self.done(range(self.plan.count))
        missing = [j for j in range(self.plan.count) if j not in chunks]
        if missing:
            by_shard = sorted({self.plan.shard_of(j, shards) for j in missing})
            raise IncompleteScores(
                f"{len(missing)} of {self.plan.count} chunks are not scored yet: shard(s) "
                f"{by_shard} of score.shards={shards} are missing or unfinished "
                f"(scores in {self.folder})"
            )
        scores = np.concatenate([chunks[j]["scores"] for j in range(self.plan.count)])
        return scores, chunks
