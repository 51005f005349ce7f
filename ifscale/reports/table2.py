"""Table 2 (permuted references, German→English Transformer): the rows, the table, the
paper's findings, the notes, the top pairs and the `make table2-check` section."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ifscale.reports.runs import (
    METHOD_LABELS,
    Row,
    baseline_verdict,
    fmt,
    line_of,
    markdown_table,
    match_rows,
    pct,
    rows_with_runs,
    scores_of,
    verdict,
)


def _table2_row(layers: str, method: str, pbar: int, auc: float, ap: float) -> Row:
    accepted = ("all", None) if layers == "all" else (layers,)
    return Row(
        f"{layers}_{method}_{pbar}",
        METHOD_LABELS[method],
        method,
        {"pbar": pbar},
        {"p̄": pbar, "AUC": auc, "AP": ap},
        {"layers": accepted},
    )


# The poster's Table 2 (WMT17 German→English Transformer, 6% permuted references).
TABLE2_ROWS: tuple[Row, ...] = (
    _table2_row("all", "randproj", 10, 85.6, 31.3),
    _table2_row("all", "randproj", 20, 85.2, 28.0),
    _table2_row("all", "arnoldi", 10, 92.0, 47.8),
    _table2_row("all", "arnoldi", 20, 93.8, 54.4),
    _table2_row("last3_decoder", "randproj", 10, 80.6, 23.5),
    _table2_row("last3_decoder", "randproj", 20, 83.0, 25.8),
    _table2_row("last3_decoder", "arnoldi", 10, 82.0, 28.1),
    _table2_row("last3_decoder", "arnoldi", 20, 83.7, 28.5),
)
# Baselines (not in the paper; `make table2` runs them as the table2_baselines sweep): the
# per-example loss of a pair, summed over its target tokens or their per-token mean.
TABLE2_BASELINE_ROWS: tuple[Row, ...] = tuple(
    Row(
        f"loss_{kind}",
        f"Loss (baseline), {label}",
        "loss",
        {},
        {"p̄": None, "AUC": None, "AP": None},
        {"sequence_loss": (kind,)},
    )
    for kind, label in (("sum", "summed"), ("mean", "per-token mean"))
)
# K-FAC and EK-FAC (not in the paper; `make table2` runs them as the table2_kfac sweep) over
# the Dense layers and attention projections of each layer set.
TABLE2_KFAC_ROWS: tuple[Row, ...] = tuple(
    Row(
        f"{layers}_{method}",
        METHOD_LABELS[method],
        method,
        {},
        {"p̄": None, "AUC": None, "AP": None},
        {"layers": ("all", None) if layers == "all" else (layers,)},
    )
    for layers in ("all", "last3_decoder")
    for method in ("kfac", "ekfac")
)
LAYER_LABELS = {"all": "all layers", "last3_decoder": "last 3 decoder layers"}


def table2_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per Table 2 row with a finished run: ours beside the paper's values."""
    lines = []
    for row, run in rows_with_runs(TABLE2_ROWS + TABLE2_KFAC_ROWS + TABLE2_BASELINE_ROWS, runs):
        layers = row.fields.get("layers", (None,))[0]
        lines.append(
            {
                "row": row.key,
                "Layers": LAYER_LABELS.get(layers, "—"),
                "Method": row.label,
                "p̄": run.get("pbar"),
                "AUC": pct(run["auc"]),
                "AP": pct(run["ap"]),
                "paper AUC": row.paper["AUC"],
                "paper AP": row.paper["AP"],
                "n scored": run["n_scored"],
                "n noisy scored": run["n_noisy_scored"],
                "parameters": run["n_perturbed_params"],
                "fit, s": run["t_fit_s"],
                "fit cached": run.get("fit_cache_hit"),
                "T, s": run["t_score_s"],
                "examples/s": run["examples_per_s"],
                "BLEU": run.get("bleu"),
                "test accuracy": pct(run.get("test_accuracy")),
                "dataset": run.get("dataset"),
                "model": run.get("model"),
                "device": run.get("device"),
                "git commit": run.get("git_commit"),
                "run_dir": run["run_dir"],
            }
        )
    return pd.DataFrame(lines)


def _compare(table: pd.DataFrame, better: str, worse: str) -> tuple[float, float] | None:
    a, b = line_of(table, better), line_of(table, worse)
    if a is None or b is None:
        return None
    return a["AUC"] - b["AUC"], a["AP"] - b["AP"]


def _comparisons(table: pd.DataFrame, pairs) -> tuple[list[bool], list[str]]:
    """For each (better row, worse row, what) whose rows both have runs: whether the
    better one wins in AP, and a line with both differences."""
    wins, out = [], []
    for better, worse, what in pairs:
        diff = _compare(table, better, worse)
        if diff is None:
            continue
        wins.append(diff[1] > 0)
        out.append(f"- {what}: AUC {diff[0]:+.1f}, AP {diff[1]:+.1f} points.")
    return wins, out


def _label(line: pd.Series) -> str:
    if pd.isna(line["p̄"]):
        return line["Method"]
    return f"{line['Method']} p̄={int(line['p̄'])}, {line['Layers']}"


def table2_findings(table: pd.DataFrame) -> list[str]:
    """The paper's two findings, checked on every pair of rows that has both runs:
    Arnoldi beats RandProj at equal p̄ in AP; all layers beat the last three decoder
    layers."""
    arnoldi_wins, arnoldi_lines = _comparisons(
        table,
        [
            (
                f"{layers}_arnoldi_{pbar}",
                f"{layers}_randproj_{pbar}",
                f"Arnoldi against RandProj, {label}, p̄={pbar}",
            )
            for layers, label in LAYER_LABELS.items()
            for pbar in (10, 20)
        ],
    )
    layer_wins, layer_lines = _comparisons(
        table,
        [
            (
                f"all_{method}_{pbar}",
                f"last3_decoder_{method}_{pbar}",
                f"All layers against the last 3 decoder layers, {METHOD_LABELS[method]} p̄={pbar}",
            )
            for method in ("arnoldi", "randproj")
            for pbar in (10, 20)
        ],
    )
    unit = "comparisons, AP"
    # Against the stronger of the two loss rows (by AP).
    losses = [line_of(table, row.key) for row in TABLE2_BASELINE_ROWS]
    losses = [line for line in losses if line is not None]
    strongest = max(losses, key=lambda line: line["AP"])["row"] if losses else "loss"
    return [
        verdict(arnoldi_wins, "Finding 1, Arnoldi beats RandProj at equal p̄", unit),
        verdict(layer_wins, "Finding 2, all layers beat the last three decoder layers", unit),
        *baseline_verdict(table, _label, strongest),
        "",
        *arnoldi_lines,
        *layer_lines,
    ]


def table2_notes(table: pd.DataFrame, runs: list[dict[str, Any]]) -> list[str]:
    """Corpus, model and settings of the runs behind Table 2, and the findings."""
    matched = match_rows(TABLE2_ROWS, runs)
    run = next(iter(matched.values()), {})
    noise = run.get("noise") or {}
    stats = run.get("data_stats") or {}
    devices = sorted({str(d) for d in table["device"].dropna()}) if len(table) else []
    arnoldi = next((r for k, r in matched.items() if "arnoldi" in k), {})
    n_arnoldi = (arnoldi.get("method_options") or {}).get("n")
    notes = [
        "## How to read it",
        "",
        f"- Corpus: **{run.get('dataset')}**, {fmt(run.get('n_train'))} training pairs "
        f"({fmt(stats.get('train_pairs_dropped_too_long'))} of "
        f"{fmt(stats.get('train_pairs_read'))} dropped as longer than the token limit), of "
        f"which {fmt(noise.get('n_noisy'))} ({100 * (noise.get('rate') or 0):.0f}%) carry the "
        "reference of another permuted pair (a seeded derangement); "
        f"{fmt(run.get('n_test'))} test pairs for BLEU.",
        f"- Model: {run.get('model')}, {fmt(run.get('n_params'))} parameters, trained once "
        f"({fmt(run.get('train_steps'))} steps, {fmt(run.get('train_time_s'))} s) on the "
        f"noisy pairs: test BLEU {fmt(run.get('bleu'))} (sacreBLEU, greedy decoding), "
        f"next-token accuracy {pct(run.get('test_accuracy')):.1f}% on the test references.",
        "- AUC and AP (percent): finding the permuted pairs by ranking the scored pairs on "
        "self-influence, the loss of a pair being its summed token cross-entropy. Every row "
        + (
            f"scores all {fmt(run.get('n_scored'))} training pairs "
            if run.get("n_scored") == run.get("n_train")
            else f"scores the same seeded subset of {fmt(run.get('n_scored'))} training pairs "
        )
        + f"({fmt(run.get('n_noisy_scored'))} permuted).",
        f"- H is the Hessian of the mean loss over {fmt(run.get('fit_batch_size'))} × "
        f"{fmt(run.get('fit_batches'))} seeded training pairs; Arnoldi runs n = "
        f"{fmt(n_arnoldi)} iterations once per layer set (both p̄ share the fit); RandProj "
        "draws a new p̄-dimensional projection per row.",
        "- `parameters`: the perturbed parameters (all, or the last three decoder blocks). "
        "`fit, s`: one-time work (cached: a rerun shows the original time); `T, s`: scoring "
        "the pairs, compilation excluded.",
        f"- Hardware: {', '.join(devices) or 'unknown'}.",
        "",
        "## The paper's findings, measured here",
        "",
        *table2_findings(table),
    ]
    return notes


# The row whose most self-influential pairs are listed: the paper's best row first.
TOP_PAIRS_ROWS = ("all_arnoldi_20", "all_arnoldi_10", "all_randproj_20", "all_randproj_10")


def top_pairs(runs: list[dict[str, Any]], count: int = 20) -> pd.DataFrame | None:
    """The `count` most self-influential training pairs of the first row of
    `TOP_PAIRS_ROWS` that has a run: source, the reference trained on, its own reference."""
    matched = match_rows(TABLE2_ROWS, runs)
    row = next((key for key in TOP_PAIRS_ROWS if key in matched), None)
    if row is None:
        return None
    scores = scores_of(matched[row]).sort_values("self_influence", ascending=False, kind="stable")
    top = scores.head(count)[
        ["example", "self_influence", "is_noisy", "source", "target", "clean_target"]
    ]
    return top.assign(row=row).reset_index(drop=True)


def table2_check_section(check_runs: list[dict[str, Any]], table: pd.DataFrame) -> list[str]:
    """A markdown section with the variant runs of `experiment=table2_check` beside the
    Table 2 rows of the same layer set."""
    if not check_runs:
        return []
    lines = []
    for run in check_runs:
        options = run.get("method_options") or {}
        layers = run.get("layers") or "all"
        label = {"tracin": "TracIn [1] (no curvature)", "arnoldi": "Arnoldi"}.get(
            run["method"], run["method"]
        )
        lines.append(
            {
                "Layers": LAYER_LABELS.get(layers, layers),
                "Method": label,
                "n": options.get("n"),
                "p̄": options.get("pbar"),
                "AUC": pct(run["auc"]),
                "AP": pct(run["ap"]),
                "n scored": run["n_scored"],
                "fit, s": run["t_fit_s"],
                "T, s": run["t_score_s"],
            }
        )
    frame = pd.DataFrame(lines)
    out = [
        "",
        "## Investigation: variants on the same model (`make table2-check`)",
        "",
        "For each layer set, self-influence without curvature (TracIn [1]: the squared "
        "gradient norm at the final parameters) and Arnoldi with a larger basis and more "
        "eigenpairs, on the same scored pairs as the table.",
        "",
        markdown_table(frame),
        "",
    ]
    for label in LAYER_LABELS.values():
        rows = table[table["Layers"] == label]
        variants = frame[frame["Layers"] == label]
        if rows.empty or variants.empty:
            continue
        best = rows.loc[rows["AP"].idxmax()]
        for _, v in variants.iterrows():
            out.append(
                f"- {label}: {v['Method']}"
                + ("" if pd.isna(v["p̄"]) else f" p̄={int(v['p̄'])}, n={int(v['n'])}")
                + f": AUC {v['AUC']:.1f}, AP {v['AP']:.1f} against the table's best row for "
                f"these layers ({best['Method']} p̄={int(best['p̄'])}: {best['AUC']:.1f}, "
                f"{best['AP']:.1f})."
            )
    return out
