"""Table 1 (mislabeled MNIST, cnn_large): the rows, the table, its notes, the recall
curves, the top images, and the `make table1-check` section."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ifscale.reports.runs import (
    Row,
    baseline_verdict,
    config_of,
    fmt,
    line_of,
    markdown_table,
    match_rows,
    pct,
    rows_with_runs,
    scores_of,
)
from ifscale.run.metrics import RunMetrics


def _paper(pbar, t, auc, ap):
    return {"p̄": pbar, "T, s": t, "AUC": auc, "AP": ap}


# The poster's Table 1 (cnn_large, 10% mislabeled MNIST); T in seconds, AUC/AP in percent.
TABLE1_ROWS: tuple[Row, ...] = (
    # Baselines (not in the paper): scores at the final parameters, no influence.
    Row("loss", "Loss (baseline)", "loss", {}, _paper(None, None, None, None)),
    Row("el2n", "EL2N (baseline)", "el2n", {}, _paper(None, None, None, None)),
    Row("lissa_r10", "LISSA, r = 10", "lissa", {"r": 10}, _paper(100, 4900, 98.9, 95.0)),
    Row("lissa_r100", "LISSA, r = 100", "lissa", {"r": 100}, _paper(100, 32300, 98.8, 94.8)),
    Row("tracin_1", "TracIn [1]", "tracin", {"checkpoints": 1}, _paper(None, 5, 98.7, 94.0)),
    Row("tracin_100", "TracIn [100]", "tracin", {"checkpoints": 100}, _paper(None, 42, 99.7, 98.7)),
    Row("randproj_10", "RandProj", "randproj", {"pbar": 10}, _paper(10, 0.2, 97.2, 87.7)),
    Row("randproj_100", "RandProj", "randproj", {"pbar": 100}, _paper(100, 1.9, 98.6, 93.9)),
    Row(
        "arnoldi_10",
        "Arnoldi",
        "arnoldi",
        {"pbar": 10, "curvature": "hessian"},
        _paper(10, 0.2, 95.0, 84.0),
    ),
    Row(
        "arnoldi_100",
        "Arnoldi",
        "arnoldi",
        {"pbar": 100, "curvature": "hessian"},
        _paper(100, 1.9, 98.2, 92.9),
    ),
    # Not in the paper: the Gauss–Newton curvature in the same Arnoldi fit, and the
    # Kronecker-factored GGN (K-FAC, EK-FAC: Grosse et al. 2023).
    Row(
        "arnoldi_ggn_10",
        "Arnoldi, GGN",
        "arnoldi",
        {"pbar": 10, "curvature": "ggn"},
        _paper(None, None, None, None),
    ),
    Row(
        "arnoldi_ggn_100",
        "Arnoldi, GGN",
        "arnoldi",
        {"pbar": 100, "curvature": "ggn"},
        _paper(None, None, None, None),
    ),
    Row("kfac", "K-FAC", "kfac", {}, _paper(None, None, None, None)),
    Row("ekfac", "EK-FAC", "ekfac", {}, _paper(None, None, None, None)),
    # Not in the paper: TRAK (Park et al. 2023) at Arnoldi p̄ = 100's projection size.
    Row("trak_1", "TRAK k=100", "trak", {"k": 100, "models": 1}, _paper(None, None, None, None)),
    Row(
        "trak_10",
        "TRAK k=100 [10 checkpoints]",
        "trak",
        {"k": 100, "models": 10},
        _paper(None, None, None, None),
    ),
)

# The fidelity bands for the rows whose cost lets them score every example.
FIDELITY = {"AUC": 2.0, "AP": 6.0}
FIDELITY_ROWS = (
    "tracin_1",
    "tracin_100",
    "randproj_10",
    "randproj_100",
    "arnoldi_10",
    "arnoldi_100",
)


def table1_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per Table 1 row with a finished run: ours beside the paper's values."""
    lines = []
    for row, run in rows_with_runs(TABLE1_ROWS, runs):
        n = run["n_scored"]
        lines.append(
            {
                "row": row.key,
                "Method": row.label,
                "p̄": run.get("pbar"),
                "T, s": run["t_score_s"],
                "AUC": pct(run["auc"]),
                "AP": pct(run["ap"]),
                "paper p̄": row.paper["p̄"],
                "paper T, s": row.paper["T, s"],
                "paper AUC": row.paper["AUC"],
                "paper AP": row.paper["AP"],
                "n scored": n,
                "n noisy scored": run["n_noisy_scored"],
                "AUC, subset": pct(run.get("auc_compare")),
                "AP, subset": pct(run.get("ap_compare")),
                "n subset": run.get("n_compare"),
                "fit, s": run["t_fit_s"],
                "fit cached": run.get("fit_cache_hit"),
                "examples/s": run["examples_per_s"],
                "ms/example": 1000.0 / run["examples_per_s"],
                "compile, s": run.get("t_score_compile_s"),
                "test accuracy": run.get("test_accuracy"),
                "device": run.get("device"),
                "git commit": run.get("git_commit"),
                "run_dir": run["run_dir"],
            }
        )
    return pd.DataFrame(lines)


def table1_notes(table: pd.DataFrame, runs: list[dict[str, Any]]) -> list[str]:
    """What the columns mean, the settings, and the paper's relations as measured here."""
    matched = match_rows(TABLE1_ROWS, runs)
    any_run = next(iter(matched.values()), {})
    devices = sorted({str(d) for d in table["device"].dropna()})
    n_subset = table["n subset"].dropna().max() if len(table) else None
    subset_note = (
        f"subset of {fmt(n_subset)} training examples (10% of them mislabeled), the set the "
        "slow rows (LISSA, TracIn [100]) score; the only column that compares all rows on "
        "identical examples."
        if n_subset is not None and np.isfinite(n_subset)
        else "subset: not used in this table, where every row scored every example "
        "(`make table1 FULL=1`)."
    )
    # HVPs per pass over the fit data of the rows that fit (`method.block`; 1 before it existed).
    blocks = sorted(
        {
            int((run.get("method_options") or {}).get("block", 1))
            for run in matched.values()
            if run.get("method") in ("arnoldi", "randproj")
        }
    )
    per_pass = f", {' or '.join(map(str, blocks))} per pass over the fit data" if blocks else ""
    notes = [
        "## How to read it",
        "",
        f"- Hardware: {', '.join(devices) or 'unknown'}. Model trained once "
        f"({fmt(any_run.get('train_steps'))} steps, test accuracy "
        f"{pct(any_run.get('test_accuracy')):.2f}%) on {fmt(any_run.get('n_train'))} MNIST "
        f"training images of which {fmt((any_run.get('noise') or {}).get('n_noisy'))} were "
        "relabeled to a different class (uniformly among the other classes, seeded).",
        "- AUC and AP (percent): finding the mislabeled examples by ranking the scored "
        "training examples on self-influence (scikit-learn `roc_auc_score`, "
        "`average_precision_score`), over the `n scored` examples of each row.",
        "- **T, s** is the scoring time of that row: self-influence of its `n scored` "
        "examples with compilation excluded (the first, compiling batch is not timed; T is "
        "all n examples at the rate of the timed batches), clock stopped after "
        f"`block_until_ready`. The one-time fit (Arnoldi's n HVPs, RandProj's p̄ HVPs{per_pass}) "
        "is the `fit, s` column; it is cached, and both Arnoldi rows share one fit. Compare costs "
        "across rows with `examples/s` (in `table1.csv`, also `ms/example`): rows score "
        "different numbers of examples.",
        "- **AUC, subset / AP, subset**: every row evaluated on the same seeded, stratified "
        + subset_note,
        "- **p̄**: eigenpairs kept (Arnoldi) or projection dimension (RandProj). LISSA has "
        "none; the paper lists p̄ = 100 for its LISSA rows without defining it there, which we "
        "read as the p̄ of the rows LISSA is compared with, so our LISSA rows show —.",
    ]
    curvatures = [
        (key, matched[key]) for key in ("arnoldi_100", "arnoldi_ggn_100") if key in matched
    ]
    if curvatures:
        counts = ", ".join(
            f"{'the Gauss–Newton matrix' if 'ggn' in key else 'the Hessian'}: "
            f"{sum(v < 0 for v in run.get('eigenvalues') or [])} of "
            f"{len(run.get('eigenvalues') or [])} negative"
            for key, run in curvatures
        )
        notes.append(
            "- **Arnoldi, GGN**: the same block fit (n = 200 products) on the Gauss–Newton "
            "matrix Jᵀ H_f J instead of the Hessian: positive semi-definite, so none of its "
            f"Ritz values is negative (p̄ = 100 Ritz values used, {counts})."
        )
    if "kfac" in matched or "ekfac" in matched:
        notes.append(
            "- **K-FAC, EK-FAC**: each Dense/Conv layer's block of the Gauss–Newton matrix "
            "as A ⊗ S from the fit examples (labels drawn from the model); the fit is one pass "
            "over them (EK-FAC: two) and their eigendecompositions, no Krylov iteration; "
            "damping 0.1 × each layer's mean eigenvalue (`docs/methods.md`)."
        )
    lissa = matched.get("lissa_r10") or matched.get("lissa_r100")
    if lissa:
        o = lissa.get("method_options", {})
        notes.append(
            f"- LISSA settings: scale {o.get('scale')}, damping {o.get('damping')}, each "
            f"recursion step an HVP on one batch of {lissa.get('fit_batch_size')} training "
            f"examples (cycling through {lissa.get('fit_batches')} seeded batches); see "
            "`conf/table1/lissa_r10.yaml` for the reasons."
        )
    notes += ["", "## The paper's relations, measured here", ""]
    notes += _relations(table)
    notes += ["", "## Fidelity to the paper", ""]
    for key in FIDELITY_ROWS:
        line = line_of(table, key)
        if line is None:
            continue
        d_auc, d_ap = line["AUC"] - line["paper AUC"], line["AP"] - line["paper AP"]
        inside = abs(d_auc) <= FIDELITY["AUC"] and abs(d_ap) <= FIDELITY["AP"]
        where = "all scored examples" if line["n scored"] > (line["n subset"] or 0) else "subset"
        notes.append(
            f"- {row_label(line)}: AUC {d_auc:+.1f}, AP {d_ap:+.1f} points from the paper "
            f"({where}): "
            + ("within" if inside else "**outside**")
            + f" the ±{FIDELITY['AUC']:g} / ±{FIDELITY['AP']:g} band."
        )
    return notes


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def row_label(line: pd.Series) -> str:
    return line["Method"] + ("" if pd.isna(line["p̄"]) else f" p̄={int(line['p̄'])}")


def _relations(table: pd.DataFrame) -> list[str]:
    out = []
    arn100, arn10 = line_of(table, "arnoldi_100"), line_of(table, "arnoldi_10")
    rp100, rp10 = line_of(table, "randproj_100"), line_of(table, "randproj_10")
    tr1, tr100 = line_of(table, "tracin_1"), line_of(table, "tracin_100")
    for key, paper_ratio in (("lissa_r10", 4900 / 1.9), ("lissa_r100", 32300 / 1.9)):
        lissa = line_of(table, key)
        if lissa is not None and arn100 is not None:
            ratio = lissa["ms/example"] / arn100["ms/example"]
            out.append(
                f"- Per-example cost, {lissa['Method']} against Arnoldi p̄=100: {ratio:,.0f}× "
                f"({_ms(lissa['ms/example'])} against {_ms(arn100['ms/example'])} ms per example; "
                f"paper: {paper_ratio:,.0f}×)."
            )
    for name, big, small, paper in (
        ("Arnoldi", arn100, arn10, (3.2, 8.9)),
        ("RandProj", rp100, rp10, (1.4, 6.2)),
    ):
        if big is not None and small is not None:
            out.append(
                f"- {name} p̄=100 against p̄=10: AUC {big['AUC'] - small['AUC']:+.1f}, AP "
                f"{big['AP'] - small['AP']:+.1f} points (paper: {paper[0]:+.1f}, {paper[1]:+.1f}); "
                f"cost {big['ms/example'] / small['ms/example']:.1f}× per example."
            )
    # Rows that score different example sets are compared on the common subset; when every
    # row scored every example (FULL=1) there is no subset and the main columns are common.
    subset = table["AUC, subset"].notna().all() if len(table) else False
    auc, ap = ("AUC, subset", "AP, subset") if subset else ("AUC", "AP")
    where = "on the common subset" if subset else "on all examples"
    if tr1 is not None and tr100 is not None:
        out.append(
            f"- TracIn [100] against TracIn [1], {where}: AUC "
            f"{tr100[auc] - tr1[auc]:+.1f}, AP {tr100[ap] - tr1[ap]:+.1f} points (paper, on "
            f"all examples: +1.0, +4.7); cost {tr100['ms/example'] / tr1['ms/example']:.0f}× "
            "per example."
        )
    out += baseline_verdict(table, row_label)
    curvature = [
        line_of(table, row.key)
        for row in TABLE1_ROWS
        if row.method in ("arnoldi", "randproj", "lissa", "kfac", "ekfac")
    ]
    curvature = [c for c in curvature if c is not None and np.isfinite(c[auc])]
    if tr1 is not None and curvature:
        best = max(curvature, key=lambda c: c[ap])
        label = row_label(best)
        d_auc = best[auc] - tr1[auc]
        d_ap = best[ap] - tr1[ap]
        verdict = (
            "curvature helps here"
            if d_ap > 1.0
            else "curvature brings no clear advantage here"
            if d_ap > -1.0
            else "the gradient-only score is better here"
        )
        out.append(
            f"- Curvature against none (paper: 'no advantage in using curvature information' "
            f"on this model): the best influence row {where} by AP, {label}, "
            f"against TracIn [1] (gradients at the last checkpoint, no Hessian): AUC "
            f"{d_auc:+.1f}, AP {d_ap:+.1f} points: {verdict}."
        )
    return out


def found_at_k(runs: list[dict[str, Any]], rows: Sequence[Row] = TABLE1_ROWS) -> pd.DataFrame:
    """For each row: the share of the mislabeled examples found (recall) and the precision
    when inspecting the top k% of its scored examples by self-influence."""
    frames = []
    for row, run in rows_with_runs(rows, runs):
        scores = scores_of(run)
        noisy = scores.sort_values("self_influence", ascending=False, kind="stable")["is_noisy"]
        noisy = noisy.to_numpy(bool)
        inspected = np.arange(1, len(noisy) + 1)
        found = np.cumsum(noisy)
        grid = np.unique(np.clip(np.round(np.linspace(0, 1, 201) * len(noisy)), 1, len(noisy)))
        at = grid.astype(int) - 1
        frames.append(
            pd.DataFrame(
                {
                    "row": row.key,
                    "inspected_percent": 100.0 * inspected[at] / len(noisy),
                    "found_percent": 100.0 * found[at] / max(noisy.sum(), 1),
                    "precision_percent": 100.0 * found[at] / inspected[at],
                    "n_scored": len(noisy),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# The row whose top examples the notebook shows: the paper's method first.
TOP_EXAMPLES_ROWS = ("arnoldi_100", "arnoldi_10", "randproj_100", "randproj_10", "tracin_1")


def top_examples(
    runs: list[dict[str, Any]],
    prefer: Sequence[str] = TOP_EXAMPLES_ROWS,
    count: int = 32,
    rows: Sequence[Row] = TABLE1_ROWS,
) -> dict[str, np.ndarray] | None:
    """The `count` most self-influential training examples of the first row of `prefer`
    that has a run, with their images (reloaded through the run's `config.json`), given
    and true labels."""
    from ifscale.domains import domain_of
    from ifscale.run.compose import from_dict

    matched = match_rows(rows, runs)
    row = next((key for key in prefer if key in matched), None)
    if row is None:
        return None
    run = matched[row]
    scores = scores_of(run).sort_values("self_influence", ascending=False, kind="stable")
    top = scores.head(count)
    cfg = from_dict(config_of(run))
    data = domain_of(cfg.dataset).load(cfg)
    example = top["example"].to_numpy()
    assert np.array_equal(data.y_train[example], top["label"].to_numpy()), "labels differ"
    return {
        "images": np.asarray(data.x_train[example]),
        "label": top["label"].to_numpy(),
        "clean_label": top["clean_label"].to_numpy(),
        "is_noisy": top["is_noisy"].to_numpy(bool),
        "self_influence": top["self_influence"].to_numpy(),
        "source_index": top["source_index"].to_numpy(),
        "row": np.asarray(row),
    }


def check_section(check_runs: list[dict[str, Any]], table: pd.DataFrame) -> list[str]:
    """A markdown section listing the variant runs of `experiment=table1_check` beside the
    Table 1 rows they vary (Arnoldi p̄ = 10 and TracIn [1])."""
    lines = []
    for key in ("arnoldi_10", "tracin_1"):
        line = line_of(table, key)
        if line is not None:
            run = RunMetrics.load(Path(line["run_dir"]) / "metrics.json").to_dict()
            lines.append(_check_line(f"Table 1 row ({key})", run))
    for run in check_runs:
        lines.append(_check_line("variant", run))
    if not lines:
        return []
    frame = pd.DataFrame(lines)
    return [
        "",
        "## Investigation: variants of the rows (`make table1-check`)",
        "",
        "The Table 1 setting with one thing changed at a time: which eigenvalues Arnoldi keeps, "
        "how many Arnoldi iterations build the basis, and how long the model trains.",
        "",
        markdown_table(frame),
        "",
        *_check_findings(frame),
    ]


def _check_findings(frame: pd.DataFrame) -> list[str]:
    """Each variant against its Table 1 row and the paper: does the change move it there?"""
    paper = {r.method: r.paper for r in TABLE1_ROWS if r.key in ("arnoldi_10", "tracin_1")}
    out = []
    for method in ("arnoldi", "tracin"):
        rows = frame[frame["method"] == method]
        base = rows[rows["run"].str.startswith("Table 1")]
        if base.empty or method not in paper:
            continue
        base = base.iloc[0]
        target = paper[method]
        gap = abs(base["AP"] - target["AP"])
        for _, variant in rows[rows["run"] == "variant"].iterrows():
            changed = [
                f"{name} {fmt(variant[name])}"
                for name in ("n", "positive only", "training steps")
                if variant[name] != base[name] and not pd.isna(variant[name])
            ]
            moved = abs(variant["AP"] - target["AP"])
            verdict = "closer to" if moved < gap - 0.5 else "no closer to"
            out.append(
                f"- {method}, {', '.join(changed) or 'same settings'}: AUC {variant['AUC']:.1f}, "
                f"AP {variant['AP']:.1f} against the row's {base['AUC']:.1f}, {base['AP']:.1f}: "
                f"{verdict} the paper's {target['AUC']:.1f}, {target['AP']:.1f}."
            )
    return out


def _check_line(what: str, run: dict[str, Any]) -> dict[str, Any]:
    options = run.get("method_options") or {}
    return {
        "run": what,
        "method": run["method"],
        "p̄": options.get("pbar"),
        "n": options.get("n"),
        "positive only": options.get("positive_only"),
        "training steps": run.get("train_steps"),
        "test accuracy, %": pct(run.get("test_accuracy")),
        "AUC": pct(run["auc"]),
        "AP": pct(run["ap"]),
        "n scored": run["n_scored"],
    }
