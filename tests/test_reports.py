"""Tables, figures, the README's table and the inspection notebook, built from real (tiny)
runs; the typed record of metrics.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ifscale.config import RunConfig
from ifscale.reports import (
    ReadmeSyncError,
    found_at_k,
    load_runs,
    markdown_table,
    sync_readme,
    table1_frame,
)
from ifscale.run.compose import from_dict
from ifscale.run.metrics import MISSING, RunMetrics
from ifscale.run.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
COMPARE = 100

# Table 1 rows (matched by method and option) on a tiny setting: 400 images, cnn_small.
TINY_ROWS = {
    "arnoldi_10": {"name": "arnoldi", "n": 20, "pbar": 10},
    "tracin_1": {"name": "tracin", "checkpoints": 1},
    "lissa_r10": {"name": "lissa", "r": 10, "scale": 10.0, "damping": 0.001},
}


def _config(tmp: Path, data_dir: Path, method: dict, max_examples=None) -> RunConfig:
    return from_dict(
        {
            "name": "tiny_table1",
            "dataset": {"data_dir": str(data_dir), "subset_size": 400},
            "noise": {"kind": "mislabel", "rate": 0.1},
            "model": {"name": "cnn_small"},
            "train": {"epochs": 3, "batch_size": 50, "kept_checkpoints": 4},
            "method": {**method, "fit_batch_size": 50, "fit_batches": 2},
            "score": {"max_examples": max_examples, "compare_examples": COMPARE},
            "paths": {"cache_dir": str(tmp / "cache")},
            "progress": False,
        }
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mnist_dir) -> Path:
    """A folder of finished runs, laid out like a Hydra multirun (one subfolder per job)."""
    tmp = tmp_path_factory.mktemp("sweep")
    for i, (row, method) in enumerate(TINY_ROWS.items()):
        slow = row.startswith("lissa")
        run(_config(tmp, mnist_dir, method, COMPARE if slow else None), tmp / "runs" / str(i))
    return tmp / "runs"


def test_metrics_json_is_exactly_what_the_record_writes(sweep):
    paths = sorted(sweep.glob("*/metrics.json"))
    assert len(paths) == len(TINY_ROWS)
    for path in paths:
        record = RunMetrics.load(path)
        assert record.to_json() == path.read_text()
        # Image runs write no text-data or selection keys.
        assert record.bleu is MISSING and record.select is MISSING
    assert [r["run_dir"] for r in load_runs(sweep)] == [str(p.parent) for p in paths]


def test_record_names_renamed_and_missing_keys(sweep, tmp_path):
    path = next(sweep.glob("*/metrics.json"))
    metrics = json.loads(path.read_text())
    metrics["pair_auc"] = metrics.pop("auc")  # a renamed optional key
    del metrics["n_train"]  # a missing required key
    bad = tmp_path / "0" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(metrics))
    with pytest.raises(ValueError) as error:
        load_runs(tmp_path)
    message = str(error.value)
    assert str(bad) in message and "'pair_auc'" in message and "'n_train'" in message
    assert "\n" not in message


def test_comparison_subset_is_the_same_examples_in_every_run(sweep):
    runs = {r["method"]: r for r in load_runs(sweep)}
    full = pd.read_csv(Path(runs["arnoldi"]["run_dir"]) / "scores.csv")
    subset = pd.read_csv(Path(runs["lissa"]["run_dir"]) / "scores.csv")
    assert len(full) == 400 and len(subset) == COMPARE
    assert subset["is_noisy"].sum() == COMPARE // 10
    assert set(subset["example"]) <= set(full["example"])
    # auc_compare of a full run is its AUC restricted to the subset's examples.
    from sklearn.metrics import average_precision_score, roc_auc_score

    part = full[full["example"].isin(subset["example"])]
    assert runs["arnoldi"]["n_compare"] == COMPARE
    assert runs["arnoldi"]["auc_compare"] == pytest.approx(
        roc_auc_score(part["is_noisy"], part["self_influence"])
    )
    assert runs["arnoldi"]["ap_compare"] == pytest.approx(
        average_precision_score(part["is_noisy"], part["self_influence"])
    )
    # A run that scores only the subset reports the same numbers twice.
    assert runs["lissa"]["auc_compare"] == pytest.approx(runs["lissa"]["auc"])


def test_table1_frame_puts_paper_values_beside_ours(sweep):
    table = table1_frame(load_runs(sweep))
    assert list(table["row"]) == ["lissa_r10", "tracin_1", "arnoldi_10"]  # the paper's order
    arnoldi = table.set_index("row").loc["arnoldi_10"]
    assert (arnoldi["paper AUC"], arnoldi["paper AP"], arnoldi["paper T, s"]) == (95.0, 84.0, 0.2)
    assert arnoldi["n scored"] == 400 and arnoldi["n subset"] == COMPARE
    assert 0 <= arnoldi["AUC"] <= 100 and 0 <= arnoldi["AP, subset"] <= 100
    assert arnoldi["ms/example"] == pytest.approx(1000 / arnoldi["examples/s"])
    text = markdown_table(table[["Method", "p̄", "AUC"]])
    assert text.splitlines()[0] == "| Method | p̄ | AUC |" and len(text.splitlines()) == 5


def test_notes_compare_rows_on_the_subset_or_on_all_examples(sweep):
    from ifscale.reports import table1_notes

    runs = load_runs(sweep)
    notes = "\n".join(table1_notes(table1_frame(runs), runs))
    assert "on the common subset by AP" in notes and f"subset of {COMPARE} training" in notes
    # As with `make table1 FULL=1`: no comparison subset, every row scored every example.
    full = [
        {k: v for k, v in r.items() if not k.endswith("_compare") and k != "n_compare"}
        for r in runs
        if r["method"] != "lissa"
    ]
    notes = "\n".join(table1_notes(table1_frame(full), full))
    assert "on all examples by AP" in notes and "not used in this table" in notes
    assert "nan" not in notes


def test_found_at_k_is_a_recall_curve(sweep):
    found = found_at_k(load_runs(sweep))
    for _, part in found.groupby("row"):
        assert np.all(np.diff(part["found_percent"]) >= 0)
        assert part["found_percent"].iloc[-1] == pytest.approx(100.0)
        assert part["inspected_percent"].iloc[-1] == pytest.approx(100.0)
        # At 100% inspected, precision is the noise rate of the scored set.
        assert part["precision_percent"].iloc[-1] == pytest.approx(10.0)


@pytest.fixture(scope="module")
def results(sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "report.py"),
        "table1",
        "--sweep",
        str(sweep),
        "--results",
        str(out),
        "--check",  # the same runs, listed as variants: exercises the investigation section
        str(sweep),
        "--outputs",  # no other sweep (table1_seeds) of this machine's outputs/ is read
        str(out / "outputs"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_report_writes_table_curves_and_top_images(results, sweep):
    table = pd.read_csv(results / "table1.csv")
    assert set(table["row"]) == set(TINY_ROWS)
    md = (results / "table1.md").read_text()
    needed_parts = ("| Method |", "paper AUC", "How to read it", "LISSA settings", "Investigation")
    for needed in needed_parts:
        assert needed in md
    assert "Per-example cost, LISSA, r = 10 against" not in md  # needs Arnoldi p̄=100
    top = np.load(results / "table1_top_examples.npz")
    assert top["images"].shape == (32, 28, 28, 1)
    assert np.all(np.diff(top["self_influence"]) <= 0)
    assert np.all((top["label"] != top["clean_label"]) == top["is_noisy"])
    found = pd.read_csv(results / "table1_found_at_k.csv")
    assert set(found["row"]) == set(TINY_ROWS)


def test_notebook_runs_on_the_results(results, tmp_path):
    from ifscale.reports import table3_bias_frame, table3_frame

    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    # The Table 1 fixture's results plus Table 3 files made by the report's functions.
    shown = tmp_path / "results"
    shutil.copytree(results, shown)
    quarter = {"method": "influence", "fraction": 0.25, "after_precleaning": False}
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    runs = [
        _table3_run(runs_dir, "arnoldi_25", quarter, "sum", 10.0, kept_short=True),
        _table3_run(runs_dir, "arnoldi_25", quarter, "mean", 12.0, kept_short=False),
    ]
    table3_frame(runs).to_csv(shown / "table3.csv", index=False)
    table3_bias_frame(runs).to_csv(shown / "table3_selection_bias.csv", index=False)
    executed = tmp_path / "executed.ipynb"
    cmd = [sys.executable, str(ROOT / "experiments" / "notebook.py"), "--output", str(executed)]
    done = subprocess.run(
        [*cmd, "--results", str(shown), "--timeout", "300"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    notebook = nbformat.read(executed, as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in notebook.cells])
    assert "Error" not in outputs
    assert "paper AUC" in outputs  # the table was shown
    assert outputs.count("image/png") >= 3  # recall curves, image grid, Table 3 kinds
    assert "kept % shortest clean" in outputs  # the Table 3 selection bias was listed
    assert "make figures" in outputs  # no figures in this fixture: says how to make them


def test_report_draws_both_figures(sweep, tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "report.py"), "figures"]
    done = subprocess.run(
        [*cmd, "--sweep", str(sweep), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fig1 = pd.read_csv(tmp_path / "figures" / "figure1.csv")
    # Arnoldi at its p̄, LISSA and TracIn as reference lines (no p̄).
    assert set(fig1["label"]) == {"arnoldi", "LISSA r=10", "TracIn [1]"}
    assert fig1.loc[fig1["label"] == "arnoldi", "pbar"].tolist() == [10]
    fig2 = pd.read_csv(tmp_path / "figures" / "figure2.csv")
    assert fig2["method"].unique().tolist() == ["arnoldi"] and len(fig2) == 10
    for name in ("figure1.png", "figure2.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:4] == b"\x89PNG"


def _table2_run(layers, method, pbar, auc, ap, tmp_path):
    run_dir = tmp_path / f"{layers}_{method}_{pbar}"
    return {
        "method": method,
        "method_options": {"pbar": pbar},
        "layers": layers,
        "pbar": pbar,
        "auc": auc,
        "ap": ap,
        "n_scored": 100,
        "n_noisy_scored": 6,
        "n_perturbed_params": 1000 if layers in ("all", None) else 300,
        "t_fit_s": 1.0,
        "t_score_s": 1.0,
        "examples_per_s": 100.0,
        "bleu": 20.0,
        "test_accuracy": 0.5,
        "run_dir": str(run_dir),
    }


def test_table2_rows_match_layer_sets_and_findings_are_counted(tmp_path):
    from ifscale.reports import TABLE2_ROWS, table2_findings, table2_frame

    runs = [
        # Arnoldi better than RandProj everywhere but one comparison; all layers better
        # than the last three decoder layers everywhere. `layers: None` counts as all.
        _table2_run(None, "randproj", 10, 0.80, 0.20, tmp_path),
        _table2_run("all", "randproj", 20, 0.82, 0.25, tmp_path),
        _table2_run("all", "arnoldi", 10, 0.90, 0.40, tmp_path),
        _table2_run("all", "arnoldi", 20, 0.91, 0.45, tmp_path),
        _table2_run("last3_decoder", "randproj", 10, 0.70, 0.15, tmp_path),
        _table2_run("last3_decoder", "randproj", 20, 0.72, 0.19, tmp_path),
        _table2_run("last3_decoder", "arnoldi", 10, 0.71, 0.16, tmp_path),
        _table2_run("last3_decoder", "arnoldi", 20, 0.70, 0.18, tmp_path),
    ]
    table = table2_frame(runs)
    assert list(table["row"]) == [r.key for r in TABLE2_ROWS]
    line = table.set_index("row").loc["last3_decoder_arnoldi_20"]
    assert (line["AUC"], line["AP"], line["paper AUC"], line["paper AP"]) == (70, 18, 83.7, 28.5)
    text = "\n".join(table2_findings(table))
    assert "Arnoldi beats RandProj at equal p̄: **holds only in part** (true in 3 of 4" in text
    assert "all layers beat the last three decoder layers: **holds** (true in 4 of 4" in text
    assert "Arnoldi against RandProj, last 3 decoder layers, p̄=20: AUC -2.0, AP -1.0" in text
    # Missing rows are reported as such, not as a verdict.
    partial = table2_frame(runs[:2])
    assert "not measured" in "\n".join(table2_findings(partial))


def _table3_run(tmp_path, row, select, sequence_loss, bleu_long, kept_short):
    """A Table 3 influence run whose scores.csv has 8 clean pairs (lengths 1..8 words) and
    2 noisy ones; `kept_short` selects the shortest clean pairs, else the longest."""
    run_dir = tmp_path / f"{row}_{sequence_loss}_{len(list(tmp_path.iterdir()))}"
    run_dir.mkdir()
    targets = [" ".join(["w"] * k) for k in range(1, 9)] + ["Add to cart", "Add to cart"]
    scores = pd.DataFrame(
        {
            "target": targets,
            "is_noisy": [False] * 8 + [True, True],
            "noise_kind": ["clean"] * 8 + ["garbage"] * 2,
            # Sum: scores grow with length; mean: reversed.
            "self_influence": ([*range(1, 9), 0, 0] if kept_short else [*range(8, 0, -1), 9, 9]),
        }
    )
    scores["selected"] = scores["self_influence"].rank(method="first") <= 4
    scores.to_csv(run_dir / "scores.csv", index=False)
    method = row.split("_")[0]
    return {
        "method": method,
        "select": select,
        "sequence_loss": sequence_loss,
        "selected_percent": 100.0 * select["fraction"],
        "bleu_short": bleu_long / 2,
        "bleu_long": bleu_long,
        "n_selected": 4,
        "budget_short": 200,
        "budget_long": 600,
        "selection_percent_by_kind": {"clean": 50.0 if kept_short else 100.0},
        "kept_percent_by_kind": {"garbage": 100.0 if kept_short else 0.0},
        "auc": 0.5,
        "run_dir": str(run_dir),
    }


def test_table3_bias_measures_length_and_repeats_and_compares_pair_losses(tmp_path):
    from ifscale.reports import (
        selection_bias,
        table3_bias_frame,
        table3_bias_section,
        table3_frame,
    )

    quarter = {"method": "influence", "fraction": 0.25, "after_precleaning": False}
    runs = [
        _table3_run(tmp_path, "arnoldi_25", quarter, "sum", 10.0, kept_short=True),
        _table3_run(tmp_path, "randproj_25", quarter, "sum", 11.0, kept_short=True),
        _table3_run(tmp_path, "arnoldi_25", quarter, "mean", 14.0, kept_short=False),
        _table3_run(tmp_path, "randproj_25", quarter, "mean", 12.0, kept_short=False),
    ]
    # Shortest-first selection: the two repeated noisy targets (score 0) and the two
    # shortest clean pairs; ρ = 1 on the clean pairs.
    bias = selection_bias(runs[0])
    assert bias["ρ(score, length)"] == pytest.approx(1.0)
    assert bias["kept % shortest clean"] == 100.0 and bias["kept % longest clean"] == 0.0
    assert bias["kept % repeated targets"] == 100.0
    # The garbage pairs score under every clean pair; kinds absent from the pool: no AUC.
    assert bias["AUC % garbage"] == 0.0 and np.isnan(bias["AUC % misaligned"])
    reverse = selection_bias(runs[2])
    assert reverse["ρ(score, length)"] == pytest.approx(-1.0)
    assert reverse["kept % longest clean"] == 100.0 and reverse["kept % repeated targets"] == 0
    assert reverse["AUC % garbage"] == 100.0

    frame = table3_bias_frame(runs)
    assert frame["sequence loss"].tolist() == ["sum", "mean", "sum", "mean"]
    assert list(zip(frame["row"], frame["variant"], strict=True)) == [
        ("arnoldi_25", "sum"),
        ("arnoldi_25", "mean"),
        ("randproj_25", "sum"),
        ("randproj_25", "mean"),
    ]
    text = "\n".join(table3_bias_section(frame, 200, 600))
    assert "| BLEU@600 |" in text
    assert "Arnoldi 25%, mean against the table's row: BLEU long +4.0 (short +2.0)" in text
    assert "ρ 1.00 → -1.00" in text
    verdict = "With `mean`, Arnoldi's selection beats RandProj's at equal share: **holds**"
    assert f"{verdict} (true in 1 of 1" in text
    # A length-stratified selection is a variant of its own, kept out of the main table.
    by_length = {**quarter, "by_length": True}
    runs.append(_table3_run(tmp_path, "arnoldi_25", by_length, "sum", 13.0, kept_short=True))
    assert "sum, by length" in set(table3_bias_frame(runs)["variant"])
    assert list(table3_frame(runs)["BLEU long"]) == [10.0, 11.0]
    text = "\n".join(table3_bias_section(table3_bias_frame(runs), 200, 600))
    assert "Arnoldi 25%, sum, by length against the table's row: BLEU long +3.0" in text
    assert "With `sum, by length`, Arnoldi's selection beats RandProj's at equal share: not" in text
    # The loss filter with the same variant: each influence selection against it.
    runs += [
        _table3_run(tmp_path, "loss_25", quarter, "sum", 9.0, kept_short=True),
        _table3_run(tmp_path, "loss_25", quarter, "mean", 13.0, kept_short=False),
    ]
    text = "\n".join(table3_bias_section(table3_bias_frame(runs), 200, 600))
    assert "Lowest loss (baseline) 25%, mean against the table's row: BLEU long +4.0" in text
    assert "Arnoldi 25%, mean against the lowest loss, mean: BLEU long +1.0 (short +0.5)" in text
    assert "RandProj 25%, mean against the lowest loss, mean: BLEU long -1.0" in text
    loss_verdict = "With `mean`, an influence selection beats the lowest loss (`mean` too)"
    assert f"{loss_verdict} at equal share: **holds only in part** (true in 1 of 2" in text
    assert "by length`, an influence selection beats the lowest loss" not in text  # no rival
    # Without variants: the tables, no verdict.
    assert "beats RandProj" not in "\n".join(table3_bias_section(table3_bias_frame(runs[:2]), 1, 2))


def test_readme_table_is_the_one_in_results(tmp_path):
    """README.md's Table 1 block is what `report.py readme` writes from results/table1.md:
    a hand-edited README table fails here."""
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    changed = sync_readme(readme, ROOT / "results" / "table1.md")
    assert not changed, "README.md's Table 1 differs: run `python experiments/report.py readme`"
    from ifscale.reports import sync_baselines

    changed = sync_baselines(readme, ROOT / "results")
    assert not changed, "README.md's loss-baseline lines differ: run `... report.py readme`"
    assert readme.read_text() == (ROOT / "README.md").read_text()


def test_readme_sync_rewrites_the_block_and_names_a_readme_without_markers(tmp_path):
    table = tmp_path / "table1.md"
    table.write_text(
        "# T\n\n| Method | AUC |\n| --- | --- |\n| Arnoldi | 99 |\n\n## How to read it\n\n"
        "- Hardware: a CPU.\n- AUC: ...\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text("# R\n\n<!-- table1 -->\nold\n<!-- /table1 -->\n\nafter\n")
    assert sync_readme(readme, table)
    block = "| Method | AUC |\n| --- | --- |\n| Arnoldi | 99 |\n\nHardware: a CPU."
    assert readme.read_text() == f"# R\n\n<!-- table1 -->\n{block}\n<!-- /table1 -->\n\nafter\n"
    assert not sync_readme(readme, table)

    readme.write_text(readme.read_text().replace("<!-- /table1 -->\n", ""))
    with pytest.raises(ReadmeSyncError) as error:
        sync_readme(readme, table)
    assert str(readme) in str(error.value) and "\n" not in str(error.value)
    cmd = [sys.executable, str(ROOT / "experiments" / "report.py"), "readme"]
    done = subprocess.run(
        [*cmd, "--readme", str(readme), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and done.stderr.strip() == str(error.value)


def test_an_incomplete_sweep_is_refused_naming_its_missing_jobs(tmp_path):
    """A killed multirun (Hydra wrote multirun.yaml, some jobs never finished) is named job
    by job, in the basic sweeper's order: config sweep params, then the command line."""
    from experiments.sweeps import IncompleteSweep, missing_jobs, require_complete

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n"
        "  sweeper:\n"
        "    params:\n"
        "      +table1: tracin_1,arnoldi_10,lissa_r10\n"
        "      seed: 0,1\n"
        "  overrides:\n"
        "    task:\n"
        "    - experiment=table1\n"
        "    - +table1=arnoldi_10,arnoldi_100\n"  # the command line replaces the rows
    )
    for job in (0, 1, 3):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text("{}")
    missing = missing_jobs(tmp_path)
    assert missing == ["2: +table1=arnoldi_100 seed=0"]
    with pytest.raises(IncompleteSweep, match=r"1 job\(s\) without results \(2: \+table1"):
        require_complete(tmp_path)
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "metrics.json").write_text("{}")
    require_complete(tmp_path)
    assert missing_jobs(tmp_path / "2") == []  # no multirun.yaml: nothing to compare


def test_the_loss_baseline_verdict_is_computed_from_the_table(tmp_path):
    import pandas as pd

    from ifscale.reports import baselines_block
    from ifscale.reports.runs import baseline_verdict
    from ifscale.reports.table1 import row_label as _label

    def line(row, method, pbar, auc, ap, n=60000, sub=(None, None)):
        return {
            "row": row, "Method": method, "p̄": pbar, "AUC": auc, "AP": ap, "n scored": n,
            "AUC, subset": sub[0], "AP, subset": sub[1],
        }  # fmt: skip

    table = pd.DataFrame(
        [
            line("loss", "Loss (baseline)", None, 99.5, 96.0, sub=(99.6, 97.0)),
            line("el2n", "EL2N (baseline)", None, 99.6, 96.5, sub=(99.7, 97.5)),
            line("arnoldi_10", "Arnoldi", 10, 99.4, 94.5, sub=(99.7, 97.1)),
            # Scored the subset only: compared with the loss row on the subset.
            line("lissa_r10", "LISSA, r = 10", None, 99.7, 97.5, n=500, sub=(99.7, 97.5)),
        ]
    )
    (verdict,) = baseline_verdict(table, _label)
    assert "**1 of 2 influence rows beat it** (LISSA, r = 10)" in verdict
    assert "the closest by AP, LISSA, r = 10: AUC +0.1, AP +0.5 points" in verdict
    table.loc[3, "AP, subset"] = 90.0
    assert "**no influence row beats it** (of 2)" in baseline_verdict(table, _label)[0]

    # The README's line for each table is its report's verdict line, copied.
    results = tmp_path / "results"
    (results / "figures").mkdir(parents=True)
    (results / "table1.md").write_text("| a |\n| --- |\n| 1 |\n\n- Hardware: cpu.\n" + verdict)
    (results / "table3.md").write_text("# Table 3\n\n- Arnoldi 25% against no cleaning: +1.\n")
    block = baselines_block(results).splitlines()
    assert block[0] == "- **Table 1** ([`results/table1.md`](results/table1.md)): " + verdict[2:]
    assert block[1].startswith("- **Figure 1**: [`results/figures/figures.md`]")
    assert block[1].endswith("is not produced yet (`make figures`).")
    assert "has no loss rows yet (`make table3 DATA3=noisy_parallel_text` adds them)" in block[3]
    assert len(block) == 5 and block[4].startswith("- **Memorisation regimes**")


def test_regimes_are_averaged_over_seeds_and_the_findings_computed():
    from ifscale.reports import regimes_findings, regimes_frame, regimes_table, training_table

    # loss: best at E=2, worse at E=50; Arnoldi p̄=10 the other way round; TracIn [1] in
    # between. AP decides, then AUC.
    ap = {("loss", 2): (90, 92), ("loss", 50): (40, 44), ("arnoldi_10", 2): (60, 62)}
    ap |= {("arnoldi_10", 50): (70, 72), ("tracin_1", 2): (70, 70), ("tracin_1", 50): (50, 50)}
    labels = {"loss": "Loss (baseline)", "arnoldi_10": "Arnoldi p̄=10", "tracin_1": "TracIn [1]"}
    per_run = pd.DataFrame(
        [
            {
                "row": key,
                "Method": labels[key],
                "epochs": e,
                "seed": seed,
                "AUC": 95.0,
                "AP": values[seed],
                "noisy fitted": {2: 10.0, 50: 99.0}[e] + seed,
                "test accuracy": 90.0,
            }
            for (key, e), values in ap.items()
            for seed in (0, 1)
        ]
    )
    stats = regimes_frame(per_run)
    assert list(dict.fromkeys(stats["row"])) == ["loss", "tracin_1", "arnoldi_10"]
    line = stats[(stats["row"] == "loss") & (stats["epochs"] == 2)].iloc[0]
    assert line["ap_mean"] == 91 and line["seeds"] == 2
    assert np.isclose(line["ap_sd"], np.std([90, 92], ddof=1))
    table = regimes_table(stats, "ap")
    assert list(table.columns) == ["Method", "E=2", "E=50"]
    assert table.iloc[0]["E=2"] == "91.0 ± 1.4"
    verdict, *findings = regimes_findings(stats)
    assert verdict.startswith("- Influence against the per-example loss")
    assert verdict.endswith("E = 2: none; E = 50: 2 of 2 (TracIn [1], Arnoldi p̄=10).")
    assert "- TracIn [1] beats the loss baseline at E = 50 only" in findings[0]
    assert "- Arnoldi p̄=10 beats the loss baseline at E = 50 only" in findings[1]
    assert findings[2].startswith("- Curvature (Arnoldi/RandProj) beats TracIn [1] at E = 50")
    assert findings[3] == (
        "- The best method by mean AP at each E: E = 2: Loss (baseline) (91.0); "
        "E = 50: Arnoldi p̄=10 (71.0)."
    )
    assert "at E = 50 the model predicts the given (wrong) label of 99.5%" in findings[4]
    assert list(training_table(stats)["noisy labels fitted, %"]) == ["10.5 ± 0.7", "99.5 ± 0.7"]


@pytest.mark.parametrize(
    ("aum_ap", "verdict"),
    [
        (60.0, "survives the baselines over the same checkpoints"),
        (90.0, "does not survive the baselines over the same checkpoints: AUM over"),
    ],
)
def test_regimes_say_whether_tracin_k_survives_the_checkpoint_baselines(aum_ap, verdict):
    from ifscale.reports import regimes_findings, regimes_frame

    ap = {"loss": 40.0, "tracin_k": 87.0, "checkpoint_loss": 70.0, "aum": aum_ap}
    labels = {
        "loss": "Loss (baseline)",
        "tracin_k": "TracIn [k]",
        "checkpoint_loss": "Loss over checkpoints (baseline)",
        "aum": "AUM over checkpoints (baseline)",
    }
    per_run = pd.DataFrame(
        [
            {
                "row": key,
                "Method": labels[key],
                "epochs": e,
                "seed": seed,
                "AUC": 95.0,
                "AP": value + seed,
                "noisy fitted": 99.0,
                "test accuracy": 90.0,
            }
            for key, value in ap.items()
            for e in (5, 50)
            for seed in (0, 1)
        ]
    )
    findings = regimes_findings(regimes_frame(per_run))
    line = next(f for f in findings if "TracIn [k]'s advantage" in f)
    assert line.startswith("- At E = 50 (the longest training measured)") and verdict in line
    assert "(mean AP: TracIn [k] 87.5, Loss over checkpoints (baseline) 70.5" in line


def test_table1_seeds_are_averaged_and_the_differences_paired_by_seed():
    from ifscale.reports import seeds_frame, seeds_section

    def run(method, options, seed, auc, ap):
        return {
            "method": method,
            "method_options": options,
            "pbar": options.get("pbar"),
            "seed": seed,
            "auc": auc / 100,
            "ap": ap / 100,
            "t_score_s": 1.0,
            "t_fit_s": 2.0,
            "n_scored": 60000,
            "test_accuracy": 0.98 + seed / 1000,
            "run_dir": f"r{seed}",
        }

    # Arnoldi p̄=10 is 1 AP point under the loss at every seed (a resolved gap, though the
    # seeds' spread of each row is 10 points); TracIn [1] is above the loss at one seed
    # and under it at the other two (unresolved). LISSA is not a seeds row: left out.
    runs = []
    for seed, base in ((0, 90), (1, 80), (2, 100)):
        runs += [
            run("loss", {}, seed, 99, base),
            run("arnoldi", {"pbar": 10}, seed, 98, base - 1),
            run("tracin", {"checkpoints": 1}, seed, 98, base + (5 if seed == 0 else -1)),
            run("lissa", {"r": 10}, seed, 90, 50),
        ]
    runs.append(run("loss", {}, 2, 99, 100))  # a rerun of a (row, seed): the later one wins
    per_seed = seeds_frame(runs)
    assert list(per_seed["row"]) == ["loss"] * 3 + ["tracin_1"] * 3 + ["arnoldi_10"] * 3
    text = "\n".join(seeds_section(per_seed))
    assert "mean ± sd over 3 seeds" in text
    assert "| Loss (baseline) | — | 3 | 99.00 ± 0.00 | 90.0 ± 10.0 |" in text
    assert "- Arnoldi p̄=10 against Loss (baseline): AP -1.0 ± 0.0" in text
    assert text.count("lower.") == 1
    assert "- TracIn [1] against Loss (baseline): AP +1.0 ± 3.5" in text
    assert "unresolved (inside one sd)" in text
    # One seed alone is no spread: no section.
    assert seeds_section(per_seed[per_seed["seed"] == 0]) == []
