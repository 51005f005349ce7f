"""`experiment=table2` end to end on a slice of the real Multi30k (slow: `make test-slow`)."""

from __future__ import annotations

import pandas as pd
import pytest

from ifscale.reports import TABLE2_BASELINE_ROWS, TABLE2_KFAC_ROWS, TABLE2_ROWS

from .sweeps import multirun_and_report


@pytest.mark.slow
def test_table2_multirun_and_report_on_a_multi30k_slice(tmp_path):
    tiny = [
        "dataset=multi30k",
        "dataset.train_size=400",
        "dataset.test_size=20",
        "dataset.vocab_size=500",
        "dataset.max_length=40",
        "model=transformer_tiny",
        "train.epochs=2",
        "train.batch_size=32",
        "train.warmup_steps=5",
        "method.fit_batch_size=16",
        "method.fit_batches=2",
        "score.batch_size=32",
        "score.max_examples=150",
    ]
    runs, results = multirun_and_report(
        "table2", tiny, tmp_path, baselines=["table2_baselines", "table2_kfac"]
    )
    assert len(runs) == 8
    # One training and one Arnoldi fit per layer set: the rest came from the caches.
    assert sum(not r["train_cache_hit"] for r in runs) == 1
    arnoldi = [r for r in runs if r["method"] == "arnoldi"]
    assert sorted(r["fit_cache_hit"] for r in arnoldi) == [False, False, True, True]

    table = pd.read_csv(results / "table2.csv")
    # Every row in the paper's order, then K-FAC's and the loss rows (summed, per-token mean).
    rows = TABLE2_ROWS + TABLE2_KFAC_ROWS + TABLE2_BASELINE_ROWS
    assert list(table["row"]) == [r.key for r in rows]
    assert table["AUC"].between(0, 100).all() and table["AP"].between(0, 100).all()
    assert (table["n scored"] == 150).all() and table["BLEU"].notna().all()
    all_layers = table["Layers"] == "all layers"
    last3 = table["Layers"] == "last 3 decoder layers"
    assert table.loc[all_layers, "parameters"].min() > table.loc[last3, "parameters"].max()
    md = (results / "table2.md").read_text()
    assert "Finding 1, Arnoldi beats RandProj at equal p̄" in md
    assert "Finding 2, all layers beat the last three decoder layers" in md
    assert "multi30k" in md
    assert "Influence against the per-example loss" in md
    # The loss rows reuse the model and score the same pairs; the two losses differ.
    loss = table[table["Method"].str.startswith("Loss")]
    assert (loss["n scored"] == 150).all() and loss["AP"].nunique() == 2
    # K-FAC factors the Dense layers and attention projections only: fewer parameters than
    # Arnoldi perturbs in the same layer set, more over all layers than over the last three.
    kfac = table[table["Method"].isin(["K-FAC", "EK-FAC"])]
    assert (kfac["n scored"] == 150).all() and kfac["AUC"].between(0, 100).all()
    for layers in ("all layers", "last 3 decoder layers"):
        arnoldi = table[(table["Layers"] == layers) & (table["Method"] == "Arnoldi")]
        factored = kfac[kfac["Layers"] == layers]
        assert (factored["parameters"] < arnoldi["parameters"].min()).all()
    assert (
        kfac.loc[kfac["Layers"] == "all layers", "parameters"].min()
        > kfac.loc[kfac["Layers"] == "last 3 decoder layers", "parameters"].max()
    )
