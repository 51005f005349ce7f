"""Small shared helpers: seeded random streams, config hashing, machine description."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import subprocess
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np


class ConfigError(ValueError):
    """A bad configuration value; the message names the config key to fix."""


class DegenerateModelError(FloatingPointError):
    """The trained model cannot be explained by influence (e.g. constant outputs)."""


def check(condition: bool, key: str, message: str) -> None:
    """Raises `ConfigError` naming `key` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _stream_id(name: str) -> int:
    return zlib.crc32(name.encode())


def stream_rng(seed: int, name: str) -> np.random.Generator:
    """A NumPy generator for one named stage ("subset", "noise", ...).

    Each stage draws from its own stream, so changing how much randomness one stage
    consumes never shifts another stage's draws.
    """
    return np.random.default_rng([seed, _stream_id(name)])


def stream_key(seed: int, name: str) -> jax.Array:
    """A JAX PRNG key for one named stage (see `stream_rng`)."""
    return jax.random.fold_in(jax.random.key(seed), _stream_id(name))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any, length: int = 16) -> str:
    """A stable short hash of a JSON-able config."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """A content hash of arrays (dtype, shape and bytes): identifies a data set exactly."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device() -> str:
    """One line naming the accelerator(s) JAX uses, e.g. 'cpu: Intel Xeon ... (2 cores)'."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        return f"cpu: {_cpu_model()} ({os.cpu_count()} cores)"
    kinds = sorted({d.device_kind for d in devices})
    return f"{devices[0].platform}: {len(devices)} x {', '.join(kinds)}"


def git_commit(root: str | os.PathLike | None = None) -> str | None:
    """The current commit of the repository at `root` (suffixed '+dirty' if modified)."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def flatten_tree(tree, prefix: str) -> dict[str, np.ndarray]:
    """A nested dict of arrays as flat `{prefix/a/b: array}` entries."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(tree, sep="/")
    return {f"{prefix}/{k}": np.asarray(v) for k, v in flat.items()}


def unflatten_tree(arrays: dict[str, np.ndarray], prefix: str):
    """Inverse of `flatten_tree` for the entries under `prefix`."""
    from flax import traverse_util

    start = len(prefix) + 1
    flat = {k[start:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
    return traverse_util.unflatten_dict(flat, sep="/")


# What to do about a file-system error, by errno.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space (a rerun resumes from what was stored)",
    errno.EDQUOT: "free some space or raise the quota (a rerun resumes from what was stored)",
    errno.EROFS: "give a writable folder (paths.cache_dir=..., IFSCALE_CACHE_DIR or "
    "hydra.run.dir=...)",
    errno.EACCES: "give a folder you may write to, or fix its permissions",
    errno.EPERM: "give a folder you may write to, or fix its permissions",
    errno.ENAMETOOLONG: "shorten the name (name=..., hydra.run.dir=...) or use a shorter path",
}


def os_error_in(error: BaseException) -> OSError | None:
    """The file-system error behind `error` (itself, or its cause or context, as libraries
    such as orbax wrap it), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


def os_error_line(error: OSError) -> str:
    """A file-system error as one line: what failed, on which path, and what to do."""
    path = error.filename or "a file"
    if error.filename2:
        path = f"{path} -> {error.filename2}"
    reason = error.strerror or str(error)
    hint = _OS_ERROR_HINTS.get(error.errno, "check the path and the file system")
    return f"{path}: {reason}; {hint}"
