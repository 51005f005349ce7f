"""The linear datamodeling score report (`make lds`): every method on each setting, its
LDS with a 95% interval and its cost, the published values beside ours, the LDS against
p̄ on logistic regression, TRAK's LDS against its ensemble's size M and its projection's k,
an LDS-against-compute figure and computed findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ifscale.reports.runs import fmt

# The settings, in the report's order: model -> its name in the tables.
SETTINGS = {"logreg": "Logistic regression", "mlp": "MLP 784-128-64-10", "cnn_small": "cnn_small"}

# dattri's MNIST-10 benchmark (README, "Benchmark Results", assets/images/
# benchmark-result-mnist.png): LDS read off a bar chart, so approximate (about ±0.02). Their
# Arnoldi ran max_iter=50 (at most 49 eigenpairs); their TracIn sums 10 independently
# trained models; LiSSA depth 100; their TRAK ensembles 50 models (TRAK-50: compared with
# our rows of M = 50 only). Exact was not run on the MLP.
DATTRI = {
    ("logreg", "exact"): 0.80,
    ("logreg", "lissa"): 0.79,
    ("logreg", "arnoldi"): 0.31,
    ("logreg", "tracin"): 0.33,
    ("logreg", "graddot"): 0.33,
    ("logreg", "gradcos"): 0.19,
    ("mlp", "lissa"): 0.14,
    ("mlp", "arnoldi"): 0.09,
    ("mlp", "tracin"): 0.15,
    ("mlp", "graddot"): 0.10,
    ("mlp", "gradcos"): 0.12,
    ("logreg", "trak"): 0.68,
    ("mlp", "trak"): 0.45,
}
# The ensemble size of dattri's published TRAK values.
DATTRI_TRAK_MODELS = 50
DATTRI_SOURCE = (
    "dattri (Deng et al., NeurIPS 2024), README benchmark figure for MNIST-10, read off a "
    "bar chart: approximate; their CG reaches ≈0.80 (LR) and ≈0.26 (MLP), TRAK-50 ≈0.68 "
    "and ≈0.45"
)

LABELS = {
    "exact": "Exact",
    "arnoldi": "Arnoldi",
    "randproj": "RandProj",
    "lissa": "LISSA",
    "tracin": "TracIn",
    "graddot": "Grad-Dot",
    "gradcos": "Grad-Cos",
    "trak": "TRAK",
    "kfac": "K-FAC",
    "ekfac": "EK-FAC",
}


def method_label(run: dict[str, Any]) -> str:
    """A row's method as the tables name it (options that tell rows apart included)."""
    options = run.get("method_options") or {}
    name = run["method"]
    label = LABELS.get(name, name)
    tail = " + tail" if options.get("tail") is not None else ""
    ggn = ", GGN" if options.get("curvature") == "ggn" else ""
    if name == "arnoldi":
        return f"{label}{ggn} n={options['n']}, p̄={options['pbar']}{tail}"
    if name == "exact":
        pbar = options.get("pbar")
        return f"{label} (full inverse)" if pbar is None else f"{label} p̄={pbar}{tail}"
    if name == "randproj":
        return f"{label} p̄={options['pbar']}{tail}"
    if name == "tracin":
        return f"{label} [{options['checkpoints']}]"
    if name == "trak":
        models = options.get("models", 1)
        kind = " (checkpoints)" if options.get("ensemble") == "checkpoints" and models > 1 else ""
        return f"{label} k={options['k']}, M={models}{kind}"
    return label


def lds_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per `stage=lds` run: setting, method, LDS with its interval, the validation
    LDS and the choice it made, the control, the cost, dattri's value."""
    lines = []
    for run in runs:
        if run.get("stage") != "lds" or run.get("lds") is None:
            continue
        options = run.get("method_options") or {}
        choice = run.get("lds_choice") or {}
        fit, attribute = run.get("t_fit_s") or 0.0, run.get("t_attribute_s") or 0.0
        published = DATTRI.get((run["model"], run["method"]))
        if run["method"] == "arnoldi" and options.get("n") != 50:
            published = None  # dattri's Arnoldi is the n = 50 row only
        if run["method"] == "exact" and options.get("pbar") is not None:
            published = None
        if run["method"] == "tracin" and options.get("checkpoints") != 10:
            published = None
        if run["method"] == "trak" and options.get("models") != DATTRI_TRAK_MODELS:
            published = None
        if options.get("tail") is not None:
            published = None  # ours: not in dattri
        values = (run.get("eigenvalues") or [])[: options.get("pbar") or 0]
        lines.append(
            {
                "setting": SETTINGS.get(run["model"], run["model"]),
                "model": run["model"],
                "Method": method_label(run),
                "method": run["method"],
                "p̄": options.get("pbar"),
                "k": options.get("k"),
                "M": options.get("models"),
                "ensemble": options.get("ensemble"),
                "damping": choice.get("damping", options.get("damping")),
                "tail": choice.get("tail", options.get("tail")),
                "negative of kept": sum(v < 0 for v in values) if values else None,
                "LDS": run["lds"],
                "95% interval": f"[{run['lds_low']:.3f}, {run['lds_high']:.3f}]",
                "validation LDS": run.get("lds_validation"),
                "dattri (approx.)": published,
                "fit, s": fit,
                "attribution, s": attribute,
                "seconds": fit + attribute,
                "random": run.get("lds_random"),
                "test examples": run.get("lds_examples"),
                "subsets": run.get("lds_subsets"),
                "grid": run.get("lds_grid"),
                "run_dir": run["run_dir"],
            }
        )
    frame = pd.DataFrame(lines)
    if frame.empty:
        return frame
    order = {name: i for i, name in enumerate(SETTINGS)}
    frame["_setting"] = frame["model"].map(order).fillna(len(order))
    frame = frame.sort_values(["_setting", "LDS"], ascending=[True, False], kind="stable")
    return frame.drop(columns="_setting").reset_index(drop=True)


def _three(values) -> list[str]:
    return [f"{v:.3f}" if v is not None and np.isfinite(v) else "—" for v in values]


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns of the markdown table, LDS rounded to 3 decimals."""
    out = frame[
        [
            "setting",
            "Method",
            "damping",
            "tail",
            "LDS",
            "95% interval",
            "validation LDS",
            "dattri (approx.)",
            "fit, s",
            "attribution, s",
        ]
    ].copy()
    for column in ("LDS", "validation LDS"):
        out[column] = _three(out[column])
    for column in ("damping", "tail"):
        out[column] = [fmt(v) if v is not None and not pd.isna(v) else "—" for v in out[column]]
    return out


def pbar_curve(frame: pd.DataFrame, model: str = "logreg") -> pd.DataFrame:
    """The LDS against p̄ of Exact (top p̄ exact eigenpairs; p̄ = p the full inverse) and of
    Arnoldi (top p̄ Ritz pairs of one n-step fit) on `model`."""
    part = frame[(frame["model"] == model) & frame["method"].isin(["exact", "arnoldi"])]
    part = part[["Method", "method", "p̄", "damping", "tail", "LDS", "95% interval"]].copy()
    part["p̄"] = [None if pd.isna(v) else int(v) for v in part["p̄"]]
    part["with tail"] = part["Method"].str.endswith("+ tail")
    return part.sort_values(["method", "with tail", "p̄"], na_position="last").reset_index(drop=True)


def trak_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """TRAK's rows: the setting, k, M, the ensemble's source, LDS, interval, the damping
    chosen, seconds (fit, retrained models included, + attributions), sorted by setting,
    source, k and M."""
    part = frame[frame["method"] == "trak"]
    columns = ["setting", "model", "Method", "k", "M", "ensemble", "damping", "LDS"]
    part = part[[*columns, "95% interval", "fit, s", "seconds"]].copy()
    # A single model has no ensemble: M = 1 belongs to both curves.
    part["source"] = np.where(part["M"] == 1, "one model", part["ensemble"])
    part["_setting"] = part["model"].map({m: i for i, m in enumerate(SETTINGS)})
    part["_source"] = part["source"].map({"one model": 0, "retrained": 1, "checkpoints": 2})
    part = part.sort_values(["_setting", "_source", "k", "M"], kind="stable")
    return part.drop(columns=["_setting", "_source"]).reset_index(drop=True)


def trak_findings(frame: pd.DataFrame) -> list[str]:
    """TRAK against M (retrained ensembles at the largest k run with M > 1), against k at
    M = 1, the cheap ensemble of checkpoints, TRAK's best against the best curvature method,
    and the published TRAK-50."""
    out = []
    curves = trak_curves(frame)
    for model, part in curves.groupby("model", sort=False):
        setting = part["setting"].iloc[0]
        retrained = part[part["ensemble"] == "retrained"]
        if not retrained.empty:
            k = int(retrained["k"].max())
            line = part[(part["k"] == k) & (part["source"].isin(["one model", "retrained"]))]
            line = line.sort_values("M")
            out.append(
                f"- {setting}, TRAK k = {k} against M (the trained model and M − 1 retrained "
                "from other seeds): "
                + ", ".join(
                    f"M = {int(r['M'])}: {r['LDS']:.3f} ({r['seconds']:.0f} s)"
                    for _, r in line.iterrows()
                )
                + "."
            )
        single = part[part["M"] == 1].sort_values("k")
        if len(single) > 1:
            out.append(
                f"- {setting}, TRAK with one model against k: "
                + ", ".join(f"k = {int(r['k'])}: {r['LDS']:.3f}" for _, r in single.iterrows())
                + " (damping chosen on validation at each)."
            )
        for _, r in part[part["ensemble"].eq("checkpoints") & (part["M"] > 1)].iterrows():
            alone = part[(part["M"] == 1) & (part["k"] == r["k"])]
            versus = (
                f" against {alone['LDS'].iloc[0]:.3f} for the model alone" if len(alone) else ""
            )
            out.append(
                f"- {setting}, TRAK k = {int(r['k'])} over the last {int(r['M'])} checkpoints of "
                f"the one run (no retraining): {r['LDS']:.3f}{versus}."
            )
        others = frame[(frame["model"] == model) & (frame["method"] != "trak")]
        if not others.empty:
            best, rival = part.sort_values("LDS").iloc[-1], others.iloc[0]  # frame: by LDS
            verdict = (
                "above"
                if _low(best["95% interval"]) > _high(rival["95% interval"])
                else (
                    "below"
                    if _high(best["95% interval"]) < _low(rival["95% interval"])
                    else "within"
                )
            )
            out.append(
                f"- {setting}: the best TRAK row ({best['Method']}, {best['LDS']:.3f}, "
                f"{best['seconds']:.0f} s) is {verdict} the interval of the best other method "
                f"({rival['Method']}, {rival['LDS']:.3f}, {rival['seconds']:.0f} s)."
            )
        published = DATTRI.get((model, "trak"))
        if published is not None:
            top = part.sort_values("M").iloc[-1]
            out.append(
                f"- {setting}: dattri's TRAK-{DATTRI_TRAK_MODELS} is ≈{published:.2f} (read off "
                f"a chart); ours at M = {int(top['M'])}: {top['LDS']:.3f}"
                + (
                    "."
                    if int(top["M"]) == DATTRI_TRAK_MODELS
                    else f" (M = {DATTRI_TRAK_MODELS} not run here)."
                )
            )
    return out


def _low(interval: str) -> float:
    return float(interval.strip("[]").split(",")[0])


def _high(interval: str) -> float:
    return float(interval.strip("[]").split(",")[1])


def lds_findings(frame: pd.DataFrame, n_params: dict[str, int]) -> list[str]:
    """The findings, computed from the table: the best method of each setting; whether
    Arnoldi reaches Exact (and at which p̄); what keeping the dropped spectrum as one
    curvature (`tail`) changes; negative Ritz values among the kept ones; ours against
    dattri's published values."""
    out = []
    for model, part in frame.groupby("model", sort=False):
        setting = part["setting"].iloc[0]
        best = part.iloc[0]
        out.append(
            f"- {setting}: the best LDS is {best['Method']}, {best['LDS']:.3f} "
            f"{best['95% interval']} (of {len(part)} rows); random attributions "
            f"{part['random'].mean():+.3f}."
        )
        tails = part["Method"].str.endswith("+ tail")
        exact = part[(part["method"] == "exact") & part["p̄"].isna()]
        arnoldi = part[(part["method"] == "arnoldi") & ~tails]
        truncated = part[(part["method"] == "exact") & part["p̄"].notna()].sort_values("p̄")
        if not exact.empty:
            full = exact.iloc[0]
            best_truncation = truncated.sort_values("LDS", ascending=False).head(1)
            if not best_truncation.empty and best_truncation["LDS"].iloc[0] > _high(
                full["95% interval"]
            ):
                top = best_truncation.iloc[0]
                out.append(
                    f"- {setting}: Exact's full inverse ({full['LDS']:.3f}) scores under its "
                    f"own truncation to the top p̄ = {int(top['p̄'])} eigenpairs "
                    f"({top['LDS']:.3f}): inverting the small and negative eigenvalues of an "
                    "indefinite Hessian hurts more than dropping them."
                )
            elif not truncated.empty:
                curve = ", ".join(
                    f"p̄ = {int(r['p̄'])}: {r['LDS']:.3f}" for _, r in truncated.iterrows()
                )
                out.append(
                    f"- {setting}: what the truncation to the top p̄ exact eigenpairs costs "
                    f"(Exact's full inverse {full['LDS']:.3f}): {curve}. The directions of "
                    "small curvature that the truncation drops carry most of H⁻¹."
                )
            target, low = float(full["LDS"]), _low(full["95% interval"])
            for rows, what in (
                (arnoldi, "Arnoldi"),
                (part[(part["method"] == "arnoldi") & tails], "Arnoldi + tail"),
            ):
                if rows.empty:
                    continue
                reach = rows[rows["LDS"] >= low].sort_values("p̄")
                if reach.empty:
                    top = rows.sort_values("LDS", ascending=False).iloc[0]
                    out.append(
                        f"- {setting}: no {what} row reaches the interval of Exact's full "
                        f"inverse ({target:.3f}); the closest is {top['Method']} at "
                        f"{top['LDS']:.3f}."
                    )
                else:
                    first = reach.iloc[0]
                    out.append(
                        f"- {setting}: {what} reaches the interval of Exact's full inverse "
                        f"({target:.3f}) from p̄ = {int(first['p̄'])} ({first['Method']}: "
                        f"{first['LDS']:.3f}) of p = {n_params.get(model, 0):,} parameters."
                    )
            dattri = part[part["Method"].str.contains("n=50, p̄=49") & ~tails]
            top49 = truncated[truncated["p̄"] == 49]
            if not dattri.empty and not top49.empty and dattri["LDS"].iloc[0] < low:
                row, exact49 = dattri.iloc[0], float(top49["LDS"].iloc[0])
                out.append(
                    f"- {setting}: Arnoldi as dattri ran it (n = 50, at most 49 eigenpairs) "
                    f"scores {row['LDS']:.3f}, {target - row['LDS']:.3f} under Exact: "
                    f"{target - exact49:.3f} of it is the truncation to 49 directions (the exact "
                    f"top 49 eigenpairs score {exact49:.3f}), {exact49 - row['LDS']:.3f} the "
                    "50-step iteration's unconverged Ritz pairs."
                )
        for _, row in part[tails].iterrows():
            plain = part[part["Method"] == row["Method"].removesuffix(" + tail")]
            if plain.empty:
                continue
            before = plain.iloc[0]
            out.append(
                f"- {setting}, {before['Method']}: keeping the dropped spectrum as one "
                f"curvature (tail {fmt(row['tail'])} x the smallest kept) moves the LDS from "
                f"{before['LDS']:.3f} to {row['LDS']:.3f} ({row['LDS'] - before['LDS']:+.3f}); "
                f"seconds {before['seconds']:.1f} -> {row['seconds']:.1f}."
            )
        negative = part[(part["method"] == "arnoldi") & ~tails & part["negative of kept"].notna()]
        if not negative.empty and negative["negative of kept"].max() > 0:
            parts = ", ".join(
                f"{r['Method']}: {int(r['negative of kept'])} of {int(r['p̄'])}"
                for _, r in negative.iterrows()
            )
            out.append(f"- {setting}: negative Ritz values among the kept ones: {parts}.")
        published = part[part["dattri (approx.)"].notna()]
        if not published.empty:
            gaps = ", ".join(
                f"{r['Method']} {r['LDS']:.2f} vs {r['dattri (approx.)']:.2f}"
                for _, r in published.iterrows()
            )
            out.append(f"- {setting}, ours against dattri's published values: {gaps}.")
    return out


def plot_lds(frame: pd.DataFrame, path: str | Path) -> None:
    """LDS against seconds (log x; fit + attributions on this machine), one point per method
    and setting, as TRAK's main figure draws it; and the LDS against p̄ on logistic
    regression."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(17, 4.8))
    markers = {"logreg": "o", "mlp": "s", "cnn_small": "^"}
    colors = {name: f"C{i}" for i, name in enumerate(LABELS)}
    for _, line in frame.iterrows():
        if line["method"] == "exact" and line["model"] == "logreg" and not pd.isna(line["p̄"]):
            continue  # the truncations are the middle panel's
        ax.errorbar(
            max(line["seconds"], 1e-2),
            line["LDS"],
            yerr=[
                [line["LDS"] - float(line["95% interval"].strip("[]").split(",")[0])],
                [float(line["95% interval"].strip("[]").split(",")[1]) - line["LDS"]],
            ],
            marker=markers.get(line["model"], "x"),
            color=colors.get(line["method"], "grey"),
            ms=6,
            capsize=2,
            lw=0.8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("seconds on this machine (fit + attributions of 600 test examples), log scale")
    ax.set_ylabel("LDS (mean Spearman ρ, 95% interval)")
    ax.axhline(0, color="black", lw=0.5)
    handles = [
        plt.Line2D([], [], color=colors[m], marker="o", ls="", label=label)
        for m, label in LABELS.items()
        if m in set(frame["method"])
    ] + [
        plt.Line2D([], [], color="black", marker=mk, ls="", mfc="none", label=SETTINGS[s])
        for s, mk in markers.items()
        if s in set(frame["model"])
    ]
    ax.legend(handles=handles, fontsize=7, ncol=2)
    ax.set_title("LDS against compute", fontsize=9)
    curve = pbar_curve(frame)
    curve = curve[~curve["Method"].str.contains("n=50,")]  # dattri's n = 50 fit: the table's
    for method, tail, style, label in (
        ("exact", False, "k-o", "Exact (top p̄)"),
        ("arnoldi", False, "C1-s", "Arnoldi n=1000 (top p̄)"),
        ("arnoldi", True, "C2-^", "Arnoldi n=1000, top p̄ + tail"),
    ):
        part = curve[
            (curve["method"] == method) & (curve["with tail"] == tail) & curve["p̄"].notna()
        ].sort_values("p̄")
        if not part.empty:
            bx.plot(part["p̄"], part["LDS"], style, label=label)
    full = curve[(curve["method"] == "exact") & curve["p̄"].isna()]
    if not full.empty:
        bx.axhline(float(full["LDS"].iloc[0]), color="black", ls="--", lw=1, label="Exact, full")
    bx.set_xscale("log")
    bx.set_xlabel("p̄ (eigenpairs kept), log scale")
    bx.set_ylabel("LDS")
    bx.set_title("Logistic regression: LDS against p̄ (damping chosen per point)", fontsize=9)
    bx.legend(fontsize=7)
    curves = trak_curves(frame)
    for (model, k), part in curves[curves["source"] != "checkpoints"].groupby(
        ["model", "k"], sort=False
    ):
        part = part.sort_values("M")
        if len(part) > 1:
            cx.plot(
                part["M"],
                part["LDS"],
                marker=markers.get(model, "x"),
                label=f"{SETTINGS.get(model, model)}, k = {int(k)}",
            )
    for _, r in curves[curves["source"] == "checkpoints"].iterrows():
        cx.plot(r["M"], r["LDS"], marker=markers.get(r["model"], "x"), color="grey", ls="")
    cx.set_xscale("log")
    cx.set_xlabel("M, models in TRAK's ensemble (grey: M checkpoints of one run), log scale")
    cx.set_ylabel("LDS")
    cx.set_title("TRAK: LDS against the ensemble's size", fontsize=9)
    if len(curves):
        cx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
