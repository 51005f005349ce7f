"""Shared fixtures: paths to the project, its configs and the fetched MNIST file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The Hydra schemas (experiments/schema.py), registered as experiments/run.py does, so that
# tests compose `conf/` exactly as the command line does.
from experiments.schema import register  # noqa: E402

register()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding mnist.pkl.gz, as fetched by `make setup`."""
    folder = Path(os.environ.get("IFSCALE_DATA_DIR", ROOT / ".cache" / "data"))
    if not (folder / "mnist.pkl.gz").exists():
        pytest.fail(f"MNIST is not at {folder}: run `make setup` first")
    return folder


@pytest.fixture(scope="session")
def mnist_small(mnist_dir):
    """A 2,000-image stratified MNIST subset with 10% mislabeled examples."""
    from ifscale.data import apply_label_noise, load_images

    data = load_images("hub", data_dir=mnist_dir, subset_size=2000, seed=0)
    return apply_label_noise(data, "mislabel", 0.1, seed=0)
