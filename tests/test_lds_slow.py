"""`make lds-check` end to end (slow: `make test-slow`): the ground truth retrained, four
methods and TRAK scored on it through a Hydra multirun, and `experiments/report.py lds`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_lds_check_retrains_scores_and_reports(tmp_path, mnist_dir):
    env = {
        **os.environ,
        "IFSCALE_CACHE_DIR": str(tmp_path / "cache"),
        "IFSCALE_DATA_DIR": str(mnist_dir),
    }
    done = subprocess.run(
        ["make", "-s", "lds-check", f"LDS_CHECK={tmp_path}", "ARGS=progress=false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    table = pd.read_csv(tmp_path / "results" / "lds.csv")
    assert sorted(table["method"]) == ["arnoldi", "exact", "graddot", "tracin", "trak"]
    assert (table["test examples"] == 100).all() and (table["subsets"] == 20).all()
    low = table["95% interval"].str.strip("[]").str.split(",").str[0].astype(float)
    high = table["95% interval"].str.strip("[]").str.split(",").str[1].astype(float)
    assert ((low <= table["LDS"]) & (table["LDS"] <= high)).all()
    # Attributions predict retraining, and far better than random ones (the control).
    exact = table[table["method"] == "exact"].iloc[0]
    assert exact["LDS"] > 0.3 and abs(exact["random"]) < 0.1, exact.to_dict()
    assert exact["damping"] in (0.0001, 0.001, 0.01, 0.1, 1.0)  # chosen on validation
    md = (tmp_path / "results" / "lds.md").read_text()
    assert "## Findings (computed from the numbers below)" in md
    assert "20 models in" in md and "one at a time" in md  # the retraining's speed
    assert "- Logistic regression, Exact (full inverse): damping 0.0001: " in md  # the grid
    assert (tmp_path / "results" / "figures" / "lds.png").stat().st_size > 10_000
    assert "## TRAK: the LDS against the ensemble's size M" in md
    assert "| Logistic regression | TRAK k=512, M=1 | 512 | 1 |" in md
