"""Run folders and what every table shares: loading runs, matching them to a paper's rows,
formatting numbers and writing markdown."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ifscale.run.metrics import RunMetrics

# How the reports name the projected methods.
METHOD_LABELS = {
    "arnoldi": "Arnoldi",
    "randproj": "RandProj",
    "loss": "Lowest loss (baseline)",
    "kfac": "K-FAC",
    "ekfac": "EK-FAC",
}


def load_runs(folder: str | Path) -> list[dict[str, Any]]:
    """The finished runs under `folder` (its subfolders holding a `metrics.json`, except
    fit-only runs and single shards, whose merge is a run of its own), each as its metrics
    (read through `RunMetrics`, so a renamed or missing key fails here) with `run_dir`
    added, in folder order."""
    runs = []
    # Job folders in numeric order (Hydra names them 0, 1, ..., 10): later jobs win ties.
    paths = sorted(
        Path(folder).glob("**/metrics.json"),
        key=lambda p: [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.parent.parts],
    )
    for path in paths:
        metrics = RunMetrics.load(path).to_dict()
        # No scores: a fit, or one shard of a scoring (written "shard" by older versions),
        # whose merge is a run of its own.
        if metrics.get("stage") in ("fit", "shard") or "shard" in metrics:
            continue
        metrics["run_dir"] = str(path.parent)
        runs.append(metrics)
    return runs


def config_of(run: dict[str, Any]) -> dict[str, Any]:
    """The resolved config the run ran with (its `config.json`)."""
    return json.loads((Path(run["run_dir"]) / "config.json").read_text())


def scores_of(run: dict[str, Any]) -> pd.DataFrame:
    # keep_default_na=False: an empty (or "NA") sentence stays a string, not a missing value.
    return pd.read_csv(Path(run["run_dir"]) / "scores.csv", keep_default_na=False)


# Method options added after runs were stored, at the value those runs had: a row asking for
# the default matches them (Arnoldi's Hessian rows match runs from before `curvature`).
ADDED_OPTIONS: dict[str, Any] = {"curvature": "hessian"}


@dataclasses.dataclass(frozen=True)
class Row:
    """A row of a paper table: which runs it takes and what the paper reported."""

    key: str
    label: str
    method: str
    options: dict[str, Any]
    paper: dict[str, float | None]
    # Top-level run fields the row requires, each with its accepted values (e.g. layers).
    fields: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)

    def matches(self, run: dict[str, Any]) -> bool:
        options = {**ADDED_OPTIONS, **(run.get("method_options") or {})}
        return (
            run.get("method") == self.method
            and all(options.get(k) == v for k, v in self.options.items())
            and all(run.get(k) in accepted for k, accepted in self.fields.items())
        )


def match_rows(rows: Sequence[Row], runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest run for each row (later folders win)."""
    found = {}
    for run in runs:
        for row in rows:
            if row.matches(run):
                found[row.key] = run
    return found


def rows_with_runs(rows: Sequence[Row], runs: list[dict[str, Any]]):
    """(row, its newest run) for each row that has one, in the rows' order."""
    matched = match_rows(rows, runs)
    return [(row, matched[row.key]) for row in rows if row.key in matched]


def pct(value: float | None) -> float:
    """A fraction in percent (NaN for None)."""
    return float("nan") if value is None else 100.0 * value


def fmt(value: Any) -> str:
    """A table cell: — for missing, yes/no, thousands separators, about 3 digits."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        value = float(value)
        if value.is_integer() and abs(value) < 1e6:
            return f"{int(value):,}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.1f}"
        return f"{value:.2g}"
    return str(value)


def mean_sd(mean: float, sd: float, digits: int = 1) -> str:
    """A "mean ± sd" cell (`digits` decimals); the mean alone where there is no sd (one seed)."""
    if not np.isfinite(sd):
        return fmt(mean)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (no extra dependency)."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([head, rule, *body])


def line_of(frame: pd.DataFrame, key: str) -> pd.Series | None:
    """The line of `frame` whose `row` is `key`, or None."""
    hit = frame[frame["row"] == key]
    return None if hit.empty else hit.iloc[0]


def verdict(wins: list[bool], claim: str, unit: str) -> str:
    """Whether a paper's claim held in each of the comparisons that were measured."""
    if not wins:
        return f"- {claim}: not measured (rows missing)."
    if all(wins):
        held = "**holds**"
    elif not any(wins):
        held = "**does not hold**"
    else:
        held = "**holds only in part**"
    return f"- {claim}: {held} (true in {sum(wins)} of {len(wins)} {unit})."


# Rows that are baselines, not influence (`ifscale.influence.baselines`).
BASELINE_METHODS = ("loss", "el2n")


def baseline_verdict(table: pd.DataFrame, label, loss_row: str = "loss") -> list[str]:
    """One line: does any influence row of `table` beat the loss baseline `loss_row` (AP
    first, then AUC), each on the examples it shares with the loss row (the subset columns
    when it scored fewer)? `label(line)` names a row. Empty without a loss row."""
    loss = line_of(table, loss_row)
    baselines = {key for key in table["row"] if key.split("_")[0] in BASELINE_METHODS}
    influence = [line for _, line in table.iterrows() if line["row"] not in baselines]
    if loss is None or not influence:
        return []

    def pair(line):
        if line["n scored"] == loss["n scored"]:
            return line["AUC"], line["AP"], loss["AUC"], loss["AP"]
        return line["AUC, subset"], line["AP, subset"], loss["AUC, subset"], loss["AP, subset"]

    def beats(line) -> bool:
        auc, ap, loss_auc, loss_ap = pair(line)
        return (ap, auc) > (loss_ap, loss_auc)

    beating = [label(line) for line in influence if beats(line)]
    best = max(influence, key=lambda line: pair(line)[1] - pair(line)[3])
    auc, ap, loss_auc, loss_ap = pair(best)
    head = (
        f"**{len(beating)} of {len(influence)} influence rows beat it** ({', '.join(beating)})"
        if beating
        else f"**no influence row beats it** (of {len(influence)})"
    )
    return [
        f"- Influence against the per-example loss (a baseline the paper does not report; AP "
        f"first, then AUC, each row on the examples it shares with the loss row): {head}; the "
        f"closest by AP, {label(best)}: AUC {auc - loss_auc:+.1f}, AP {ap - loss_ap:+.1f} "
        f"points (loss: AUC {loss_auc:.2f}, AP {loss_ap:.2f})."
    ]
