"""The memorisation regimes (`make regimes`): how the methods rank the mislabeled examples as
training goes from a few epochs (the noisy labels not yet fitted) to many (memorised).

One run per (epochs, seed, method) of `experiment=regimes`; this module averages over seeds,
tabulates mean ± sd, draws AUC and AP against epochs, and states its findings from the numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ifscale.reports.runs import Row, config_of, fmt, mean_sd, pct

# The rows: baselines first, then the influence methods (TracIn without curvature, then the
# curvature methods). `checkpoints: k` is TracIn over all of the run's kept checkpoints.
REGIME_ROWS = (
    Row("loss", "Loss (baseline)", "loss", {}, {}),
    Row("el2n", "EL2N (baseline)", "el2n", {}, {}),
    Row("checkpoint_loss", "Loss over checkpoints (baseline)", "checkpoint_loss", {}, {}),
    Row("aum", "AUM over checkpoints (baseline)", "aum", {}, {}),
    Row("tracin_1", "TracIn [1]", "tracin", {"checkpoints": 1}, {}),
    Row("tracin_k", "TracIn [k]", "tracin", {}, {}, {"tracin_all_checkpoints": (True,)}),
    Row("trak_1", "TRAK k=100", "trak", {"models": 1}, {}),
    Row("trak_k", "TRAK k=100 [k]", "trak", {}, {}, {"trak_ensemble": (True,)}),
    Row("arnoldi_10", "Arnoldi p̄=10", "arnoldi", {"pbar": 10, "curvature": "hessian"}, {}),
    Row("arnoldi_100", "Arnoldi p̄=100", "arnoldi", {"pbar": 100, "curvature": "hessian"}, {}),
    Row("randproj_10", "RandProj p̄=10", "randproj", {"pbar": 10}, {}),
    Row("randproj_100", "RandProj p̄=100", "randproj", {"pbar": 100}, {}),
    Row("kfac", "K-FAC", "kfac", {}, {}),
    Row("ekfac", "EK-FAC", "ekfac", {}, {}),
)
CURVATURE_ROWS = ("arnoldi_10", "arnoldi_100", "randproj_10", "randproj_100", "kfac", "ekfac")
INFLUENCE_ROWS = ("tracin_1", "tracin_k", "trak_1", "trak_k", *CURVATURE_ROWS)
# The baselines that read the checkpoints TracIn [k] reads (a forward pass each).
DYNAMICS_ROWS = ("checkpoint_loss", "aum")


def _row_of(run: dict[str, Any]) -> Row | None:
    # TracIn [k] is told apart from [1] by its checkpoint count: all the run kept (> 1).
    options = run.get("method_options") or {}
    marked = {
        **run,
        "tracin_all_checkpoints": (options.get("checkpoints") or 1) > 1,
        "trak_ensemble": (options.get("models") or 1) > 1,
    }
    return next((row for row in REGIME_ROWS if row.matches(marked)), None)


def _label(key: str) -> str:
    return next(row.label for row in REGIME_ROWS if row.key == key)


def _epochs(run: dict[str, Any]) -> int:
    """The run's training epochs, from the config it ran with."""
    return int(config_of(run)["train"]["epochs"])


def regimes_runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per run: row, epochs, seed, AUC, AP (percent), the share of the mislabeled
    training examples whose given label the model predicts, and test accuracy."""
    lines = []
    for run in runs:
        row = _row_of(run)
        if row is None or run.get("auc") is None:
            continue
        lines.append(
            {
                "row": row.key,
                "Method": row.label,
                "epochs": _epochs(run),
                "seed": run["seed"],
                "AUC": pct(run["auc"]),
                "AP": pct(run["ap"]),
                "noisy fitted": pct(run.get("noisy_labels_fitted")),
                "test accuracy": pct(run.get("test_accuracy")),
                "run_dir": run["run_dir"],
            }
        )
    return pd.DataFrame(lines)


def regimes_frame(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (row, epochs); rows in `REGIME_ROWS`'s
    order, then by epochs."""
    stats = (
        per_run.groupby(["row", "epochs"])
        .agg(
            Method=("Method", "first"),
            seeds=("seed", "nunique"),
            auc_mean=("AUC", "mean"),
            auc_sd=("AUC", "std"),
            ap_mean=("AP", "mean"),
            ap_sd=("AP", "std"),
            fitted_mean=("noisy fitted", "mean"),
            fitted_sd=("noisy fitted", "std"),
            accuracy_mean=("test accuracy", "mean"),
        )
        .reset_index()
    )
    order = {row.key: i for i, row in enumerate(REGIME_ROWS)}
    stats["order"] = stats["row"].map(order)
    return stats.sort_values(["order", "epochs"]).drop(columns="order").reset_index(drop=True)


def regimes_table(stats: pd.DataFrame, what: str) -> pd.DataFrame:
    """Method x epochs, each cell mean ± sd of `what` ("auc" or "ap") over seeds."""
    epochs = sorted(stats["epochs"].unique())
    lines = []
    for key in dict.fromkeys(stats["row"]):
        part = stats[stats["row"] == key].set_index("epochs")
        line = {"Method": part["Method"].iloc[0]}
        for e in epochs:
            line[f"E={e}"] = (
                mean_sd(part.at[e, f"{what}_mean"], part.at[e, f"{what}_sd"])
                if e in part.index
                else "—"
            )
        lines.append(line)
    return pd.DataFrame(lines)


def training_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Per epochs: the mislabeled examples fitted and test accuracy (mean ± sd over seeds)."""
    first = stats.groupby("epochs").first().reset_index()
    return pd.DataFrame(
        {
            "epochs": first["epochs"],
            "noisy labels fitted, %": [
                mean_sd(m, s) for m, s in zip(first["fitted_mean"], first["fitted_sd"], strict=True)
            ],
            "test accuracy, %": [fmt(v) for v in first["accuracy_mean"]],
        }
    )


def regimes_findings(stats: pd.DataFrame) -> list[str]:
    """The findings, computed: which influence methods beat the loss baseline at each E
    (mean AP, then mean AUC), and at which E each does; whether curvature beats TracIn [1]
    anywhere; the best method at each E; the peak memorisation."""

    def at(key: str, e: int) -> pd.Series | None:
        hit = stats[(stats["row"] == key) & (stats["epochs"] == e)]
        return None if hit.empty else hit.iloc[0]

    def better(a: pd.Series, b: pd.Series) -> bool:
        return (a["ap_mean"], a["auc_mean"]) > (b["ap_mean"], b["auc_mean"])

    epochs = sorted(stats["epochs"].unique())
    lines = []
    for key in INFLUENCE_ROWS:
        label = _label(key)
        pairs = [(e, at(key, e), at("loss", e)) for e in epochs]
        pairs = [(e, a, b) for e, a, b in pairs if a is not None and b is not None]
        if not pairs:
            continue
        wins = [e for e, a, b in pairs if better(a, b)]
        if not wins:
            text = "never beats the loss baseline"
        elif len(wins) == len(pairs):
            text = "beats the loss baseline at every E"
        else:
            text = f"beats the loss baseline at E = {', '.join(map(str, wins))} only"
        # A win by less than the seeds' spread is not a finding.
        close = [
            e
            for e, a, b in pairs
            if e in wins and a["ap_mean"] - b["ap_mean"] < np.nanmax([a["ap_sd"], b["ap_sd"], 0])
        ]
        if close:
            text += f"; by less than one sd of AP at E = {', '.join(map(str, close))}"
        lines.append(f"- {label} {text} (mean AP, then AUC, over seeds; {len(pairs)} E measured).")
    # The one-line verdict the README shows: which methods beat the loss, epoch by epoch.
    by_epoch = []
    for e in epochs:
        loss = at("loss", e)
        measured = [(k, at(k, e)) for k in INFLUENCE_ROWS if at(k, e) is not None]
        if loss is None or not measured:
            continue
        winners = [_label(k) for k, line in measured if better(line, loss)]
        by_epoch.append(
            f"E = {e}: "
            + (f"{len(winners)} of {len(measured)} ({', '.join(winners)})" if winners else "none")
        )
    if by_epoch:
        lines.insert(
            0,
            "- Influence against the per-example loss (mean AP, then AUC, over seeds), the "
            f"influence methods that beat it by training epochs: {'; '.join(by_epoch)}.",
        )
    curvature = [
        (key, e)
        for key in CURVATURE_ROWS
        for e in epochs
        if at(key, e) is not None
        and at("tracin_1", e) is not None
        and better(at(key, e), at("tracin_1", e))
    ]
    if curvature:
        where = sorted({e for _, e in curvature})
        lines.append(
            "- Curvature (Arnoldi/RandProj) beats TracIn [1] at E = "
            f"{', '.join(map(str, where))} ({len(curvature)} method-epoch pairs)."
        )
    elif any(at("tracin_1", e) is not None for e in epochs):
        lines.append("- Curvature (Arnoldi/RandProj) beats TracIn [1] at no E measured.")
    # TracIn [k] against the baselines that read the same checkpoints at a forward pass each.
    for e in epochs:
        tracin = at("tracin_k", e)
        rivals = [(k, at(k, e)) for k in DYNAMICS_ROWS if at(k, e) is not None]
        if tracin is None or not rivals or e != max(epochs):
            continue
        beaten = [_label(k) for k, line in rivals if better(line, tracin)]
        scores = ", ".join(
            f"{_label(k)} {line['ap_mean']:.1f}" for k, line in [("tracin_k", tracin), *rivals]
        )
        lines.append(
            f"- At E = {e} (the longest training measured), TracIn [k]'s advantage "
            + (
                f"does not survive the baselines over the same checkpoints: {', '.join(beaten)} "
                + ("matches or beats it" if len(beaten) == 1 else "match or beat it")
                if beaten
                else "survives the baselines over the same checkpoints"
            )
            + f" (mean AP: {scores})."
        )
    # The best method at each E, baselines included: where the ranking turns over.
    best = []
    for e in epochs:
        here = stats[stats["epochs"] == e]
        if len(here):
            top = here.sort_values(["ap_mean", "auc_mean"], ascending=False).iloc[0]
            best.append(f"E = {e}: {top['Method']} ({top['ap_mean']:.1f})")
    if best:
        lines.append(f"- The best method by mean AP at each E: {'; '.join(best)}.")
    memorised = stats.groupby("epochs")["fitted_mean"].first()
    if memorised.notna().any():
        top = memorised.idxmax()
        lines.append(
            f"- Memorisation: at E = {top} the model predicts the given (wrong) label of "
            f"{memorised[top]:.1f}% of the mislabeled training examples (mean over seeds)."
        )
    return lines


def plot_regimes(stats: pd.DataFrame, path: str | Path, setting: str) -> None:
    """AUC and AP against epochs per method (error bars: sd over seeds), with the share of
    mislabeled examples fitted and test accuracy on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = sorted(stats["epochs"].unique())
    if len(epochs) == 1:  # one training length (a study of its own): bars per method
        _plot_one_length(stats, path, setting, epochs[0])
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharex=True)
    first = stats.groupby("epochs").first().reset_index()
    # tab10 without its grey (index 7), which the memorisation lines use, then tab20's pale
    # half for more rows.
    colors = iter(
        [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
        + list(plt.get_cmap("tab20").colors[1::2])
    )
    styles = {  # the baselines in black, dashed; the influence methods in colour
        "loss": {"color": "black", "linestyle": "--", "marker": "s"},
        "el2n": {"color": "black", "linestyle": ":", "marker": "s"},
        "checkpoint_loss": {"color": "black", "linestyle": "-.", "marker": "^"},
        "aum": {"color": "dimgrey", "linestyle": "-.", "marker": "v"},
    }
    for key in dict.fromkeys(stats["row"]):
        if key not in styles:
            styles[key] = {"color": next(colors), "linestyle": "-", "marker": "o"}
    for ax, what, name in ((axes[0], "auc", "AUC, %"), (axes[1], "ap", "AP, %")):
        for key in dict.fromkeys(stats["row"]):
            part = stats[stats["row"] == key]
            ax.errorbar(
                part["epochs"],
                part[f"{what}_mean"],
                yerr=part[f"{what}_sd"].fillna(0),
                label=part["Method"].iloc[0],
                capsize=3,
                markersize=4,
                **styles[key],
            )
        ax.set_xscale("log")
        ax.set_xticks(epochs, [str(e) for e in epochs])
        ax.minorticks_off()
        ax.set_xlabel("training epochs (log scale)")
        ax.set_ylabel(f"finding the mislabeled examples: {name}")
        twin = ax.twinx()
        twin.plot(first["epochs"], first["fitted_mean"], color="grey", linewidth=4, alpha=0.35)
        twin.plot(first["epochs"], first["accuracy_mean"], color="grey", linestyle=":")
        twin.set_ylim(0, 100)
        twin.set_ylabel("grey: mislabeled fitted % (wide), test accuracy % (dotted)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.suptitle(f"Memorisation regimes: {setting}", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_one_length(stats: pd.DataFrame, path: str | Path, setting: str, epochs: int) -> None:
    """AP and AUC per method (bars, error bars: sd over seeds) at one training length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = stats.sort_values("ap_mean")
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.4 * len(order) + 1.5), sharey=True)
    colors = ["dimgrey" if "baseline" in m else "C0" for m in order["Method"]]
    for ax, what, name in ((axes[0], "ap", "AP, %"), (axes[1], "auc", "AUC, %")):
        ax.barh(
            order["Method"],
            order[f"{what}_mean"],
            xerr=order[f"{what}_sd"].fillna(0),
            color=colors,
            capsize=3,
        )
        ax.set_xlabel(f"finding the mislabeled examples: {name} (grey: baselines)")
        ax.set_xlim(0, 100)
    fig.suptitle(f"E = {epochs}: {setting}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
