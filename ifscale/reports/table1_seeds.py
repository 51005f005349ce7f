"""Table 1 over seeds (`make table1 SEEDS=3`): the fast rows as mean ± sd, and the
differences the table's claims rest on, paired by seed."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ifscale.reports.runs import markdown_table, mean_sd, pct
from ifscale.reports.table1 import TABLE1_ROWS, row_label

# The rows cheap enough to repeat over seeds (`make table1 SEEDS=3`): every example scored.
SEED_ROWS = ("loss", "el2n", "tracin_1", "arnoldi_10", "arnoldi_100", "randproj_10", "randproj_100")


def seeds_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per (fast Table 1 row, seed) among `runs` (Table 1's sweep and the
    table1_seeds sweep); a later run of the same row and seed wins."""
    rows = [row for row in TABLE1_ROWS if row.key in SEED_ROWS]
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        row = next((r for r in rows if r.matches(run)), None)
        if row is not None and run.get("auc") is not None:
            found[(row.key, int(run["seed"]))] = {
                "row": row.key,
                "Method": row.label,
                "p̄": run.get("pbar"),
                "seed": int(run["seed"]),
                "AUC": pct(run["auc"]),
                "AP": pct(run["ap"]),
                "T, s": run["t_score_s"],
                "fit, s": run["t_fit_s"],
                "n scored": run["n_scored"],
                "test accuracy": pct(run.get("test_accuracy")),
                "run_dir": run["run_dir"],
            }
    order = {key: i for i, key in enumerate(SEED_ROWS)}
    lines = sorted(found.values(), key=lambda line: (order[line["row"]], line["seed"]))
    return pd.DataFrame(lines)


def _pm(values: pd.Series, digits: int = 1) -> str:
    """mean ± sample sd over seeds of a column."""
    return mean_sd(values.mean(), values.std(ddof=1), digits)


def seeds_section(per_seed: pd.DataFrame) -> list[str]:
    """A markdown section: the fast rows as mean ± sd over seeds, and the differences that
    matter (each row against the loss, p̄ = 100 against 10, curvature against TracIn [1])
    paired by seed, so the training noise shared by two rows of one seed cancels."""
    if per_seed.empty or per_seed["seed"].nunique() < 2:
        return []
    seeds = sorted(per_seed["seed"].unique())
    paper = {row.key: row.paper for row in TABLE1_ROWS}
    lines = []
    for key, part in per_seed.groupby("row", sort=False):
        lines.append(
            {
                "Method": part["Method"].iloc[0],
                "p̄": part["p̄"].iloc[0],
                "seeds": len(part),
                "AUC": _pm(part["AUC"], 2),  # near 100: two decimals show the spread
                "AP": _pm(part["AP"]),
                "paper AUC": paper[key]["AUC"],
                "paper AP": paper[key]["AP"],
                "T, s": part["T, s"].mean(),
                "fit, s": part["fit, s"].mean(),
            }
        )
    accuracy = per_seed.groupby("seed")["test accuracy"].first()
    text = [
        "",
        f"## Over seeds: the fast rows as mean ± sd over {len(seeds)} seeds "
        f"(`make table1 SEEDS={len(seeds)}`)",
        "",
        f"Seeds {', '.join(map(str, seeds))}: each draws its own mislabeled examples, model "
        "initialisation and batch order, fit batches and projections (seed 0 is the table "
        "above). Mean ± sample standard deviation; T and fit are means, in seconds. Test "
        f"accuracy {accuracy.mean():.2f}% ± {accuracy.std(ddof=1):.2f}.",
        "",
        markdown_table(pd.DataFrame(lines)),
        "",
        *_paired_differences(per_seed),
    ]
    return text


def _paired_differences(per_seed: pd.DataFrame) -> list[str]:
    """`a - b` in AP and AUC points, computed per seed then averaged (± sd), for the pairs of
    rows the tables' claims rest on; a gap inside one sd is called unresolved."""
    wide = {
        what: per_seed.pivot(index="seed", columns="row", values=what) for what in ("AUC", "AP")
    }
    label = {line["row"]: row_label(line) for _, line in per_seed.iterrows()}

    def diff(a: str, b: str) -> str | None:
        if a not in wide["AP"] or b not in wide["AP"]:
            return None
        both = wide["AP"][[a, b]].dropna().index
        if len(both) < 2:
            return None
        d_ap = (wide["AP"][a] - wide["AP"][b])[both]
        d_auc = (wide["AUC"][a] - wide["AUC"][b])[both]
        mean, sd = d_ap.mean(), d_ap.std(ddof=1)
        verdict = (
            "unresolved (inside one sd)" if abs(mean) <= sd else "higher" if mean > 0 else "lower"
        )
        return (
            f"- {label[a]} against {label[b]}: AP {mean:+.1f} ± {sd:.1f}, AUC "
            f"{d_auc.mean():+.2f} ± {d_auc.std(ddof=1):.2f} points over {len(both)} seeds: "
            f"{verdict}."
        )

    influence = [k for k in SEED_ROWS if k not in ("loss", "el2n")]
    pairs = [(k, "loss") for k in influence] + [
        ("arnoldi_100", "arnoldi_10"),
        ("randproj_100", "randproj_10"),
        *((k, "tracin_1") for k in ("arnoldi_10", "arnoldi_100", "randproj_10", "randproj_100")),
    ]
    out = [d for a, b in pairs if (d := diff(a, b)) is not None]
    return ["Differences paired by seed (the first row minus the second):", "", *out] if out else []
