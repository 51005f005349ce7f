"""`experiment=table1` end to end on a tiny setting (slow: `make test-slow`)."""

from __future__ import annotations

import pandas as pd
import pytest

from ifscale.reports import TABLE1_ROWS

from .sweeps import multirun_and_report


@pytest.mark.slow
def test_table1_multirun_and_report_on_a_tiny_setting(tmp_path, mnist_dir):
    tiny = [
        "model=cnn_small",
        "dataset.subset_size=600",
        "train.epochs=9",  # 108 steps: enough for TracIn's 100 checkpoints
        "train.batch_size=50",
        "method.fit_batch_size=50",  # every method schema has it, method=none too
        "method.fit_batches=2",
        "score.compare_examples=100",
    ]
    env = {"IFSCALE_DATA_DIR": str(mnist_dir)}
    _, results = multirun_and_report("table1", tiny, tmp_path, env)

    table = pd.read_csv(results / "table1.csv")
    assert list(table["row"]) == [r.key for r in TABLE1_ROWS]  # every row, the paper's order
    for column in ("AUC", "AP", "AUC, subset", "AP, subset"):
        assert table[column].between(0, 100).all(), column
    assert (table["examples/s"] > 0).all() and (table["T, s"] > 0).all()
    slow = table["row"].str.startswith("lissa") | table["row"].isin(["tracin_100", "trak_10"])
    assert (table.loc[slow, "n scored"] == 100).all()
    assert (table.loc[~slow, "n scored"] == 600).all()
    # The subset columns of the slow rows are their main columns.
    assert (table.loc[slow, "AUC"] == table.loc[slow, "AUC, subset"]).all()
    md = (results / "table1.md").read_text()
    assert "Per-example cost, LISSA, r = 10 against Arnoldi p̄=100" in md
    assert "Arnoldi p̄=100 against p̄=10" in md and "Fidelity to the paper" in md
    assert "Influence against the per-example loss" in md
