"""Tables and figures from the run folders of a Hydra multirun.

    python experiments/report.py table1    # newest outputs/multirun/table1/*, -> results/table1.*
    python experiments/report.py figures   # newest figures + figures_baselines sweeps
    python experiments/report.py regimes   # newest regimes sweep -> results/regimes.*
    python experiments/report.py regimes --experiment regimes_memorised
                                           # -> results/regimes_memorised.*
    python experiments/report.py table2    # newest outputs/multirun/table2/*, -> results/table2.*
    python experiments/report.py table3    # newest outputs/multirun/table3/*, -> results/table3.*
    python experiments/report.py readme    # README.md's Table 1 and loss-baseline lines <- results/
    python experiments/report.py explain   # newest explain_mnist / explain_translation runs
                                           # -> results/explain_mnist/, explain_translation/
    python experiments/report.py lds       # newest lds_logreg, lds_mlp, lds_cnn, lds_trak_*,
                                           # lds_kfac_* sweeps and retrain runs
                                           # -> results/lds.{md,csv}, figures/lds.png
    python experiments/report.py table1 --sweep outputs/multirun/table1/2026-11-26_04-00-00

Every number written comes from a run's `metrics.json` / `scores.csv`; nothing is typed in
except the paper's published values, which are shown beside ours. When it writes the project's
results/, each report ends by updating README.md's copies (as `readme` does): `table1` its
table, every report its line on the loss baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.sweeps import IncompleteSweep, missing_jobs, require_complete
from ifscale.cache.atomic import staged_files
from ifscale.reports import (
    TABLE2_BASELINE_ROWS,
    TABLE2_KFAC_ROWS,
    TABLE2_ROWS,
    ReadmeSyncError,
    check_section,
    config_of,
    figure1_baseline_verdict,
    figure1_frame,
    figure2_frame,
    found_at_k,
    load_runs,
    markdown_table,
    plot_figure1,
    plot_figure2,
    plot_regimes,
    regimes_findings,
    regimes_frame,
    regimes_runs_frame,
    regimes_table,
    seeds_frame,
    seeds_section,
    sync_baselines,
    sync_readme,
    table1_frame,
    table1_notes,
    table2_check_section,
    table2_frame,
    table2_notes,
    table3_bias_frame,
    table3_bias_section,
    table3_frame,
    table3_notes,
    top_examples,
    top_pairs,
    training_table,
)
from ifscale.utils import os_error_in, os_error_line

ROOT = Path(__file__).resolve().parents[1]


def latest_sweep(name: str, outputs: Path, required: bool = True) -> Path | None:
    """The newest sweep folder of experiment `name` that holds at least one finished run.

    A required sweep (the table's own) must be complete (`complete`); of an optional one (a
    -check sweep) the newest complete one is taken, an incomplete one skipped with a note.
    """
    base = outputs / "multirun" / name
    candidates = sorted(
        (d for d in base.glob("*") if any(d.glob("*/metrics.json"))), key=lambda d: d.name
    )
    if not candidates and not required:
        return None
    if not candidates:
        raise SystemExit(
            f"No finished runs under {base}; run `make {name.split('_')[0]}` first, or pass --sweep"
        )
    if required:
        return complete(candidates[-1])
    for sweep in reversed(candidates):
        missing = missing_jobs(sweep)
        if not missing:
            return sweep
        print(f"Skipping the incomplete sweep {sweep} ({'; '.join(missing)})", file=sys.stderr)
    return None


def complete(sweep: Path) -> Path:
    """`sweep`, or exit with one line naming its jobs that did not finish: a table is never
    written from part of a sweep."""
    try:
        require_complete(sweep)
    except IncompleteSweep as e:
        raise SystemExit(f"Refusing to report: {e}") from None
    return sweep


def _relative(path: str | Path) -> str:
    """A path relative to the project, so committed tables name no machine's folders."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_table1(
    sweep: Path, results: Path, check: Path | None = None, seeds: Path | None = None
) -> None:
    runs = load_runs(sweep)
    # The fast rows over more seeds (`make table1 SEEDS=3`): seed 0 from this sweep.
    per_seed = seeds_frame(runs + (load_runs(seeds) if seeds else []))
    table = table1_frame(runs)
    table["run_dir"] = [_relative(d) for d in table["run_dir"]]
    results.mkdir(parents=True, exist_ok=True)
    table.to_csv(results / "table1.csv", index=False)
    notes = table1_notes(table, runs)
    shown = table[
        [
            "Method",
            "p̄",
            "T, s",
            "AUC",
            "AP",
            "paper T, s",
            "paper AUC",
            "paper AP",
            "n scored",
            "AUC, subset",
            "AP, subset",
            "fit, s",
            "examples/s",
        ]
    ]
    source = _relative(sweep)
    text = [
        "# Table 1: mislabeled MNIST, cnn_large (824,458 parameters)",
        "",
        f"Produced by `make table1` from `{source}`"
        + (f" and `{_relative(seeds)}` (the other seeds)" if seeds else "")
        + " (`python experiments/report.py table1`); do not edit by hand.",
        "",
        markdown_table(shown),
        *seeds_section(per_seed),
        "",
        *notes,
        *(check_section(load_runs(check), table) if check else []),
    ]
    (results / "table1.md").write_text("\n".join(text) + "\n")
    if seeds:
        per_seed["run_dir"] = [_relative(d) for d in per_seed["run_dir"]]
        per_seed.to_csv(results / "table1_seeds.csv", index=False)
    found = found_at_k(runs)
    found.to_csv(results / "table1_found_at_k.csv", index=False)
    best = top_examples(runs, count=32)
    if best is not None:
        np.savez_compressed(results / "table1_top_examples.npz", **best)
    print((results / "table1.md").read_text())


def write_table2(
    sweep: Path, results: Path, check: Path | None = None, extra: Sequence[Path] = ()
) -> None:
    # The loss rows and the K-FAC rows come from their own sweeps (table2_baselines,
    # table2_kfac), on the same model.
    runs = load_runs(sweep) + [run for folder in extra for run in load_runs(folder)]
    table = table2_frame(runs)
    if table.empty:
        raise SystemExit(f"No Table 2 runs (Arnoldi/RandProj, p̄ 10 or 20) under {sweep}")
    table["run_dir"] = [_relative(d) for d in table["run_dir"]]
    results.mkdir(parents=True, exist_ok=True)
    table.to_csv(results / "table2.csv", index=False)
    columns = ["Layers", "Method", "p̄", "AUC", "AP", "paper AUC", "paper AP"]
    columns += ["parameters", "fit, s", "T, s", "examples/s"]
    corpus = table["dataset"].iloc[0]
    text = [
        f"# Table 2: permuted references, German→English Transformer ({corpus})",
        "",
        f"Produced by `make table2` from `{_relative(sweep)}`"
        + "".join(f" and `{_relative(folder)}`" for folder in extra)
        + " (`python experiments/report.py table2`); do not edit by hand. The paper's values "
        "are for WMT17 and a full-size Transformer.",
        "",
        markdown_table(table[columns]),
        "",
        *table2_notes(table, runs),
        *(table2_check_section(load_runs(check), table) if check else []),
    ]
    (results / "table2.md").write_text("\n".join(text) + "\n")
    found_at_k(runs, TABLE2_ROWS + TABLE2_KFAC_ROWS + TABLE2_BASELINE_ROWS).to_csv(
        results / "table2_found_at_k.csv", index=False
    )
    top = top_pairs(runs)
    if top is not None:
        top.to_csv(results / "table2_top_pairs.csv", index=False)
    print((results / "table2.md").read_text())


def write_table3(sweep: Path, results: Path, check: Path | None = None) -> None:
    runs = load_runs(sweep)
    check_runs = load_runs(check) if check else []
    table = table3_frame(runs)
    if table.empty:
        raise SystemExit(f"No Table 3 runs (runs with select.method) under {sweep}")
    # Influence rows of both sweeps: what they favour besides cleanliness (length, repeats).
    bias = table3_bias_frame(runs + check_runs)
    table["run_dir"] = [_relative(d) for d in table["run_dir"]]
    results.mkdir(parents=True, exist_ok=True)
    table.to_csv(results / "table3.csv", index=False)
    short, long = int(table["budget short"].iloc[0]), int(table["budget long"].iloc[0])
    shown = table[
        [
            "Method",
            "% selected",
            "BLEU short",
            "BLEU long",
            "paper % selected",
            "paper BLEU@10k",
            "paper BLEU@200k",
            "noise % in selection",
        ]
    ].rename(columns={"BLEU short": f"BLEU@{short}", "BLEU long": f"BLEU@{long}"})
    text = [
        f"# Table 3: data cleaning by self-influence, judged by BLEU ({table['dataset'].iloc[0]})",
        "",
        f"Produced by `make table3` from `{_relative(sweep)}`"
        " (`python experiments/report.py table3`); do not edit by hand. The paper's values "
        "are for 100M ParaCrawl pairs and a full-size Transformer trained 10k and 200k steps.",
        "",
        *(
            [f"The variants in the last section: `make table3-check` (`{_relative(check)}`).", ""]
            if check_runs
            else [
                "No variants in this report: `make table3-check` (after `make table3`) adds the "
                "length-normalised and length-stratified rows to its last section.",
                "",
            ]
        ),
        markdown_table(shown),
        "",
        *table3_notes(table, runs),
        "",
        *table3_bias_section(bias, short, long),
    ]
    if not bias.empty:
        bias["run_dir"] = [_relative(d) for d in bias["run_dir"]]
        bias.to_csv(results / "table3_selection_bias.csv", index=False)
    (results / "table3.md").write_text("\n".join(text) + "\n")
    print((results / "table3.md").read_text())


def write_regimes(sweep: Path, results: Path, name: str = "regimes") -> None:
    """results/<name>.{md,csv} and figures/<name>.png from a sweep of the regimes experiment
    (`name`: "regimes", or a study of its own such as "regimes_memorised")."""
    runs = load_runs(sweep)
    per_run = regimes_runs_frame(runs)
    if per_run.empty:
        raise SystemExit(f"No regimes runs (influence or baseline scores) under {sweep}")
    stats = regimes_frame(per_run)
    results.mkdir(parents=True, exist_ok=True)
    (results / "figures").mkdir(exist_ok=True)
    per_run["run_dir"] = [_relative(d) for d in per_run["run_dir"]]
    per_run.to_csv(results / f"{name}.csv", index=False)
    first = runs[0]
    seeds = sorted(per_run["seed"].unique())
    train = config_of(first)["train"]
    setting = (
        f"{first['model']} on {first['dataset']} ({first['n_train']:,} training images, "
        f"{first['noise']['n_noisy']:,} mislabeled), {train['optimizer']} at learning rate "
        f"{train['learning_rate']:g} ({train['schedule']}), batch {train['batch_size']}, "
        f"seeds {', '.join(map(str, seeds))}"
    )
    plot_regimes(stats, results / "figures" / f"{name}.png", setting)
    target = "regimes" if name == "regimes" else name.replace("_", "-")
    command = "regimes" + ("" if name == "regimes" else f" --experiment {name}")
    text = [
        "# Memorisation regimes: which method finds the mislabeled examples, by training length",
        "",
        f"Produced by `make {target}` from `{_relative(sweep)}` (`python experiments/report.py "
        f"{command}`); do not edit by hand. Hardware: " + first["device"] + ".",
        "",
        f"Setting: {setting}. Each seed changes the training and the noise. Cells are mean ± "
        "standard deviation over the seeds; one value where one seed ran.",
        "",
        "## Findings (computed from the numbers below)",
        "",
        *regimes_findings(stats),
        "",
        "## AP (%)",
        "",
        markdown_table(regimes_table(stats, "ap")),
        "",
        "## AUC (%)",
        "",
        markdown_table(regimes_table(stats, "auc")),
        "",
        "## Training",
        "",
        markdown_table(training_table(stats)),
        "",
        f"![regimes](figures/{name}.png)",
        "",
        f"Per run (method, epochs, seed): `results/{name}.csv`.",
    ]
    (results / f"{name}.md").write_text("\n".join(text) + "\n")
    print((results / f"{name}.md").read_text())


def write_readme(readme: Path, results: Path, table1: bool = True) -> None:
    """Copies into `readme`, between its markers, the main table of `results/table1.md`
    (unless `table1` is false) and each table's verdict on the loss baseline."""
    try:
        changed = sync_readme(readme, results / "table1.md") if table1 else None
        verdicts = sync_baselines(readme, results)
    except (ReadmeSyncError, FileNotFoundError) as e:
        raise SystemExit(str(e)) from None
    for what, source, change in (
        ("Table 1 block", "table1.md", changed),
        ("loss baseline lines", "*.md", verdicts),
    ):
        if change is not None:
            state = "updated from" if change else "up to date with"
            print(f"{_relative(readme)}: {what} {state} {_relative(results)}/{source}")


def write_figures(sweeps: Sequence[Path], results: Path) -> None:
    runs = [r for s in sweeps for r in load_runs(s)]
    out = results / "figures"
    out.mkdir(parents=True, exist_ok=True)
    fig1 = figure1_frame(runs)
    fig1["run_dir"] = [_relative(d) for d in fig1["run_dir"]]
    fig1.to_csv(out / "figure1.csv", index=False)
    plot_figure1(fig1, runs, out / "figure1.png")
    fig2 = figure2_frame(runs)
    fig2.to_csv(out / "figure2.csv", index=False)
    plot_figure2(fig2, runs, out / "figure2.png")
    text = [
        "# Figures 1-2: the small CNN on the 10% MNIST subset",
        "",
        f"Produced by `make figures` from {', '.join(f'`{_relative(s)}`' for s in sweeps)} "
        "(`python experiments/report.py figures`); do not edit by hand. The numbers behind "
        "each figure are in `figure1.csv` and `figure2.csv`.",
        "",
        "![Figure 1](figure1.png)",
        "",
        *figure1_baseline_verdict(fig1),
        "",
        "![Figure 2](figure2.png)",
    ]
    (out / "figures.md").write_text("\n".join(text) + "\n")
    print("wrote figures/figures.md, figure1.png and figure2.png (+ csv)")


def _three(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def seeds_lines(sweep: Path | None) -> list[str]:
    """How the LDS moves with K, the models retrained per subset (a sweep with lds.seeds >
    1: `lds_by_seeds` is each method's test LDS against the mean output of the first k)."""
    from ifscale.reports.lds import lds_frame

    if sweep is None:
        return ["- (no `lds_seeds` sweep: run `make lds`)"]
    runs = load_runs(sweep)
    frame = lds_frame(runs)
    by_dir = {r["run_dir"]: r for r in runs}
    first = runs[0]
    lines = [
        f"From `{_relative(sweep)}`: {first['model']}, {first['lds_subsets']} subsets x "
        f"K = {first['lds_seeds']} models each (another "
        f"{first['lds_subsets'] * first['lds_seeds']} retrainings); the test LDS against "
        "the mean output of the first k models of each subset:",
        "",
    ]
    for _, line in frame.iterrows():
        values = by_dir[line["run_dir"]].get("lds_by_seeds") or []
        curve = ", ".join(f"K = {k}: {v:.3f}" for k, v in enumerate(values, 1))
        lines.append(f"- {line['Method']}: {curve}")
    return lines


def write_lds(
    sweeps: Sequence[Path], retrains: Sequence[Path], results: Path, seeds: Path | None = None
) -> None:
    from ifscale.reports.lds import (
        DATTRI_SOURCE,
        lds_findings,
        lds_frame,
        pbar_curve,
        plot_lds,
        shown,
        trak_curves,
        trak_findings,
    )
    from ifscale.reports.runs import fmt

    runs = [r for s in sweeps for r in load_runs(s)]
    frame = lds_frame(runs)
    if frame.empty:
        raise SystemExit(f"No stage=lds runs under {', '.join(map(str, sweeps))}")
    frame["run_dir"] = [_relative(d) for d in frame["run_dir"]]
    (results / "figures").mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["grid"]).to_csv(results / "lds.csv", index=False)
    plot_lds(frame, results / "figures" / "lds.png")
    first = runs[0]
    n_params = {r["model"]: r["n_params"] for r in runs}
    retrained = [json.loads((d / "metrics.json").read_text()) for d in retrains]
    speed = [
        f"- {r['model']}: {r['retrained_models']} models in {r['retrain_seconds']:.0f} s by "
        f"`train_many` ({r['retrained_models'] / r['retrain_seconds']:.2f} models/s, "
        f"{r['retrain_compile_seconds']:.0f} s of it compiling), "
        + (
            f"one at a time by `train_loop` {r['sequential_models_per_s']:.2f} models/s "
            f"({r['retrained_models'] / r['retrain_seconds'] / r['sequential_models_per_s']:.1f}x"
            f" slower; their outputs within {r['sequential_max_output_gap']:.1e} of the "
            "stored ones"
            + (
                ": a group of models vectorised together rounds differently from one model "
                "alone, and many steps of non-convex training amplify it, as a change of "
                "machine would)"
                if r["sequential_max_output_gap"] > 1e-3
                else ")"
            )
            if r.get("sequential_models")
            else "not timed one at a time"
        )
        + f"; test accuracy of the model trained on all: {100 * r['test_accuracy']:.1f}%."
        for r in retrained
        if r.get("retrained_models")
    ]
    grids = [
        f"- {line['setting']}, {line['Method']}: "
        + "; ".join(
            " ".join(f"{k} {v:g}" for k, v in p.items() if k not in ("validation", "test"))
            + f": {_three(p['validation'])} / {_three(p['test'])}"
            for p in line["grid"]
        )
        for _, line in frame.iterrows()
        if isinstance(line["grid"], list)
    ]
    text = [
        "# The linear datamodeling score (LDS): how well attributions predict retraining",
        "",
        f"Produced by `make lds` from {', '.join(f'`{_relative(s)}`' for s in sweeps)} "
        "(`python experiments/report.py lds`); do not edit by hand. Hardware: "
        f"{first['device']}.",
        "",
        f"Setting (dattri's MNIST-10 benchmark): the first {first['n_train']:,} MNIST training "
        f"images; {first['lds_subsets']} random subsets of {first['lds_fraction']:.0%} of "
        f"them, {first['lds_seeds']} model(s) retrained from scratch on each with the setting's "
        f"recipe; the LDS of a test example is Spearman's ρ over the subsets between the "
        "summed attributions of a subset's examples and the retrained models' output "
        f"({'log p of the label' if first['lds_output'] == 'loss' else 'the margin'}); the "
        f"table shows its mean over the first {first['lds_examples']} test images with a 95% "
        "bootstrap interval. Hyperparameters (the damping) were chosen on the next "
        f"{first['lds_validation_examples']} test images (validation LDS), never on the "
        "reported ones. A positive attribution means training on the example raises the test "
        "example's log p (lowers its loss). Seconds: the fit plus the attributions of "
        f"{first['lds_examples'] + first['lds_validation_examples']} test examples against "
        "every training example, on this machine. Published values: " + DATTRI_SOURCE + ".",
        "",
        "## Findings (computed from the numbers below)",
        "",
        *lds_findings(frame, n_params),
        "",
        "## LDS by setting and method",
        "",
        markdown_table(shown(frame)),
        "",
        "## Logistic regression: the LDS against p̄",
        "",
        markdown_table(
            pbar_curve(frame)
            .drop(columns=["method", "with tail"])
            .assign(LDS=lambda f: [f"{v:.3f}" for v in f["LDS"]])
        ),
        "",
        "## TRAK: the LDS against the ensemble's size M and the projection's k",
        "",
        "TRAK (`method=trak`, `ifscale/influence/methods/trak.py`): the gradients of the "
        "label's log-odds projected to k dimensions (Gaussian), the kernel (ΦᵀΦ/n + λI)⁻¹ over "
        "the training set, the score averaged over M models: the trained model and M − 1 "
        "retrained from other seeds on every training image (`ensemble=retrained`, stored per "
        "model and shared by every M), or the last M checkpoints of the one run "
        "(`ensemble=checkpoints`). λ chosen per row on the validation images. Seconds: the "
        "fit, the retrained models' training included, plus the attributions; the retrained "
        "models' seconds were stored as they were trained, each job's compilation included "
        "(the curve's runs went up in M, each training only the models it added, so M > 2 "
        "counts several compilations: an upper bound on one run's cost).",
        "",
        *trak_findings(frame),
        "",
        markdown_table(
            trak_curves(frame)
            .drop(columns=["model", "source", "ensemble"])
            .assign(
                LDS=lambda f: [f"{v:.3f}" for v in f["LDS"]],
                damping=lambda f: [fmt(v) for v in f["damping"]],
            )
        )
        if (frame["method"] == "trak").any()
        else "(no TRAK rows: run `make lds`)",
        "",
        "![LDS against compute, against p̄, and TRAK's against M](figures/lds.png)",
        "",
        "## The ground truth: models retrained",
        "",
        "`train_many` (`ifscale/retraining.py`) trains `lds.parallel` models at once, "
        "vectorised over models in one compiled scan (logistic regression and the MLP: 10), "
        "or one at a time with its steps dispatched from Python (`cnn_small`: on this CPU a "
        "convolution runs several times slower inside a scan and vectorised over models). "
        "Compilation included; `train_loop` is the ordinary one-model training loop.",
        "",
        *(speed or ["- (no retraining in these runs: the ground truth came from the cache)"]),
        "",
        "## How the LDS moves with K (models retrained per subset)",
        "",
        *seeds_lines(seeds),
        "",
        "## Grids (validation LDS / test LDS of each setting; the best validation wins)",
        "",
        *grids,
        "",
        "Per method and setting: `results/lds.csv`.",
    ]
    (results / "lds.md").write_text("\n".join(text) + "\n")
    print((results / "lds.md").read_text())


def latest_retraining(name: str, outputs: Path) -> list[Path]:
    """The newest `stage=retrain` run folder of experiment `name` that trained models (a
    rerun over a stored ground truth trains none and times nothing): a list of one, or
    empty."""
    found = []
    for path in sorted((outputs / name).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        if metrics.get("stage") == "retrain" and metrics.get("retrained_models"):
            found.append(path.parent)
    return found[-1:]


def write_explanations(outputs: Path, results: Path, names: Sequence[str]) -> None:
    """Copies the newest finished run of each explanation experiment (one whose
    metrics.json, written last, exists) into results/<name>/ with a summary (README.md)
    written from its metrics.json and explanations.csv."""
    import shutil

    import pandas as pd

    from ifscale.reports.explain import explain_summary

    found = False
    for name in names:
        runs = sorted(p.parent for p in (outputs / name).glob("*/metrics.json"))
        unfinished = sorted(
            p.parent
            for p in (outputs / name).glob("*/explanations.csv")
            if not (p.parent / "metrics.json").exists()
        )
        if unfinished and (not runs or unfinished[-1] > runs[-1]):
            print(
                f"Skipping the unfinished run {unfinished[-1]} (no metrics.json)", file=sys.stderr
            )
        if not runs:
            continue
        found = True
        run = runs[-1]
        target = results / name
        target.mkdir(parents=True, exist_ok=True)
        for file in ("explanations.csv", "explanations.png", "explanations.md"):
            if (run / file).exists():
                shutil.copyfile(run / file, target / file)
        metrics = json.loads((run / "metrics.json").read_text())
        table = pd.read_csv(run / "explanations.csv")
        figure = "explanations.png" if (run / "explanations.png").exists() else None
        text = explain_summary(metrics, table, _relative(run), figure)
        (target / "README.md").write_text(text)
        print(f"wrote {target.name}/ from {run}")
    if not found:
        sys.exit(f"no finished explanation run under {outputs}/{{{','.join(names)}}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what",
        choices=["table1", "table2", "table3", "figures", "regimes", "readme", "explain", "lds"],
    )
    parser.add_argument("--sweep", type=Path, nargs="*", help="multirun folder(s) to read")
    parser.add_argument(
        "--check", type=Path, help="table1_check / table2_check / table3_check folder to add"
    )
    parser.add_argument("--seeds", type=Path, help="table1_seeds folder (Table 1 over more seeds)")
    parser.add_argument(
        "--baselines",
        type=Path,
        nargs="*",
        help="table2: the folders of its extra sweeps (table2_baselines: the loss rows; "
        "table2_kfac: the K-FAC rows); default: the newest of each",
    )
    parser.add_argument(
        "--experiment", help="regimes: the experiment's name (default regimes; regimes_memorised)"
    )
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--readme",
        type=Path,
        help="README to copy Table 1 into (default: README.md when --results is the "
        "project's results/; tables written elsewhere leave it alone)",
    )
    args = parser.parse_args()
    try:
        report(args)
    except Exception as e:
        found = os_error_in(e)
        if found is None:
            raise
        sys.exit(f"File system error: {os_error_line(found)}")


def report(args: argparse.Namespace) -> None:
    """Writes the report `args.what` into `args.results`, all of it or nothing: into a
    temporary folder first, whose files then replace their namesakes (`staged_files`); the
    README's copies are refreshed after."""
    readme = args.readme
    if readme is None and args.results.resolve() == (ROOT / "results").resolve():
        readme = ROOT / "README.md"
    if args.what == "readme":
        write_readme(readme or ROOT / "README.md", args.results)
        return
    with staged_files(args.results) as results:
        _write(args, results)
    # A table's report refreshes the README's copies (Table 1's table, every loss line).
    if readme is not None and args.what not in ("explain", "lds"):
        write_readme(readme, args.results, table1=args.what == "table1")


def _write(args: argparse.Namespace, results: Path) -> None:
    if args.what == "table1":
        sweep = complete(args.sweep[0]) if args.sweep else latest_sweep("table1", args.outputs)
        # The investigation sweep, when it was run (`make table1-check`).
        check = (args.check and complete(args.check)) or latest_sweep(
            "table1_check", args.outputs, required=False
        )
        # The fast rows over more seeds, when they were run (`make table1 SEEDS=3`).
        seeds = (args.seeds and complete(args.seeds)) or latest_sweep(
            "table1_seeds", args.outputs, required=False
        )
        write_table1(sweep.resolve(), results, check, seeds and seeds.resolve())
    elif args.what == "table2":
        sweep = complete(args.sweep[0]) if args.sweep else latest_sweep("table2", args.outputs)
        check = (args.check and complete(args.check)) or latest_sweep(
            "table2_check", args.outputs, required=False
        )
        if args.baselines:
            extra = [complete(folder) for folder in args.baselines]
        else:
            found = (
                latest_sweep(name, args.outputs, required=False)
                for name in ("table2_baselines", "table2_kfac")
            )
            extra = [folder for folder in found if folder]
        write_table2(sweep.resolve(), results, check, extra)
    elif args.what == "table3":
        sweep = complete(args.sweep[0]) if args.sweep else latest_sweep("table3", args.outputs)
        check = (args.check and complete(args.check)) or latest_sweep(
            "table3_check", args.outputs, required=False
        )
        write_table3(sweep.resolve(), results, check)
    elif args.what == "regimes":
        name = args.experiment or "regimes"
        sweep = complete(args.sweep[0]) if args.sweep else latest_sweep(name, args.outputs)
        write_regimes(sweep.resolve(), results, name)
    elif args.what == "explain":
        write_explanations(args.outputs, results, ["explain_mnist", "explain_translation"])
    elif args.what == "lds":
        names = (
            "lds_logreg",
            "lds_mlp",
            "lds_cnn",
            "lds_trak_logreg",
            "lds_trak_mlp",
            "lds_kfac_logreg",
            "lds_kfac_mlp",
            "lds_kfac_cnn",
        )
        sweeps = (
            [complete(s) for s in args.sweep]
            if args.sweep
            else [s for n in names if (s := latest_sweep(n, args.outputs, required=False))]
        )
        if not sweeps:
            raise SystemExit(f"No finished lds sweep under {args.outputs}/multirun; run make lds")
        names = sorted({run["experiment"] for s in sweeps for run in load_runs(s)})
        retrains = [r for n in names for r in latest_retraining(n, args.outputs)]
        seeds = None if args.sweep else latest_sweep("lds_seeds", args.outputs, required=False)
        write_lds([s.resolve() for s in sweeps], retrains, results, seeds and seeds.resolve())
    else:
        sweeps = (
            [complete(s) for s in args.sweep]
            if args.sweep
            else [
                latest_sweep("figures", args.outputs),
                latest_sweep("figures_baselines", args.outputs),
            ]
        )
        write_figures([s.resolve() for s in sweeps], results)


if __name__ == "__main__":
    main()
