"""The integrity rule of every store: what made a stored thing and a checksum of its bytes
are recorded when it is committed and checked when it is read.

`Refused` carries the reason a stored thing must not be used; the stores log it in one line
naming the file and build the thing again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ifscale.utils import canonical_json

_BLOCK = 1 << 22


class Refused(Exception):
    """A stored thing that must not be used (the reason is the message)."""


def key_digest(key: Any) -> str:
    """The sha256 (hex) of a key's canonical JSON: what a stored thing records of the key
    that made it when the whole key is not stored beside it (score chunks)."""
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()


def array_digest(array: np.ndarray, *salt: str) -> str:
    """The sha256 of `salt` (strings, e.g. a key digest) and the array's bytes."""
    digest = hashlib.sha256()
    for part in salt:
        digest.update(part.encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def json_digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: str | os.PathLike) -> dict[str, str]:
    """{path relative to `folder` (with "/"): sha256} of every file under `folder`."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def check_files(folder: str | os.PathLike, recorded: dict[str, str]) -> None:
    """Raises Refused naming the first file under `folder` that is missing, changed or not
    among the `recorded` ones."""
    folder = Path(folder)
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for name in sorted(set(recorded) | present):
        if name not in present:
            raise Refused(f"{folder / name} is missing")
        if name not in recorded:
            raise Refused(f"{folder / name} was not part of it when it was stored")
        if file_digest(folder / name) != recorded[name]:
            raise Refused(f"{folder / name} is damaged (checksum mismatch)")


def read_record(path: Path, key: Any) -> dict[str, Any]:
    """The JSON record at `path` (a stored thing's meta.json), checked: it must parse, hold
    `key` exactly, and match its own checksum (`seal`). Raises Refused otherwise."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise Refused(f"{path} is missing (a write that did not finish)") from None
    except (OSError, ValueError) as e:
        raise Refused(f"{path} is unreadable ({e})") from None
    if not isinstance(record, dict):
        raise Refused(f"{path} is not a record")
    if canonical_json(record.get("key")) != canonical_json(key):
        raise Refused(f"{path} holds another key")
    sealed = record.pop("sha256", None)
    if sealed is None:
        raise Refused(f"{path} has no checksum (stored by an older ifscale)")
    if sealed != json_digest(record):
        raise Refused(f"{path} was edited or damaged (checksum mismatch)")
    return record


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """`record` (JSON-able, with its "key") with its own checksum added, as `read_record`
    checks it."""
    record = json.loads(json.dumps(record, default=str))  # as it will read back
    return record | {"sha256": json_digest(record)}
