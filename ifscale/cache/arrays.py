"""`ArrayStore`: dicts of NumPy arrays and an info dict under a versioned key (trained
models, the models that judge Table 3's selections, tokenizers).

Layout: `<root>/<kind>/<hash of key>/meta.json` and one `.npy` file per array. `meta.json`
is a sealed record (`ifscale.cache.integrity`): the key, each array's name, dtype, shape and
the sha256 of its bytes, the info, and a checksum of all of that. A load reads each file once
and checks it against the record, so a truncated or damaged file, an edited `meta.json` or a
folder of another key is refused (and rebuilt by the caller). A save builds the folder under a
temporary name and renames it into place (`ifscale.cache.atomic.staged_folder`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ifscale.cache.atomic import staged_folder, write_json
from ifscale.cache.integrity import Refused, array_digest, read_record, seal
from ifscale.utils import config_hash

log = logging.getLogger(__name__)
T = TypeVar("T")
Arrays = dict[str, np.ndarray]


# What each kind of ArrayStore holds, for its log lines.
HOLDS = {
    "trained": "trained model",
    "selected": "model trained on the selection",
    "tokenizers": "tokenizer",
}


class ArrayStore:
    """Stores dicts of NumPy arrays under a versioned config key.

    Args:
      root: the cache folder.
      kind: the artifact kind, a subfolder ("trained", "selected", "tokenizers").
      version: the version of the key layout of this kind (`ifscale.cache.keys`).
    """

    def __init__(self, root: str | os.PathLike, kind: str, version: int):
        self.root = Path(root) / kind
        self.kind = kind
        self.version = version
        self.holds = HOLDS.get(kind, kind)

    def key(self, config: dict) -> dict:
        return {"version": self.version, "config": config}

    def path(self, config: dict) -> Path:
        return self.root / config_hash(self.key(config))

    def load(self, config: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """Returns (arrays, info) for `config`, or None if absent or refused (logged, and
        the folder removed)."""
        folder = self.path(config)
        if not (folder.exists() or folder.is_symlink()):
            return None
        try:
            if not folder.is_dir():
                raise Refused(f"{folder} is not a folder")
            return self._read(folder, config)
        except Refused as e:
            log.warning("Refusing the stored %s: %s. Rebuilding it.", self.holds, e)
            _remove(folder)
            return None

    def _read(self, folder: Path, config: dict):
        record = read_record(folder / "meta.json", self.key(config))
        arrays = {}
        for entry in record.get("arrays", []):
            path = folder / entry["file"]
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise Refused(f"{path} is unreadable ({e})") from None
            if (
                array.dtype.str != entry["dtype"]
                or list(array.shape) != entry["shape"]
                or array_digest(array) != entry["sha256"]
            ):
                raise Refused(f"{path} is truncated or damaged (checksum mismatch)")
            arrays[entry["name"]] = array
        return arrays, record.get("info")

    def save(self, config: dict, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
        """Writes an artifact atomically and returns its folder."""
        folder = self.path(config)
        try:
            self._write(folder, config, arrays, info)
        except OSError:
            # Another process (a concurrent run, another task of a multi-process job) put
            # the same artifact there first: keep theirs if it reads back.
            if self.load(config) is None:
                raise
        return folder

    def get_or_build(
        self,
        config: dict,
        build: Callable[[], T],
        encode: Callable[[T], tuple[Arrays, dict[str, Any]]],
        decode: Callable[[Arrays, dict[str, Any]], T],
    ) -> tuple[T, bool]:
        """The thing stored under `config` (`decode`d from its arrays and info), or else
        `build()`'s, stored (`encode`d); and whether it was stored before. A stored thing
        that passes its checksums but does not decode (made by other code) is rebuilt."""
        hit = self.load(config)
        if hit is not None:
            try:
                thing = decode(*hit)
            except (ValueError, RuntimeError, KeyError) as e:
                log.warning(
                    "Refusing the stored %s at %s (%s). Rebuilding it.",
                    self.kind,
                    self.path(config),
                    e,
                )
            else:
                log.info("Reusing the %s cached at %s", self.holds, self.path(config))
                return thing, True
        thing = build()
        folder = self.save(config, *encode(thing))
        log.info("Cached the %s at %s", self.holds, folder)
        return thing, False

    def _write(self, folder: Path, config: dict, arrays, info) -> None:
        with staged_folder(folder) as tmp:
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
                        "sha256": array_digest(array),
                    }
                )
            record = {"key": self.key(config), "arrays": entries, "info": info}
            write_json(tmp / "meta.json", seal(record))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
