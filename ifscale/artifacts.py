"""An on-disk cache for expensive artifacts (trained models, method fits).

Each artifact lives in `<root>/<kind>/<key>/` as `arrays.npz` plus `meta.json`; the key is
a hash of the config that produced it. `meta.json` stores that config and the sha256 of
`arrays.npz`, so a cache whose stored config differs from the request, or whose file is
truncated or corrupt, is refused (and then rebuilt by the caller) instead of silently used.
Writes go to a temporary folder that is renamed into place, so a crash never leaves a
half-written artifact under a valid key.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from ifscale.utils import canonical_json, config_hash, sha256_file

log = logging.getLogger(__name__)


class ArtifactCache:
    """Stores dicts of NumPy arrays under a hash of the config that made them."""

    def __init__(self, root: str | os.PathLike, kind: str):
        self.root = Path(root) / kind
        self.kind = kind

    def path(self, config: dict) -> Path:
        return self.root / config_hash(config)

    def load(self, config: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """Returns (arrays, meta) for `config`, or None if absent or unusable (logged)."""
        folder = self.path(config)
        if not folder.exists():
            return None
        reason = self._problem(folder, config)
        if reason:
            log.warning("Refusing cached %s at %s: %s. Rebuilding it.", self.kind, folder, reason)
            return None
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        return arrays, meta["info"]

    @staticmethod
    def _problem(folder: Path, config: dict) -> str | None:
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as e:
            return f"unreadable meta.json ({e})"
        if canonical_json(meta.get("config")) != canonical_json(config):
            return "its stored config differs from the requested one"
        try:
            digest = sha256_file(folder / "arrays.npz")
        except OSError as e:
            return f"unreadable arrays.npz ({e})"
        if digest != meta.get("sha256"):
            return "arrays.npz is truncated or corrupt (checksum mismatch)"
        try:
            with zipfile.ZipFile(folder / "arrays.npz") as zf:
                if zf.testzip() is not None:
                    return "arrays.npz is corrupt"
        except zipfile.BadZipFile as e:
            return f"arrays.npz is corrupt ({e})"
        return None

    def save(self, config: dict, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
        """Writes an artifact atomically and returns its folder."""
        folder = self.path(config)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{folder.name}-"))
        try:
            np.savez(tmp / "arrays.npz", **arrays)
            meta = {"config": config, "sha256": sha256_file(tmp / "arrays.npz"), "info": info}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder


def flatten_tree(tree, prefix: str) -> dict[str, np.ndarray]:
    """A nested dict of arrays as flat `{prefix/a/b: array}` entries."""
    flat = traverse_util.flatten_dict(tree, sep="/")
    return {f"{prefix}/{k}": np.asarray(v) for k, v in flat.items()}


def unflatten_tree(arrays: dict[str, np.ndarray], prefix: str):
    """Inverse of `flatten_tree` for the entries under `prefix`."""
    start = len(prefix) + 1
    flat = {k[start:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
    return traverse_util.unflatten_dict(flat, sep="/")
