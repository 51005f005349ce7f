"""`experiment=table3` end to end on a slice of the real corpora (slow: `make test-slow`)."""

from __future__ import annotations

import pandas as pd
import pytest

from .sweeps import multirun_and_report


@pytest.mark.slow
def test_table3_multirun_and_report_on_a_small_noisy_corpus(tmp_path):
    tiny = [
        "dataset=noisy_parallel_text",
        "dataset.train_size=500",
        "dataset.extra_train_size=100",
        "dataset.test_size=20",
        "dataset.vocab_size=500",
        "model=transformer_tiny",
        "train.epochs=2",
        "train.batch_size=32",
        "train.warmup_steps=5",
        "method.fit_batch_size=16",
        "method.fit_batches=2",
        "select.budget_short=10",
        "select.budget_long=30",
        "score.batch_size=32",
    ]
    runs, results = multirun_and_report("table3", tiny, tmp_path, timeout=3000)
    assert len(runs) == 10
    # One scoring model for all rows; one fit per method (Arnoldi's serves both pools).
    assert sum(not r["train_cache_hit"] for r in runs) == 1
    arnoldi = [r for r in runs if r["select"]["method"] == "influence" and r["method"] == "arnoldi"]
    scored = [r for r in arnoldi if not r["score_cache_hit"]]
    assert sorted(r["fit_cache_hit"] for r in scored) == [False, True]
    # The 25% and 50% rows select from the same scores, computed once; the pre-cleaned pool
    # is scored on its own.
    by_row = {
        (r["method"], r["select"]["fraction"], r["select"]["after_precleaning"]): r
        for r in runs
        if r["select"]["method"] == "influence"
    }
    for name in ("arnoldi", "randproj"):
        quarter, half = by_row[name, 0.25, False], by_row[name, 0.5, False]
        assert sorted([quarter["score_cache_hit"], half["score_cache_hit"]]) == [False, True]
        assert quarter["auc"] == half["auc"] and quarter["ap"] == half["ap"]
    assert not by_row["arnoldi", 0.5, True]["score_cache_hit"]

    table = pd.read_csv(results / "table3.csv")
    assert len(table) == 10 and table["row"].iloc[0] == "none"
    assert (table.loc[table["row"] == "none", "% selected"] == 100).all()
    for row, share in (("arnoldi_25", 25), ("randproj_50", 50), ("random_25", 25)):
        assert table.loc[table["row"] == row, "% selected"].iloc[0] == pytest.approx(share, 0.01)
    assert table["BLEU short"].between(0, 100).all() and table["BLEU long"].between(0, 100).all()
    # The paper's values sit beside the matching shares (our 25% / 50% : its 5% / 10%).
    line = table.set_index("row")
    assert line.loc["arnoldi_50", "paper BLEU@200k"] == 30.8
    assert line.loc["randproj_25", "paper BLEU@10k"] == 18.7
    md = (results / "table3.md").read_text()
    assert "Arnoldi's selection beats RandProj's at equal share" in md
    assert "Influence against the per-example loss (keeping the lowest-loss pairs" in md
    assert table.loc[table["row"] == "loss_50", "% selected"].iloc[0] == pytest.approx(50, 0.01)
    assert "What each selection kept, by noise kind" in md
    assert "No variants in this report: `make table3-check`" in md  # none run here
