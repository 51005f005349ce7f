"""What a stage returns to the pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd


@dataclasses.dataclass
class StageResult:
    """A stage's records (`ifscale.run.metrics`), and what it wants written into the run
    folder: tables by file name (scores.csv, explanations.csv) and `views`, which writes
    human-readable views of them into a folder and returns their file names."""

    records: tuple = ()
    tables: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    views: Callable[[Path], list[str]] | None = None
