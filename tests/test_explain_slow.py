"""`make explain-check` on a tiny setting: the retraining check runs end to end and writes
its report (slow: a few dozen trainings of cnn_small)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_explain_check_runs_and_reports(tmp_path):
    out = tmp_path / "explain"
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "explain_check.py"),
        "--seeds",
        "1",
        "--k",
        "5",
        "--tests",
        "2",
        "--random-draws",
        "1",
        "--methods",
        "tracin",
        "--out",
        str(out),
        "train.epochs=2",
        "train.kept_checkpoints=10",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out.with_suffix(".csv"))
    assert set(table.group) == {"proponents", "opponents", "random 0"}
    assert len(table[table.method == "TracIn [1]"]) == 2 * 2
    report = out.with_suffix(".md").read_text()
    assert "| TracIn [1] |" in report and "## Mislabel check" in report
