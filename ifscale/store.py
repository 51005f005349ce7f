"""Cached curvature spectra and resumable fits, stored with orbax-checkpoint.

A spectrum (the one-time work of Arnoldi, RandProj, Exact) is kept under a versioned key,
like every artifact (`ifscale.artifacts`), in `<root>/fits/<hash>/`:

  spectrum/    an orbax checkpoint: values [m] (float64), vectors [k, padded] (sharded as
               they were made), written atomically (orbax renames it into place on commit)
  meta.json    the key and the fit's info, written after the checkpoint committed

Only what scoring needs is stored: for Arnoldi the top `method.keep` eigenpairs and all Ritz
values, not the n basis vectors. A spectrum restores onto any mesh whose `model` axis divides
its padded width (see `ifscale.influence.sharding`). A folder without meta.json (a write that
died), with another key, or whose checkpoint does not restore (a deleted or truncated file)
is refused and rebuilt. Loading reads each array once (no separate checksum pass: orbax's
commit and the stored key are the integrity check).

An unfinished Arnoldi iteration is checkpointed beside it, in `<hash>.partial/`, every
`method.checkpoint_every` steps (`FitProgress`), so that a killed fit resumes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding

from ifscale.influence.arnoldi import ArnoldiProgress
from ifscale.influence.protocol import Spectrum
from ifscale.influence.sharding import Layout
from ifscale.utils import canonical_json, config_hash, write_atomically

log = logging.getLogger(__name__)
# orbax logs every save and restore at INFO.
logging.getLogger("absl").setLevel(logging.WARNING)


def _write_json_atomically(path: Path, obj: Any) -> None:
    write_atomically(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


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
        refused (logged)."""
        folder = self.path(config)
        if not folder.exists():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as e:
            return self._refuse(folder, f"unreadable meta.json ({e})")
        if canonical_json(meta.get("key")) != canonical_json(self.key(config)):
            return self._refuse(folder, "its stored key differs from the requested one")
        try:
            spectrum = _restore_spectrum((folder / "spectrum").resolve(), layout)
        except Exception as e:  # orbax/tensorstore raise many kinds for a damaged checkpoint
            return self._refuse(
                folder, f"the checkpoint does not restore ({type(e).__name__}: {e})"
            )
        return spectrum, meta["info"]

    def _refuse(self, folder: Path, reason: str) -> None:
        log.warning("Refusing the cached fit at %s: %s. Rebuilding it.", folder, reason)
        shutil.rmtree(folder, ignore_errors=True)
        return None

    def save(self, config: dict, spectrum: Spectrum, info: dict[str, Any]) -> Path:
        """Writes the spectrum (orbax commits atomically), then meta.json."""
        folder = self.path(config)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(
            (folder / "spectrum").resolve(),
            {"values": np.asarray(spectrum.values, np.float64), "vectors": spectrum.vectors},
        )
        checkpointer.wait_until_finished()
        _write_json_atomically(folder / "meta.json", {"key": self.key(config), "info": info})
        return folder

    def progress(self, config: dict, every: int | None) -> FitProgress | None:
        """The resumable state of the fit of `config` (None when `every` is None)."""
        if not every:
            return None
        return FitProgress(self.path(config).with_suffix(".partial"), self.key(config), every)


class FitProgress:
    """Checkpoints of an unfinished Arnoldi iteration (basis so far, Hessenberg matrix, step),
    one kept at a time, under the fit's key: a killed fit resumes from the last one."""

    def __init__(self, folder: Path, key: dict, every: int):
        self.folder = folder
        self.key = key
        self.every = every

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.folder.resolve(),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        )

    def save(self, progress: ArnoldiProgress) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(self.folder / "key.json", self.key)
        with self._manager() as manager:
            manager.save(
                progress.step,
                args=ocp.args.StandardSave(
                    {"basis": progress.basis, "hessenberg": progress.hessenberg}
                ),
            )
            manager.wait_until_finished()
        log.info("Checkpointed the Arnoldi iteration at step %d in %s", progress.step, self.folder)

    def load(
        self, layout: Layout, shape: tuple[int, int], dtype, columns: int
    ) -> ArnoldiProgress | None:
        """The last checkpoint if it belongs to this fit and restores; else None.

        Args:
          shape: [rows, padded] of the basis (n + block rows).
          columns: the Hessenberg matrix's columns (n).
        """
        try:
            stored = json.loads((self.folder / "key.json").read_text())
        except (OSError, ValueError):
            return None
        if canonical_json(stored) != canonical_json(self.key):
            return None
        try:
            with self._manager() as manager:
                step = manager.latest_step()
                if step is None:
                    return None
                target = {
                    "basis": jax.ShapeDtypeStruct(shape, dtype, sharding=layout.rows()),
                    "hessenberg": np.zeros((shape[0], columns), np.float64),
                }
                restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # a damaged checkpoint: start over
            log.warning("Ignoring the Arnoldi checkpoint in %s (%s)", self.folder, e)
            return None
        log.info("Resuming the Arnoldi iteration from step %d (%s)", step, self.folder)
        return ArnoldiProgress(
            step, jnp.asarray(restored["basis"]), np.asarray(restored["hessenberg"])
        )

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
