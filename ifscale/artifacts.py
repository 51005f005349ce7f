"""An on-disk cache for expensive artifacts (trained models, method fits, scores).

An artifact is a dict of NumPy arrays plus a JSON-able `info`, stored under a key: the
config that determines it and the version of that config's layout. Whoever builds a key
bumps its version when what determines the artifact changes, so an artifact made by other
code is simply not found (and rebuilt once), never misread.

Layout: `<root>/<kind>/<hash of key>/meta.json` and one `.npy` file per array. `meta.json`
holds the key, each array's name, dtype, shape and the sha256 of its bytes, recorded at
save. A load reads each file once: the array is read, then its bytes are hashed in memory
and compared, so a truncated or corrupt file, or a key that differs from the request (a
hash collision or an edited file), is refused (and rebuilt by the caller); so is an edited
`info` (its sha256 is recorded too). Writes go to a temporary folder renamed into place, so
a crash never leaves a half-written artifact under a valid key; the temporary folders of
writers that died (their process is gone, or older than `STALE_SECONDS`) are removed by the
next save.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from ifscale.utils import canonical_json, config_hash, write_atomically

log = logging.getLogger(__name__)

# A temporary folder older than this is a dead writer's, whatever its process id says.
STALE_SECONDS = 6 * 3600


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
            if not folder.is_dir():
                raise _Refused("it is not a folder")
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
        info = meta.get("info")
        recorded = meta.get("info_sha256")
        if recorded is None:  # written before info was checksummed: record it now
            meta["info_sha256"] = _info_digest(info)
            with contextlib.suppress(OSError):  # a read-only cache: checked from its next writer
                _write_meta(folder, meta)
        elif _info_digest(info) != recorded:
            raise _Refused("its info differs from the one saved (an edited meta.json)")
        return arrays, info

    def save(self, config: dict, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
        """Writes an artifact atomically and returns its folder."""
        folder = self.path(config)
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_writes()
        prefix = f".{folder.name}-{_HOST}-{os.getpid()}-"
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=prefix))
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
            info = json.loads(json.dumps(info, default=str))  # as it will read back
            meta = {
                "key": self.key(config),
                "arrays": entries,
                "info": info,
                "info_sha256": _info_digest(info),
            }
            _write_meta(tmp, meta)
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
            elif folder.exists() or folder.is_symlink():  # a file or link under the key
                folder.unlink()
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

    def _remove_stale_writes(self) -> None:
        """Removes the temporary folders of writers that died mid-save."""
        for tmp in self.root.glob(".*-*"):
            parts = tmp.name[1:].split("-")
            try:
                age = time.time() - tmp.stat().st_mtime
            except OSError:
                continue  # finished (renamed) meanwhile
            dead = age > STALE_SECONDS
            if len(parts) >= 4 and parts[1] == _HOST and parts[2].isdigit():
                dead = dead or not _alive(int(parts[2]))
            if dead:
                log.info("Removing a dead writer's temporary folder %s", tmp)
                shutil.rmtree(tmp, ignore_errors=True)


_HOST = socket.gethostname().replace("-", "_")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _info_digest(info) -> str:
    return hashlib.sha256(canonical_json(info).encode()).hexdigest()


def _write_meta(folder: Path, meta: dict) -> None:
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    write_atomically(folder / "meta.json", text.encode())


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
