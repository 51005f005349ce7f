"""Figures 1-2 (cnn_small on the 10% MNIST subset): AUC/AP against p̄, and the top
eigenvalues of each projected method."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ifscale.reports.runs import baseline_verdict, pct

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
    if run["method"] == "loss":
        return "Loss (baseline)"
    return run["method"]


def figure1_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """AUC/AP against p̄ for the projected methods, plus the baselines (p̄ empty)."""
    lines = []
    for run in runs:
        if run.get("method") in FIGURE1_METHODS and run.get("pbar") is not None:
            label = run["method"]
        elif run.get("method") in ("lissa", "tracin", "loss"):
            label = _baseline_label(run)
        else:
            continue
        lines.append(
            {
                "method": run["method"],
                "label": label,
                "pbar": run.get("pbar"),
                "auc": pct(run["auc"]),
                "ap": pct(run["ap"]),
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
            if line["method"] == "loss":  # the bar every influence method must clear
                ax.axhline(line[metric], color="tab:red", ls="-", lw=1.2, label=line["label"])
                continue
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


def figure1_baseline_verdict(frame: pd.DataFrame) -> list[str]:
    """The loss baseline line of Figure 1: does any point (a projected method at some p̄, or
    a gradient row) beat the per-example loss (AP, then AUC; every point scores every
    example)? Empty without a loss run."""

    def key(line) -> str:
        if line["method"] == "loss":
            return "loss"
        return f"{line['label']}_{int(line['pbar'])}" if pd.notna(line["pbar"]) else line["label"]

    def label(line) -> str:
        name = _STYLE.get(line["Method"], {}).get("label", line["Method"])
        return name + ("" if pd.isna(line["p̄"]) else f" p̄={int(line['p̄'])}")

    table = pd.DataFrame(
        {
            "row": [key(line) for _, line in frame.iterrows()],
            "Method": frame["label"],
            "p̄": frame["pbar"],
            "AUC": frame["auc"],
            "AP": frame["ap"],
            "n scored": frame["n_scored"],
        }
    )
    return baseline_verdict(table, label)
