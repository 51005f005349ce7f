"""`experiment=table1` end to end on a tiny setting (slow: `make test-slow`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ifscale.reports import TABLE1_ROWS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_table1_multirun_and_report_on_a_tiny_setting(tmp_path, mnist_dir):
    env = {
        **os.environ,
        "IFSCALE_CACHE_DIR": str(tmp_path / "cache"),
        "IFSCALE_DATA_DIR": str(mnist_dir),
    }
    sweep = tmp_path / "sweep"
    tiny = [
        "model=cnn_small",
        "dataset.subset_size=600",
        "train.epochs=9",  # 108 steps: enough for TracIn's 100 checkpoints
        "train.batch_size=50",
        "++method.fit_batch_size=50",  # ++: the base config (method=none) lacks the key
        "++method.fit_batches=2",
        "score.compare_examples=100",
        "progress=false",
        f"hydra.sweep.dir={sweep}",
    ]
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "experiment=table1", *tiny]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "results"
    report = [sys.executable, str(ROOT / "experiments" / "report.py"), "table1"]
    done = subprocess.run(
        [*report, "--sweep", str(sweep), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    table = pd.read_csv(results / "table1.csv")
    assert list(table["row"]) == [r.key for r in TABLE1_ROWS]  # every row, the paper's order
    for column in ("AUC", "AP", "AUC, subset", "AP, subset"):
        assert table[column].between(0, 100).all(), column
    assert (table["examples/s"] > 0).all() and (table["T, s"] > 0).all()
    slow = table["row"].str.startswith("lissa") | (table["row"] == "tracin_100")
    assert (table.loc[slow, "n scored"] == 100).all()
    assert (table.loc[~slow, "n scored"] == 600).all()
    # The subset columns of the slow rows are their main columns.
    assert (table.loc[slow, "AUC"] == table.loc[slow, "AUC, subset"]).all()
    md = (results / "table1.md").read_text()
    assert "Per-example cost, LISSA, r = 10 against Arnoldi p̄=100" in md
    assert "Arnoldi p̄=100 against p̄=10" in md and "Fidelity to the paper" in md
