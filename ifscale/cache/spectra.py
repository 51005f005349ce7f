"""`SpectrumStore`: the curvature spectra of Arnoldi, RandProj and Exact and the factors
of K-FAC and EK-FAC (`save_arrays`, in `arrays/` in place of `spectrum/`), stored with
orbax-checkpoint, and the checkpoints of an unfinished fit (`FitProgress`).

A spectrum is kept under a versioned key (`ifscale.cache.keys.fit_key`) in
`<root>/fits/<hash>/`:

  spectrum/    an orbax checkpoint: values [m] (float64), vectors [k, padded] (sharded as
               they were made), written atomically (orbax renames it into place on commit)
  meta.json    a sealed record (`ifscale.cache.integrity`): the key, the fit's info and the
               sha256 of every file of the checkpoint, written after the checkpoint committed

Only what scoring needs is stored: for Arnoldi the top `method.keep` eigenpairs and all Ritz
values, not the n basis vectors. A spectrum restores onto any mesh whose `model` axis divides
its padded width (`ifscale.influence.sharding`). A folder without meta.json (a write that
died), of another key, with a file that is missing, added or damaged (one flipped byte), or
that does not restore, is refused in one line naming the file, removed and fitted again.

An unfinished fit is checkpointed beside it, in `<hash>.partial/`, every
`method.checkpoint_every` steps (`FitProgress`, the `Resumable` of the method protocol), with
the same record and checks, so that a killed fit resumes and a damaged checkpoint is never
resumed from.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding

from ifscale.cache.atomic import write_json
from ifscale.cache.integrity import Refused, check_files, file_digests, read_record, seal
from ifscale.distributed import barrier, is_primary
from ifscale.influence.protocol import Spectrum
from ifscale.influence.sharding import Layout
from ifscale.utils import config_hash

log = logging.getLogger(__name__)


def _not_orbax_failures(record: logging.LogRecord) -> bool:
    """Drops orbax's own reports of a failed write (a traceback per background thread,
    possibly after the save returned): the failure reaches the caller as an exception, said
    in one line (`_orbax_write`)."""
    return not (record.levelno >= logging.ERROR and "orbax" in record.pathname)


# orbax logs every save and restore at INFO (through absl's logger).
logging.getLogger("absl").setLevel(logging.WARNING)
logging.getLogger("absl").addFilter(_not_orbax_failures)


# How tensorstore (under orbax) says what the file system said.
_WRITE_ERRORS = (
    ("RESOURCE_EXHAUSTED", errno.ENOSPC),
    ("No space left", errno.ENOSPC),
    ("Read-only file system", errno.EROFS),
    ("PERMISSION_DENIED", errno.EACCES),
    ("Permission denied", errno.EACCES),
)


@contextlib.contextmanager
def _orbax_write(path: Path) -> Iterator[None]:
    """A failed orbax write as one `OSError` naming `path`: orbax raises a ValueError
    carrying tensorstore's status, read here for the file-system error behind it (its
    background threads' tracebacks are dropped by `_not_orbax_failures`)."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        text = str(e)
        for marker, code in _WRITE_ERRORS:
            if marker in text:
                raise OSError(code, os.strerror(code), str(path)) from e
        raise


def _restore_spectrum(path: Path, layout: Layout) -> Spectrum:
    """The stored spectrum laid out by `layout`, whatever mesh wrote it."""
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    shape, dtype = tuple(tree["vectors"].shape), tree["vectors"].dtype
    if shape[1] % layout.model == 0:
        sharding = layout.rows()
    else:  # written unpadded by one device: read it as it was written, on one device
        sharding = jax.sharding.SingleDeviceSharding(layout.mesh.devices.flat[0])
    target = {
        "values": np.zeros(tuple(tree["values"].shape), np.float64),
        "vectors": jax.ShapeDtypeStruct(shape, dtype, sharding=sharding),
    }
    restored = checkpointer.restore(path, target)
    vectors = restored["vectors"]
    if shape[1] != layout.padded:  # re-pad for this mesh: slice to p, pad to its width
        if isinstance(sharding, NamedSharding):
            vectors = jax.jit(
                lambda a: layout.pad(a[:, : layout.size]), out_shardings=layout.rows()
            )(vectors)
        else:  # from one device to the mesh
            vectors = jax.device_put(layout.pad(vectors[:, : layout.size]), layout.rows())
    return Spectrum(np.asarray(restored["values"], np.float64), vectors)


def _committed(folder: Path, record: dict[str, Any], checkpoint: Path) -> None:
    """Writes `record` with the checksums of `checkpoint`'s files as `folder/meta.json`
    (process 0 of a job, once every process's part is written)."""
    barrier(f"ifscale-saved-{folder.name}")
    if is_primary():
        write_json(folder / "meta.json", seal(record | {"files": file_digests(checkpoint)}))
    barrier(f"ifscale-sealed-{folder.name}")


class SpectrumStore:
    """Spectra under versioned config keys (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, version: int):
        self.root = Path(root) / "fits"
        self.version = version

    def key(self, config: dict) -> dict:
        return {"version": self.version, "config": config}

    def path(self, config: dict) -> Path:
        return self.root / config_hash(self.key(config))

    def exists(self, config: dict) -> bool:
        return (self.path(config) / "meta.json").is_file()

    def load(self, config: dict, layout: Layout) -> tuple[Spectrum, dict[str, Any]] | None:
        """The spectrum of `config` laid out by `layout`, and its info; None if absent or
        refused (logged, and the folder removed)."""
        return self._load(config, "spectrum", lambda path: _restore_spectrum(path, layout))

    def save(self, config: dict, spectrum: Spectrum, info: dict[str, Any]) -> Path:
        """Writes the spectrum (orbax commits atomically), then meta.json with the key, the
        info and the checksums of the committed files."""
        tree = {"values": np.asarray(spectrum.values, np.float64), "vectors": spectrum.vectors}
        return self._save(config, "spectrum", tree, info)

    def load_arrays(self, config: dict) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The tree of host arrays stored under `config` by `save_arrays` (a factored fit,
        e.g. K-FAC's), and its info; None if absent or refused (logged, folder removed)."""
        return self._load(config, "arrays", ocp.StandardCheckpointer().restore)

    def save_arrays(self, config: dict, arrays: dict[str, Any], info: dict[str, Any]) -> Path:
        """Writes a tree of arrays (dicts and lists of them) as an orbax checkpoint, then
        meta.json, as `save` does for a spectrum."""
        return self._save(config, "arrays", jax.device_get(arrays), info)

    def _load(self, config: dict, name: str, restore):
        """(restore(the checkpoint `name`), info) if stored under `config` and it passes its
        checks; else None (a refused fit is logged and its folder removed)."""
        folder = self.path(config)
        if not folder.exists():
            return None
        try:
            record = read_record(folder / "meta.json", self.key(config))
            check_files(folder / name, record.get("files", {}))
            try:
                restored = restore((folder / name).resolve())
            except Exception as e:  # orbax/tensorstore raise many kinds for a bad checkpoint
                raise Refused(
                    f"{folder / name} does not restore ({type(e).__name__}: {e})"
                ) from None
        except Refused as e:
            log.warning("Refusing the stored fit: %s. Fitting it again.", e)
            barrier(f"ifscale-refused-{folder.name}")  # every process has read it
            if is_primary():
                shutil.rmtree(folder, ignore_errors=True)
            return None
        return restored, record["info"]

    def _save(self, config: dict, name: str, tree, info: dict[str, Any]) -> Path:
        folder = self.path(config)
        if is_primary() and folder.exists():
            shutil.rmtree(folder)
        barrier(f"ifscale-cleared-{folder.name}")
        folder.mkdir(parents=True, exist_ok=True)
        with _orbax_write(folder):
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save((folder / name).resolve(), tree)
            checkpointer.wait_until_finished()
        _committed(folder, {"key": self.key(config), "info": info}, folder / name)
        return folder

    def progress(self, config: dict, every: int | None) -> FitProgress | None:
        """The resumable state of the fit of `config` (None when `every` is None)."""
        if not every:
            return None
        return FitProgress(self.path(config).with_suffix(".partial"), self.key(config), every)


class FitProgress:
    """Checkpoints of an unfinished fit (for Arnoldi: the basis so far, the Hessenberg
    matrix, the step), one kept at a time, under the fit's key: a killed fit resumes from
    the last one. Implements `ifscale.influence.protocol.Resumable`: it stores named arrays
    at a step and knows nothing of the method."""

    def __init__(self, folder: Path, key: dict, every: int):
        self.folder = folder
        self.key = key
        self.every = every

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.folder.resolve(),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        )

    def save(self, step: int, arrays: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with _orbax_write(self.folder), self._manager() as manager:
            manager.save(step, args=ocp.args.StandardSave(arrays))
            manager.wait_until_finished()
        record = {"key": self.key, "step": step}
        _committed(self.folder, record, self.folder / str(step))
        log.info("Checkpointed the fit at step %d in %s", step, self.folder)

    def load(self, target: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """(step, arrays) of the last checkpoint if it belongs to this fit and passes its
        checks, restored like `target` (arrays or `jax.ShapeDtypeStruct`s); else None."""
        if not self.folder.exists():
            return None
        try:
            record = read_record(self.folder / "meta.json", self.key)
            step = record["step"]
            check_files(self.folder / str(step), record["files"])
            with self._manager() as manager:
                restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Refused as e:
            log.warning("Not resuming from the fit checkpoint: %s. Starting the fit over.", e)
            return None
        except Exception as e:  # a checkpoint orbax cannot read: start over
            log.warning("Not resuming from the fit checkpoint in %s (%s)", self.folder, e)
            return None
        log.info("Found the fit's checkpoint at step %d in %s", step, self.folder)
        return step, restored

    def clear(self) -> None:
        if is_primary():
            shutil.rmtree(self.folder, ignore_errors=True)
