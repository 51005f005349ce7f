"""`experiment=regimes` end to end on a tiny setting (slow: `make test-slow`)."""

from __future__ import annotations

import pandas as pd
import pytest

from ifscale.reports import REGIME_ROWS

from .sweeps import multirun_and_report


@pytest.mark.slow
def test_regimes_multirun_and_report_on_a_tiny_setting(tmp_path, mnist_dir):
    tiny = [
        "model=cnn_small",
        "dataset.subset_fraction=null",
        "dataset.subset_size=300",
        "train.epochs=1,4",
        "seed=0,1",
        "train.batch_size=50",
        "train.kept_checkpoints=3",
        "method.fit_batch_size=50",
        "method.fit_batches=2",
    ]
    env = {"IFSCALE_DATA_DIR": str(mnist_dir)}
    runs, results = multirun_and_report("regimes", tiny, tmp_path, env, timeout=2400)

    assert len(runs) == 2 * 2 * len(REGIME_ROWS)
    table = pd.read_csv(results / "regimes.csv")
    assert sorted(table["row"].unique()) == sorted(r.key for r in REGIME_ROWS)
    assert len(table) == len(runs)
    assert set(table["epochs"]) == {1, 4} and set(table["seed"]) == {0, 1}
    assert (
        table[["AUC", "AP", "noisy fitted", "test accuracy"]]
        .apply(lambda c: c.between(0, 100))
        .all()
        .all()
    )
    # TracIn [k] used all 3 kept checkpoints, TracIn [1] one.
    tracin = [r for r in runs if r["method"] == "tracin"]
    assert sorted({r["method_options"]["checkpoints"] for r in tracin}) == [1, 3]
    # TRAK [k] and the two training-dynamics baselines read the same 3 checkpoints.
    trak = [r for r in runs if r["method"] == "trak"]
    assert sorted({r["method_options"]["models"] for r in trak}) == [1, 3]
    assert {"checkpoint_loss", "aum"} <= {r["method"] for r in runs}
    md = (results / "regimes.md").read_text()
    assert "## Findings (computed from the numbers below)" in md and " ± " in md
    assert "beats the loss baseline" in md and "Memorisation: at E =" in md
    assert "At E = 4 (the longest training measured), TracIn [k]'s advantage" in md
    assert (results / "figures" / "regimes.png").stat().st_size > 10_000
