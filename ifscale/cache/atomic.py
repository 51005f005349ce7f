"""The one way ifscale writes what it keeps: whole or not at all.

A file is written to a temporary file in its folder, flushed to disk and renamed over its
name (`write_bytes`, `write_json`); a folder of files is built under a temporary name beside
its place and renamed into it (`staged_folder`). Readers see the old thing or the whole new
one, never a part, and a writer killed midway leaves only a temporary name, which the next
writer removes once its process is gone (`remove_dead_writers`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# A temporary name older than this is a dead writer's, whatever its process id says.
STALE_SECONDS = 6 * 3600
HOST = socket.gethostname().replace("-", "_")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder: fsync, rename,
    fsync the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """`obj` as JSON (sorted keys), written with `write_bytes`."""
    write_bytes(path, json.dumps(obj, indent=indent, sort_keys=True, default=str).encode())


def write_text(path: str | os.PathLike, text: str) -> None:
    """`text` (UTF-8), written with `write_bytes`."""
    write_bytes(path, text.encode())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike) -> Iterator[Path]:
    """A new temporary folder beside `final`, to fill; when the block ends without error it
    replaces `final` (a folder or file there is removed first), else it is removed.

    Named `.<final>-<host>-<pid>-<random>` so that `remove_dead_writers` can tell a dead
    writer's folder from a live one's.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers(final.parent)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-{HOST}-{os.getpid()}-"))
    try:
        yield tmp
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike) -> Iterator[Path]:
    """A new temporary folder inside `folder` to write many files into (subfolders too);
    when the block ends without error each of them replaces its namesake under `folder`,
    else none does. Nothing of `folder` changes until everything is written: the commit is
    renames only (one per file), so a report killed or failing midway leaves `folder` as it
    was."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_dead_writers(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".staged-{HOST}-{os.getpid()}-"))
    try:
        yield tmp
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                target = folder / path.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        _fsync_folder(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(new: Path, final: Path) -> None:
    """Puts the folder `new` at `final`: the old one is moved aside first and removed after,
    so `final` is absent for a moment at most, never half old and half new."""
    old = None
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}-{HOST}-{os.getpid()}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    elif final.exists() or final.is_symlink():  # a file or a link under the folder's name
        final.unlink()
    os.rename(new, final)
    _fsync_folder(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_dead_writers(folder: Path) -> None:
    """Removes the temporary files and folders in `folder` of writers that died mid-write
    (their process on this host is gone, or they are older than `STALE_SECONDS`)."""
    if not folder.is_dir():
        return
    for tmp in folder.glob(".*-*"):
        parts = tmp.name[1:].split("-")
        try:
            age = time.time() - tmp.stat().st_mtime
        except OSError:
            continue  # finished (renamed) meanwhile
        dead = age > STALE_SECONDS
        if len(parts) >= 4 and parts[-3] == HOST and parts[-2].isdigit():
            dead = dead or not _alive(int(parts[-2]))
        if dead:
            log.info("Removing a dead writer's temporary %s", tmp)
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
