"""Tables and figures from run folders (`metrics.json`, `scores.csv`, `config.json`).

Used by `experiments/report.py` and the inspection notebook; free of Hydra. A run folder is
what `ifscale.pipeline.run` writes.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

# ------------------------------------------------------------------------------ runs


def load_runs(folder: str | Path) -> list[dict[str, Any]]:
    """The finished runs under `folder` (its subfolders holding a `metrics.json`), each
    as its metrics with `run_dir` added, in folder order."""
    runs = []
    # Job folders in numeric order (Hydra names them 0, 1, ..., 10): later jobs win ties.
    paths = sorted(
        Path(folder).glob("**/metrics.json"),
        key=lambda p: [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.parent.parts],
    )
    for path in paths:
        metrics = json.loads(path.read_text())
        metrics["run_dir"] = str(path.parent)
        runs.append(metrics)
    return runs


def scores_of(run: dict[str, Any]) -> pd.DataFrame:
    # keep_default_na=False: an empty (or "NA") sentence stays a string, not a missing value.
    return pd.read_csv(Path(run["run_dir"]) / "scores.csv", keep_default_na=False)


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
        options = run.get("method_options") or {}
        return (
            run.get("method") == self.method
            and all(options.get(k) == v for k, v in self.options.items())
            and all(run.get(k) in accepted for k, accepted in self.fields.items())
        )


def _paper(pbar, t, auc, ap):
    return {"p̄": pbar, "T, s": t, "AUC": auc, "AP": ap}


# The poster's Table 1 (cnn_large, 10% mislabeled MNIST); T in seconds, AUC/AP in percent.
TABLE1_ROWS: tuple[Row, ...] = (
    Row("lissa_r10", "LISSA, r = 10", "lissa", {"r": 10}, _paper(100, 4900, 98.9, 95.0)),
    Row("lissa_r100", "LISSA, r = 100", "lissa", {"r": 100}, _paper(100, 32300, 98.8, 94.8)),
    Row("tracin_1", "TracIn [1]", "tracin", {"checkpoints": 1}, _paper(None, 5, 98.7, 94.0)),
    Row("tracin_100", "TracIn [100]", "tracin", {"checkpoints": 100}, _paper(None, 42, 99.7, 98.7)),
    Row("randproj_10", "RandProj", "randproj", {"pbar": 10}, _paper(10, 0.2, 97.2, 87.7)),
    Row("randproj_100", "RandProj", "randproj", {"pbar": 100}, _paper(100, 1.9, 98.6, 93.9)),
    Row("arnoldi_10", "Arnoldi", "arnoldi", {"pbar": 10}, _paper(10, 0.2, 95.0, 84.0)),
    Row("arnoldi_100", "Arnoldi", "arnoldi", {"pbar": 100}, _paper(100, 1.9, 98.2, 92.9)),
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


def _table2_row(layers: str, method: str, pbar: int, auc: float, ap: float) -> Row:
    label = {"arnoldi": "Arnoldi", "randproj": "RandProj"}[method]
    accepted = ("all", None) if layers == "all" else (layers,)
    return Row(
        f"{layers}_{method}_{pbar}",
        label,
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
LAYER_LABELS = {"all": "all layers", "last3_decoder": "last 3 decoder layers"}


def _pct(value: float | None) -> float:
    return float("nan") if value is None else 100.0 * value


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
                "AUC": _pct(run["auc"]),
                "AP": _pct(run["ap"]),
                "paper p̄": row.paper["p̄"],
                "paper T, s": row.paper["T, s"],
                "paper AUC": row.paper["AUC"],
                "paper AP": row.paper["AP"],
                "n scored": n,
                "n noisy scored": run["n_noisy_scored"],
                "AUC, subset": _pct(run.get("auc_compare")),
                "AP, subset": _pct(run.get("ap_compare")),
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


def _fmt(value: Any) -> str:
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


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (no extra dependency)."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([head, rule, *body])


def _line(frame: pd.DataFrame, key: str) -> pd.Series | None:
    hit = frame[frame["row"] == key]
    return None if hit.empty else hit.iloc[0]


def table1_notes(table: pd.DataFrame, runs: list[dict[str, Any]]) -> list[str]:
    """What the columns mean, the settings, and the paper's relations as measured here."""
    matched = match_rows(TABLE1_ROWS, runs)
    any_run = next(iter(matched.values()), {})
    devices = sorted({str(d) for d in table["device"].dropna()})
    n_subset = table["n subset"].dropna().max() if len(table) else None
    subset_note = (
        f"subset of {_fmt(n_subset)} training examples (10% of them mislabeled), the set the "
        "slow rows (LISSA, TracIn [100]) score; the only column that compares all rows on "
        "identical examples."
        if n_subset is not None and np.isfinite(n_subset)
        else "subset: not used in this table, where every row scored every example "
        "(`make table1 FULL=1`)."
    )
    notes = [
        "## How to read it",
        "",
        f"- Hardware: {', '.join(devices) or 'unknown'}. Model trained once "
        f"({_fmt(any_run.get('train_steps'))} steps, test accuracy "
        f"{_pct(any_run.get('test_accuracy')):.2f}%) on {_fmt(any_run.get('n_train'))} MNIST "
        f"training images of which {_fmt((any_run.get('noise') or {}).get('n_noisy'))} were "
        "relabeled to a different class (uniformly among the other classes, seeded).",
        "- AUC and AP (percent): finding the mislabeled examples by ranking the scored "
        "training examples on self-influence (scikit-learn `roc_auc_score`, "
        "`average_precision_score`), over the `n scored` examples of each row.",
        "- **T, s** is the scoring time of that row: self-influence of its `n scored` "
        "examples with compilation excluded (the first, compiling batch is not timed; T is "
        "all n examples at the rate of the timed batches), clock stopped after "
        "`block_until_ready`. The one-time fit (Arnoldi's n HVPs, RandProj's p̄ HVPs) is the "
        "`fit, s` column; it is cached, and both Arnoldi rows share one fit. Compare costs "
        "across rows with `examples/s` (in `table1.csv`, also `ms/example`): rows score "
        "different numbers of examples.",
        "- **AUC, subset / AP, subset**: every row evaluated on the same seeded, stratified "
        + subset_note,
        "- **p̄**: eigenpairs kept (Arnoldi) or projection dimension (RandProj). LISSA has "
        "none; the paper lists p̄ = 100 for its LISSA rows without defining it there, which we "
        "read as the p̄ of the rows LISSA is compared with, so our LISSA rows show —.",
    ]
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
        line = _line(table, key)
        if line is None:
            continue
        d_auc, d_ap = line["AUC"] - line["paper AUC"], line["AP"] - line["paper AP"]
        inside = abs(d_auc) <= FIDELITY["AUC"] and abs(d_ap) <= FIDELITY["AP"]
        where = "all scored examples" if line["n scored"] > (line["n subset"] or 0) else "subset"
        notes.append(
            f"- {_label(line)}: AUC {d_auc:+.1f}, AP {d_ap:+.1f} points from the paper "
            f"({where}): "
            + ("within" if inside else "**outside**")
            + f" the ±{FIDELITY['AUC']:g} / ±{FIDELITY['AP']:g} band."
        )
    return notes


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _label(line: pd.Series) -> str:
    return line["Method"] + ("" if pd.isna(line["p̄"]) else f" p̄={int(line['p̄'])}")


def _relations(table: pd.DataFrame) -> list[str]:
    out = []
    arn100, arn10 = _line(table, "arnoldi_100"), _line(table, "arnoldi_10")
    rp100, rp10 = _line(table, "randproj_100"), _line(table, "randproj_10")
    tr1, tr100 = _line(table, "tracin_1"), _line(table, "tracin_100")
    for key, paper_ratio in (("lissa_r10", 4900 / 1.9), ("lissa_r100", 32300 / 1.9)):
        lissa = _line(table, key)
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
    curvature = [
        _line(table, row.key)
        for row in TABLE1_ROWS
        if row.method in ("arnoldi", "randproj", "lissa")
    ]
    curvature = [c for c in curvature if c is not None and np.isfinite(c[auc])]
    if tr1 is not None and curvature:
        best = max(curvature, key=lambda c: c[ap])
        label = _label(best)
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
    from ifscale.config import RunConfig
    from ifscale.pipeline import load_data

    matched = match_rows(rows, runs)
    row = next((key for key in prefer if key in matched), None)
    if row is None:
        return None
    run = matched[row]
    scores = scores_of(run).sort_values("self_influence", ascending=False, kind="stable")
    top = scores.head(count)
    cfg = RunConfig.from_dict(json.loads((Path(run["run_dir"]) / "config.json").read_text()))
    data = load_data(cfg)
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


# --------------------------------------------------------------------------- figures

FIGURE1_METHODS = ("exact", "arnoldi", "randproj")
# Exact is drawn first, large and hollow, so that Arnoldi on top of it stays visible where
# the two coincide (they do once Arnoldi's top Ritz pairs have converged).
_STYLE = {
    "exact": dict(
        color="black",
        marker="o",
        ms=10,
        mfc="none",
        lw=2.5,
        alpha=0.45,
        zorder=1,
        label="Exact (dense Hessian)",
    ),
    "arnoldi": dict(color="tab:blue", marker="s", ms=5, zorder=3, label="Arnoldi"),
    "randproj": dict(color="tab:orange", marker="^", ms=6, zorder=2, label="RandProj"),
}


def _baseline_label(run: dict[str, Any]) -> str:
    o = run.get("method_options", {})
    if run["method"] == "lissa":
        return f"LISSA r={o.get('r')}"
    if run["method"] == "tracin":
        return f"TracIn [{o.get('checkpoints')}]"
    return run["method"]


def figure1_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """AUC/AP against p̄ for the projected methods, plus the baselines (p̄ empty)."""
    lines = []
    for run in runs:
        if run.get("method") in FIGURE1_METHODS and run.get("pbar") is not None:
            label = run["method"]
        elif run.get("method") in ("lissa", "tracin"):
            label = _baseline_label(run)
        else:
            continue
        lines.append(
            {
                "method": run["method"],
                "label": label,
                "pbar": run.get("pbar"),
                "auc": _pct(run["auc"]),
                "ap": _pct(run["ap"]),
                "n_scored": run["n_scored"],
                "t_fit_s": run["t_fit_s"],
                "examples_per_s": run["examples_per_s"],
                "run_dir": run["run_dir"],
            }
        )
    frame = pd.DataFrame(lines)
    # Newest run wins for a repeated (label, p̄).
    frame = frame.drop_duplicates(["label", "pbar"], keep="last")
    return frame.sort_values(["pbar", "label"], na_position="last").reset_index(drop=True)


def figure2_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """The curvature values of the largest-p̄ run of each projected method, by rank."""
    lines = []
    for method in FIGURE1_METHODS:
        candidates = [r for r in runs if r.get("method") == method and r.get("eigenvalues")]
        if not candidates:
            continue
        run = max(candidates, key=lambda r: len(r["eigenvalues"]))
        for rank, value in enumerate(run["eigenvalues"], start=1):
            lines.append({"method": method, "rank": rank, "eigenvalue": value})
    return pd.DataFrame(lines)


def _setting(runs: list[dict[str, Any]]) -> str:
    run = next((r for r in runs if r.get("method") in FIGURE1_METHODS), runs[0])
    arnoldi = next((r for r in runs if r.get("method") == "arnoldi"), None)
    fit = (run.get("fit_batch_size") or 0) * (run.get("fit_batches") or 0)
    extra = f"; H over {fit:,} examples" if fit else ""
    if arnoldi:
        extra += f"; Arnoldi n = {arnoldi['method_options'].get('n')}"
    text = (
        f"{run['model']} ({run['n_params']:,} parameters), {run['n_train']:,} MNIST training "
        f"images, {run['noise']['n_noisy']:,} mislabeled{extra}; {run['device']}"
    )
    return textwrap.fill(text, 110)


def plot_figure1(frame: pd.DataFrame, runs: list[dict[str, Any]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    baselines = frame[frame["pbar"].isna()]
    colors = plt.cm.Greys(np.linspace(0.45, 0.8, max(len(baselines), 1)))
    for ax, metric, name in ((axes[0], "auc", "AUC"), (axes[1], "ap", "AP")):
        for method in FIGURE1_METHODS:
            part = frame[frame["method"] == method].dropna(subset=["pbar"]).sort_values("pbar")
            if len(part):
                ax.plot(part["pbar"], part[metric], **_STYLE[method])
        styles = ("--", ":", "-.")
        for i, (_, line) in enumerate(baselines.iterrows()):
            ax.axhline(line[metric], color=colors[i], ls=styles[i % 3], lw=1.4, label=line["label"])
        ax.set_xscale("log")
        ax.set_xlabel("p̄ (eigenpairs kept / projection dimension)")
        ax.set_ylabel(f"{name} of finding mislabeled examples, %")
        ax.set_title(f"{name} against p̄")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Figure 1: self-influence on corrupted MNIST, small model\n{_setting(runs)}", fontsize=10
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_figure2(frame: pd.DataFrame, runs: list[dict[str, Any]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.2), constrained_layout=True)
    negative_shown = False
    for method in FIGURE1_METHODS:
        part = frame[frame["method"] == method]
        if part.empty:
            continue
        style = {k: v for k, v in _STYLE[method].items() if k not in ("lw",)}
        values = part["eigenvalue"].to_numpy()
        ax.plot(part["rank"], np.abs(values), ls="none", **style)
        negative = values < 0
        if negative.any():
            ax.plot(
                part["rank"][negative],
                -values[negative],
                ls="none",
                marker="x",
                ms=4,
                color="crimson",
                zorder=4,
                label=None if negative_shown else "λ < 0 (|λ| shown)",
            )
            negative_shown = True
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("rank (by |λ|)")
    ax.set_ylabel("|eigenvalue|")
    fig.suptitle(
        "Figure 2: the top eigenvalues of H: exact, Arnoldi's Ritz values, and the "
        "eigenvalues of RandProj's H̃ = G H Gᵀ\n" + _setting(runs),
        fontsize=10,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ investigations


def check_section(check_runs: list[dict[str, Any]], table: pd.DataFrame) -> list[str]:
    """A markdown section listing the variant runs of `experiment=table1_check` beside the
    Table 1 rows they vary (Arnoldi p̄ = 10 and TracIn [1])."""
    lines = []
    for key in ("arnoldi_10", "tracin_1"):
        line = _line(table, key)
        if line is not None:
            run = json.loads((Path(line["run_dir"]) / "metrics.json").read_text())
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
                f"{name} {_fmt(variant[name])}"
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
        "test accuracy, %": _pct(run.get("test_accuracy")),
        "AUC": _pct(run["auc"]),
        "AP": _pct(run["ap"]),
        "n scored": run["n_scored"],
    }


# ------------------------------------------------------------------------------ table 2


def table2_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per Table 2 row with a finished run: ours beside the paper's values."""
    lines = []
    for row, run in rows_with_runs(TABLE2_ROWS, runs):
        layers = row.fields["layers"][0]
        lines.append(
            {
                "row": row.key,
                "Layers": LAYER_LABELS[layers],
                "Method": row.label,
                "p̄": run.get("pbar"),
                "AUC": _pct(run["auc"]),
                "AP": _pct(run["ap"]),
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
                "test accuracy": _pct(run.get("test_accuracy")),
                "dataset": run.get("dataset"),
                "model": run.get("model"),
                "device": run.get("device"),
                "git commit": run.get("git_commit"),
                "run_dir": run["run_dir"],
            }
        )
    return pd.DataFrame(lines)


def _compare(table: pd.DataFrame, better: str, worse: str) -> tuple[float, float] | None:
    a, b = _line(table, better), _line(table, worse)
    if a is None or b is None:
        return None
    return a["AUC"] - b["AUC"], a["AP"] - b["AP"]


def _verdict(wins: list[bool], claim: str, unit: str) -> str:
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


def table2_findings(table: pd.DataFrame) -> list[str]:
    """The paper's two findings, checked on every pair of rows that has both runs:
    Arnoldi beats RandProj at equal p̄ in AP; all layers beat the last three decoder
    layers."""
    out = []
    arnoldi_wins = []
    for layers in LAYER_LABELS:
        for pbar in (10, 20):
            diff = _compare(table, f"{layers}_arnoldi_{pbar}", f"{layers}_randproj_{pbar}")
            if diff is None:
                continue
            arnoldi_wins.append(diff[1] > 0)
            out.append(
                f"- Arnoldi against RandProj, {LAYER_LABELS[layers]}, p̄={pbar}: AUC "
                f"{diff[0]:+.1f}, AP {diff[1]:+.1f} points."
            )
    layer_wins = []
    for method in ("arnoldi", "randproj"):
        for pbar in (10, 20):
            diff = _compare(table, f"all_{method}_{pbar}", f"last3_decoder_{method}_{pbar}")
            if diff is None:
                continue
            layer_wins.append(diff[1] > 0)
            out.append(
                f"- All layers against the last 3 decoder layers, "
                f"{'Arnoldi' if method == 'arnoldi' else 'RandProj'} p̄={pbar}: AUC "
                f"{diff[0]:+.1f}, AP {diff[1]:+.1f} points."
            )

    unit = "comparisons, AP"
    return [
        _verdict(arnoldi_wins, "Finding 1, Arnoldi beats RandProj at equal p̄", unit),
        _verdict(layer_wins, "Finding 2, all layers beat the last three decoder layers", unit),
        "",
        *out,
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
        f"- Corpus: **{run.get('dataset')}**, {_fmt(run.get('n_train'))} training pairs "
        f"({_fmt(stats.get('train_pairs_dropped_too_long'))} of "
        f"{_fmt(stats.get('train_pairs_read'))} dropped as longer than the token limit), of "
        f"which {_fmt(noise.get('n_noisy'))} ({100 * (noise.get('rate') or 0):.0f}%) carry the "
        "reference of another permuted pair (a seeded derangement); "
        f"{_fmt(run.get('n_test'))} test pairs for BLEU.",
        f"- Model: {run.get('model')}, {_fmt(run.get('n_params'))} parameters, trained once "
        f"({_fmt(run.get('train_steps'))} steps, {_fmt(run.get('train_time_s'))} s) on the "
        f"noisy pairs: test BLEU {_fmt(run.get('bleu'))} (sacreBLEU, greedy decoding), "
        f"next-token accuracy {_pct(run.get('test_accuracy')):.1f}% on the test references.",
        "- AUC and AP (percent): finding the permuted pairs by ranking the scored pairs on "
        "self-influence, the loss of a pair being its summed token cross-entropy. Every row "
        + (
            f"scores all {_fmt(run.get('n_scored'))} training pairs "
            if run.get("n_scored") == run.get("n_train")
            else f"scores the same seeded subset of {_fmt(run.get('n_scored'))} training pairs "
        )
        + f"({_fmt(run.get('n_noisy_scored'))} permuted).",
        f"- H is the Hessian of the mean loss over {_fmt(run.get('fit_batch_size'))} × "
        f"{_fmt(run.get('fit_batches'))} seeded training pairs; Arnoldi runs n = "
        f"{_fmt(n_arnoldi)} iterations once per layer set (both p̄ share the fit); RandProj "
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
                "AUC": _pct(run["auc"]),
                "AP": _pct(run["ap"]),
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


# ------------------------------------------------------------------------------ table 3

# The poster's Table 3 (ParaCrawl, 100M pairs): % selected, BLEU@10k, BLEU@200k steps.
TABLE3_PAPER = {
    "none": ("None", 100, 9.9, 17.8),
    "precleaning": ("Pre-cleaning", 14, 11.7, 22.6),
    "randproj_1": ("RandProj", 1, 7.7, 8.7),
    "arnoldi_1": ("Arnoldi", 1, 17.8, 19.6),
    "randproj_5": ("RandProj", 5, 18.7, 27.9),
    "arnoldi_5": ("Arnoldi", 5, 24.0, 30.3),
    "randproj_10": ("RandProj", 10, 21.3, 28.6),
    "arnoldi_10": ("Arnoldi", 10, 25.0, 30.8),
}
# Our shares (of a 15,000-pair corpus with 30% noise) beside the paper's (of 100M pairs).
TABLE3_SHARE_MAP = {25: 5, 50: 10}
NOISE_KIND_ORDER = (
    "clean",
    "misaligned",
    "untranslated",
    "wrong_language",
    "truncated",
    "garbage",
    "length_ratio",
)


def _table3_key(run: dict[str, Any]) -> tuple[str, str, int | None]:
    """(row key, label, our share in percent) of a Table 3 run."""
    select = run["select"]
    share = round(100 * select["fraction"])
    if select["method"] == "all":
        return "none", "None", None
    if select["method"] == "precleaning":
        return "precleaning", "Pre-cleaning", None
    if select["method"] == "random":
        return f"random_{share}", "Random", share
    label = {"arnoldi": "Arnoldi", "randproj": "RandProj"}[run["method"]]
    if select.get("after_precleaning"):
        return f"{run['method']}_precleaned_{share}", f"{label} after pre-cleaning", share
    return f"{run['method']}_{share}", label, share


# How an influence selection was made besides its row: the pair loss whose self-influence
# was scored, and whether the lowest scores were taken per target-length decile.
TABLE3_BASE_VARIANT = "sum"


def _table3_variant(run: dict[str, Any]) -> str:
    variant = run.get("sequence_loss", "sum")
    if (run.get("select") or {}).get("by_length"):
        variant += ", by length"
    return variant


def table3_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per selection (the newest run of each; influence rows with the summed pair
    loss and overall lowest scores): BLEU after both budgets, what the selection kept of
    each noise kind, and the paper's row at the matching share."""
    newest = {}
    for run in runs:
        selection = (run.get("select") or {}).get("method")
        if selection and _table3_variant(run) == TABLE3_BASE_VARIANT:
            newest[_table3_key(run)[0]] = run
    order = ["none", "precleaning"]
    lines = []
    for key, run in sorted(
        newest.items(),
        key=lambda kv: (
            order.index(kv[0]) if kv[0] in order else 2,
            _table3_key(kv[1])[2] or 0,
            kv[0],
        ),
    ):
        _, label, share = _table3_key(run)
        paper_key = key if key in ("none", "precleaning") else None
        method = key.split("_")[0]
        if share in TABLE3_SHARE_MAP and method in ("arnoldi", "randproj") and "pre" not in key:
            paper_key = f"{method}_{TABLE3_SHARE_MAP[share]}"
        paper = TABLE3_PAPER.get(paper_key)
        kept = run.get("kept_percent_by_kind") or {}
        lines.append(
            {
                "row": key,
                "Method": label,
                "% selected": run["selected_percent"],
                "BLEU short": run["bleu_short"],
                "BLEU long": run["bleu_long"],
                "paper % selected": paper[1] if paper else None,
                "paper BLEU@10k": paper[2] if paper else None,
                "paper BLEU@200k": paper[3] if paper else None,
                **{f"kept % {k}": kept.get(k) for k in NOISE_KIND_ORDER},
                "noise % in selection": 100.0
                - (run.get("selection_percent_by_kind") or {}).get("clean", 100.0),
                "n selected": run["n_selected"],
                "budget short": run["budget_short"],
                "budget long": run["budget_long"],
                "AUC (noisy)": _pct(run.get("auc")),
                "AP (noisy)": _pct(run.get("ap")),
                "select, s": run.get("t_select_s"),
                "train, s": run.get("selected_train_time_s"),
                "dataset": run.get("dataset"),
                "device": run.get("device"),
                "git commit": run.get("git_commit"),
                "run_dir": run["run_dir"],
            }
        )
    return pd.DataFrame(lines)


def table3_findings(table: pd.DataFrame) -> list[str]:
    """The paper's findings: Arnoldi's selection beats RandProj's at equal share, and beats
    no cleaning (BLEU after the long budget; the short one in brackets)."""
    if table.empty:
        return []
    long_col, short_col = "BLEU long", "BLEU short"
    line = {r["row"]: r for _, r in table.iterrows()}
    out = []
    wins_rp, wins_none = [], []
    for share in sorted({int(k.split("_")[-1]) for k in line if k.startswith("arnoldi_")}):
        arnoldi = line.get(f"arnoldi_{share}")
        for other, wins, name in (
            (line.get(f"randproj_{share}"), wins_rp, f"RandProj {share}%"),
            (line.get("none"), wins_none, "no cleaning"),
            (line.get(f"random_{share}"), None, f"random {share}%"),
        ):
            if arnoldi is None or other is None:
                continue
            d_long = arnoldi[long_col] - other[long_col]
            d_short = arnoldi[short_col] - other[short_col]
            if wins is not None:
                wins.append(d_long > 0)
            out.append(
                f"- Arnoldi {share}% against {name}: {long_col} {d_long:+.1f} "
                f"({short_col} {d_short:+.1f})."
            )

    return [
        _verdict(
            wins_rp, "Arnoldi's selection beats RandProj's at equal share", f"shares, {long_col}"
        ),
        _verdict(wins_none, "Arnoldi's selection beats no cleaning", f"shares, {long_col}"),
        "",
        *out,
    ]


def selection_bias(run: dict[str, Any]) -> dict[str, float]:
    """What an influence selection favours besides cleanliness, from its scores.csv.

    ρ: Spearman's correlation of self-influence and target length (words) over the clean
    pairs; the share of the shortest and the longest quarter of clean pairs it kept; the
    share of pairs whose target occurs more than once among the scored ones (boilerplate)
    it kept; and per noise kind, the AUC of that kind against the clean pairs by
    self-influence (50: indistinguishable; under 50: the kind looks more typical than
    clean pairs, so keeping the lowest scores keeps it)."""
    scores = scores_of(run)
    clean = scores[scores["noise_kind"] == "clean"]
    words = clean["target"].str.split().str.len()
    quarter = words.rank(method="first") / len(words)  # ties broken by position
    repeated = scores["target"].duplicated(keep=False)
    bias = {
        "ρ(score, length)": float(clean["self_influence"].corr(words, method="spearman")),
        "kept % shortest clean": 100.0 * float(clean["selected"][quarter <= 0.25].mean()),
        "kept % longest clean": 100.0 * float(clean["selected"][quarter > 0.75].mean()),
        "kept % repeated targets": 100.0 * float(scores["selected"][repeated].mean()),
    }
    for kind in NOISE_KIND_ORDER[1:]:
        part = scores.loc[scores["noise_kind"] == kind, "self_influence"]
        both = pd.concat([clean["self_influence"], part])
        labels = np.r_[np.zeros(len(clean)), np.ones(len(part))]
        found = len(part) and len(clean)
        bias[f"AUC % {kind}"] = 100.0 * roc_auc_score(labels, both) if found else float("nan")
    return bias


def table3_bias_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per influence selection (the newest run of each row and pair loss), with
    BLEU, what it kept of each noise kind and `selection_bias`."""
    newest = {}
    for run in runs:
        if (run.get("select") or {}).get("method") == "influence":
            newest[_table3_key(run)[0], _table3_variant(run)] = run
    lines = []
    for (key, variant), run in newest.items():
        lines.append(
            {
                "row": key,
                "Method": _table3_key(run)[1],
                "variant": variant,
                "pair loss": run.get("sequence_loss", "sum"),
                "% selected": run["selected_percent"],
                "BLEU short": run["bleu_short"],
                "BLEU long": run["bleu_long"],
                "noise % in selection": 100.0
                - (run.get("selection_percent_by_kind") or {}).get("clean", 100.0),
                **{
                    f"kept % {k}": (run.get("kept_percent_by_kind") or {}).get(k)
                    for k in NOISE_KIND_ORDER
                },
                "AUC (noisy)": _pct(run.get("auc")),
                **selection_bias(run),
                "run_dir": run["run_dir"],
            }
        )
    if not lines:
        return pd.DataFrame()
    frame = pd.DataFrame(lines)
    # The table's own rows (summed loss, overall lowest scores) first among their variants.
    frame["variant order"] = frame["variant"] != TABLE3_BASE_VARIANT
    frame = frame.sort_values(["% selected", "row", "variant order", "variant"], kind="stable")
    return frame.drop(columns="variant order").reset_index(drop=True)


def table3_bias_section(frame: pd.DataFrame, short: int, long: int) -> list[str]:
    """Why the influence selections keep what they keep, and (after `make table3-check`)
    the variants (length-normalised pair loss, length-stratified selection) beside the
    table's rows."""
    if frame.empty:
        return []
    label = frame["Method"] + " " + frame["% selected"].round().astype(int).astype(str) + "%"
    frame = frame.assign(Selection=label)
    selection = ["Selection", "variant", "BLEU short", "BLEU long", "noise % in selection"]
    selection += ["ρ(score, length)", "kept % shortest clean", "kept % longest clean"]
    selection += ["kept % repeated targets"]
    kept = ["Selection", "variant"] + [f"kept % {k}" for k in NOISE_KIND_ORDER]
    # Selections of several shares (or by length) from one pool share their scores.
    scoring = frame.rename(columns={"Method": "Scores"}).drop_duplicates(["Scores", "pair loss"])
    ranking = ["Scores", "pair loss", "AUC (noisy)"]
    ranking += [f"AUC % {k}" for k in NOISE_KIND_ORDER[1:]]
    budgets = {"BLEU short": f"BLEU@{short}", "BLEU long": f"BLEU@{long}"}
    out = [
        "## Why the influence selections keep what they keep",
        "",
        "Keeping the lowest self-influence keeps what the scoring model finds typical. Under "
        "the summed token loss a pair's gradient, hence its self-influence, tends to grow with "
        "the target's length; a target the corpus repeats (boilerplate) is learned by heart; "
        "a copied source is easy to reproduce. Variants (`make table3-check`): `mean` scores "
        "each pair's loss divided by its target tokens (`method.sequence_loss=mean`); `by "
        "length` keeps the share from each target-length decile, its lowest scores "
        "(`select.by_length=true`), so the selection has the corpus's length distribution.",
        "",
        "Selections (ρ: Spearman's correlation of self-influence and target words over the "
        "clean pairs; kept % shortest / longest clean: of the shortest and the longest quarter "
        "of clean pairs; repeated targets: pairs whose target occurs more than once among the "
        "scored pairs):",
        "",
        markdown_table(frame[selection].rename(columns=budgets)),
        "",
        "What they kept, by noise kind (percent of the pairs of that kind):",
        "",
        markdown_table(frame[kept]),
        "",
        "How self-influence ranks each noise kind against the clean pairs (AUC, %: 50 is "
        "chance; under 50 the kind scores lower than clean pairs, so a selection of the lowest "
        "scores prefers it):",
        "",
        markdown_table(scoring[ranking]),
        "",
    ]
    variants = [v for v in dict.fromkeys(frame["variant"]) if v != TABLE3_BASE_VARIANT]
    if not variants:
        return out
    line = {(r["row"], r["variant"]): r for _, r in frame.iterrows()}
    verdicts = []
    for variant in variants:
        wins = []
        for _, v in frame[frame["variant"] == variant].iterrows():
            base = line.get((v["row"], TABLE3_BASE_VARIANT))
            if base is not None:
                out.append(
                    f"- {v['Selection']}, {variant} against the table's row: BLEU long "
                    f"{v['BLEU long'] - base['BLEU long']:+.1f} (short "
                    f"{v['BLEU short'] - base['BLEU short']:+.1f}); ρ "
                    f"{base['ρ(score, length)']:.2f} → {v['ρ(score, length)']:.2f}; noise in "
                    f"the selection {base['noise % in selection']:.1f}% → "
                    f"{v['noise % in selection']:.1f}%."
                )
            rival = line.get((v["row"].replace("arnoldi", "randproj"), variant))
            if (
                v["row"].startswith("arnoldi_")
                and "precleaned" not in v["row"]
                and rival is not None
            ):
                wins.append(v["BLEU long"] > rival["BLEU long"])
        verdicts.append(
            _verdict(
                wins,
                f"With `{variant}`, Arnoldi's selection beats RandProj's at equal share",
                "shares, BLEU long",
            )
        )
    return [*out, "", *verdicts]


def table3_notes(table: pd.DataFrame, runs: list[dict[str, Any]]) -> list[str]:
    """What each selection kept of each noise kind, the setting, and the findings."""
    run = next(r for r in runs if r.get("select") and r["select"].get("method"))
    stats = run.get("data_stats") or {}
    short, long = int(table["budget short"].iloc[0]), int(table["budget long"].iloc[0])
    kinds = table[["Method", "% selected"] + [c for c in table.columns if c.startswith("kept %")]]
    return [
        "## What each selection kept, by noise kind (percent of the pairs of that kind)",
        "",
        markdown_table(kinds),
        "",
        "## How to read it",
        "",
        f"- Corpus: **{run.get('dataset')}**, {_fmt(run.get('n_train'))} training pairs "
        f"({_fmt(stats.get('train_pairs_truncated'))} cut to the token limit, none dropped), "
        f"{_fmt((run.get('noise') or {}).get('n_noisy'))} of them given crawl noise "
        "(`conf/noise/crawl.yaml`: six kinds, 5% each); BLEU (sacreBLEU, greedy decoding) on "
        f"{_fmt(run.get('n_test'))} clean test pairs.",
        f"- Scoring model: {run.get('model')} trained on the whole noisy corpus "
        f"({_fmt(run.get('train_steps'))} steps, BLEU {_fmt(run.get('bleu'))}); the "
        "self-influence of every pair under it; a selection keeps the pairs with the lowest "
        "scores (`AUC (noisy)`, `AP (noisy)` in table3.csv: how well the scores rank the "
        "noisy pairs first).",
        f"- Judging: a fresh {run.get('model')} trained on each selection; BLEU after {short} "
        f"and {long} steps (the paper's 10k and 200k, scaled to this machine).",
        "- Shares are of the whole corpus. The paper's 5% and 10% rows are shown beside our "
        + " and ".join(f"{a}%" for a in TABLE3_SHARE_MAP)
        + " rows (our corpus is 30% noise); its 1% rows have no counterpart. Random: the "
        "control at the same share.",
        f"- Hardware: {run.get('device')}.",
        "",
        "## The paper's findings, measured here",
        "",
        *table3_findings(table),
    ]
