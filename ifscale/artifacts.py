"""An on-disk cache for expensive artifacts (trained models, method fits, scores).

An artifact is a dict of NumPy arrays plus a JSON-able `info`, stored under a key: the
config that determines it and the version of that config's layout. Whoever builds a key
bumps its version when what determines the artifact changes, so an artifact made by other
code is simply not found (and rebuilt once), never misread.

Layout: `<root>/<kind>/<hash of key>/meta.json` and one `.npy` file per array. `meta.json`
holds the key, each array's name, dtype, shape and the sha256 of its bytes, recorded at
save. A load reads each file once: the array is read, then its bytes are hashed in memory
and compared, so a truncated or corrupt file, or a key that differs from the request (a
hash collision or an edited file), is refused (and rebuilt by the caller). Writes go to a
temporary folder renamed into place, so a crash never leaves a half-written artifact under
a valid key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from ifscale.utils import canonical_json, config_hash

log = logging.getLogger(__name__)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


class ArtifactCache:
    """Stores dicts of NumPy arrays under a versioned config key.

    Args:
      root: the cache folder.
      kind: the artifact kind, a subfolder ("trained", "fits", ...).
      version: the version of the key layout of this kind (see the module docstring).
    """

    def __init__(self, root: str | os.PathLike, kind: str, version: int):
        self.root = Path(root) / kind
        self.kind = kind
        self.version = version

    def key(self, config: dict) -> dict:
        return {"version": self.version, "config": config}

    def path(self, config: dict) -> Path:
        return self.root / config_hash(self.key(config))

    def load(self, config: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """Returns (arrays, info) for `config`, or None if absent or unusable (logged)."""
        folder = self.path(config)
        if not folder.exists():
            return None
        try:
            return self._read(folder, config)
        except _Refused as e:
            log.warning("Refusing cached %s at %s: %s. Rebuilding it.", self.kind, folder, e)
            return None

    def _read(self, folder: Path, config: dict):
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise _Refused(f"unreadable meta.json ({e})") from None
        if canonical_json(meta.get("key")) != canonical_json(self.key(config)):
            raise _Refused("its stored key differs from the requested one")
        arrays = {}
        for entry in meta.get("arrays", []):
            path = folder / entry["file"]
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise _Refused(f"{entry['file']} is unreadable ({e})") from None
            if (
                array.dtype.str != entry["dtype"]
                or list(array.shape) != entry["shape"]
                or _digest(array) != entry["sha256"]
            ):
                raise _Refused(f"{entry['file']} is truncated or corrupt (checksum mismatch)")
            arrays[entry["name"]] = array
        return arrays, meta["info"]

    def save(self, config: dict, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
        """Writes an artifact atomically and returns its folder."""
        folder = self.path(config)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{folder.name}-"))
        try:
            entries = []
            for i, (name, array) in enumerate(arrays.items()):
                array = np.ascontiguousarray(array)
                file = f"{i:04d}.npy"
                np.save(tmp / file, array, allow_pickle=False)
                entries.append(
                    {
                        "name": name,
                        "file": file,
                        "dtype": array.dtype.str,
                        "shape": list(array.shape),
                        "sha256": _digest(array),
                    }
                )
            meta = {"key": self.key(config), "arrays": entries, "info": info}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            try:
                tmp.rename(folder)
            except OSError:
                # Another process (a concurrent run, another task of a multi-process job)
                # put the same artifact there first: keep theirs if it reads back.
                if self.load(config) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder


class _Refused(Exception):
    """A cached artifact that must not be used (the reason is the message)."""


def flatten_tree(tree, prefix: str) -> dict[str, np.ndarray]:
    """A nested dict of arrays as flat `{prefix/a/b: array}` entries."""
    flat = traverse_util.flatten_dict(tree, sep="/")
    return {f"{prefix}/{k}": np.asarray(v) for k, v in flat.items()}


def unflatten_tree(arrays: dict[str, np.ndarray], prefix: str):
    """Inverse of `flatten_tree` for the entries under `prefix`."""
    start = len(prefix) + 1
    flat = {k[start:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
    return traverse_util.unflatten_dict(flat, sep="/")
