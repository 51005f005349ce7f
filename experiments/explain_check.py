"""Explanations against reality (`make explain-check`): retraining without the training
examples a method names as proponents or opponents of a test prediction.

cnn_small on the 10% MNIST subset (6,000 images, 10% mislabeled; experiment=train_small, its
cached model is the explained one). For 6 test examples (the 3 misclassified ones of highest
loss and 3 random correctly classified ones) each method (Arnoldi p̄ = 100, TracIn [1], Exact
p̄ = 100: H over the Figures' 1,280 seeded examples, their cached fits) names the top k = 50
proponents and opponents of the test loss (at the test label). The model is then retrained
without each group, and without k random examples (3 draws, the control), with 2 training
seeds, and each test loss is compared with a retraining that removes nothing (same seed).
A removal zeroes the examples' weight in the loss, so the retraining sees the same batches
in the same order otherwise: the only difference is the removed examples.

Also the mislabel check: for the misclassified test examples (explained at the predicted
class c'), the share of their top-20 proponents that are training images mislabeled as c',
against that share in the training set.

Writes results/explain.md and results/explain.csv.

    python experiments/explain_check.py [--seeds 2] [--k 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from experiments import cli  # composes configs as the command line does
from ifscale.influence import top_influences
from ifscale.models import init_params
from ifscale.run.compose import build_method, method_config
from ifscale.run.context import prepare
from ifscale.run.fitting import fit_method
from ifscale.run.stages.explain import explained_batch
from ifscale.train import cross_entropy, train_loop
from ifscale.utils import describe_device, stream_key, stream_rng

ROOT = Path(__file__).resolve().parent

FIT = {"fit_batch_size": 128, "fit_batches": 10}  # the Figures' H (their cached fits)
METHODS = {
    "arnoldi": ("Arnoldi p̄=100", method_config("arnoldi", n=400, keep=200, pbar=100, **FIT)),
    "tracin": ("TracIn [1]", method_config("tracin", checkpoints=1, **FIT)),
    "exact": ("Exact p̄=100", method_config("exact", pbar=100, **FIT)),
}


def retrain(prep, cfg, weights: np.ndarray, seed: int):
    """cnn_small trained as the explained model was, with per-example loss weights (0 =
    removed), so batches and their order do not change."""
    data, model = prep.data, prep.model

    def loss_fn(params, batch, key):
        x, y, w = batch
        losses = cross_entropy(model.apply({"params": params}, x), y)
        return (w * losses).sum() / jax.numpy.maximum(w.sum(), 1.0)

    params = init_params(model, data.input_shape, stream_key(seed, "init"))
    arrays = (data.x_train, data.y_train, weights.astype(np.float32))
    return train_loop(params, loss_fn, arrays, cfg.train, seed, progress=False).params


def test_loss(prep, params, index) -> np.ndarray:
    x, y = prep.domain.test_batch(prep.data, index)
    return np.asarray(cross_entropy(prep.model.apply({"params": params}, x), y), np.float64)


def choose_tests(prep, count: int) -> np.ndarray:
    params = prep.trained.params
    correct = prep.domain.correct(prep.model, params, prep.data)
    every = np.arange(len(correct))
    losses = test_loss(prep, params, every)
    wrong = np.flatnonzero(~correct)
    wrong = wrong[np.argsort(-losses[wrong])][: count // 2]
    right = stream_rng(0, "explain-check").choice(
        np.flatnonzero(correct), count - len(wrong), False
    )
    return np.concatenate([wrong, np.sort(right)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--tests", type=int, default=6)
    parser.add_argument("--random-draws", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="of " + ",".join(METHODS))
    parser.add_argument("--out", default=str(ROOT.parent / "results" / "explain"))
    parser.add_argument("overrides", nargs="*", help="extra config overrides")
    args = parser.parse_args()
    start = time.perf_counter()
    cfg = cli.compose_run(["experiment=train_small", "progress=false", *args.overrides])
    prep = prepare(cfg)
    n = prep.data.n_train
    tests = choose_tests(prep, args.tests)
    print(f"explaining test examples {tests.tolist()} (first {args.tests // 2} misclassified)")

    groups = []  # (method, test, kind, positions, predicted change)
    mislabel = []
    chosen = [METHODS[name] for name in args.methods.split(",")]
    for label, mcfg in chosen:
        run_cfg = dataclasses.replace(cfg, method=mcfg)
        method = build_method(mcfg, progress=False)
        state, _, _ = fit_method(run_cfg, prep, method, prep.domain.task(prep.model, run_cfg))
        label_cfg = dataclasses.replace(
            run_cfg, explain=dataclasses.replace(run_cfg.explain, target="label")
        )
        train = prep.data.train_batch(np.arange(n))
        top = top_influences(
            method, state, train, explained_batch(label_cfg, prep, tests), k=args.k, progress=False
        )
        for row, z in enumerate(tests):
            for kind, pos, score in (
                ("proponents", top.proponents[row], top.proponent_scores[row]),
                ("opponents", top.opponents[row], top.opponent_scores[row]),
            ):
                groups.append((label, int(z), kind, pos, float(score.sum()) / n))
        mislabel.append(mislabel_check(prep, run_cfg, method, state, train, label))
        print(f"{label}: explained ({time.perf_counter() - start:.0f}s)")
    rng = stream_rng(0, "explain-check-random")
    randoms = [rng.choice(n, args.k, replace=False) for _ in range(args.random_draws)]

    reference = {
        s: test_loss(prep, retrain(prep, cfg, np.ones(n), s), tests) for s in range(args.seeds)
    }
    rows = []

    def removed(positions, seed):
        weights = np.ones(n)
        weights[positions] = 0.0
        return test_loss(prep, retrain(prep, cfg, weights, seed), tests) - reference[seed]

    for draw, positions in enumerate(randoms):
        changes = np.mean([removed(positions, s) for s in range(args.seeds)], axis=0)
        for row, z in enumerate(tests):
            rows.append(
                dict(
                    method="random",
                    test=int(z),
                    group=f"random {draw}",
                    change=changes[row],
                    predicted=np.nan,
                )
            )
    for label, z, kind, positions, predicted in groups:
        row = int(np.flatnonzero(tests == z)[0])
        change = float(np.mean([removed(positions, s)[row] for s in range(args.seeds)]))
        rows.append(dict(method=label, test=z, group=kind, change=change, predicted=predicted))
        print(
            f"{label} test {z} without {kind}: {change:+.4f} (predicted {predicted:+.4f}) "
            f"({time.perf_counter() - start:.0f}s)"
        )
    table = pd.DataFrame(rows)
    labels = [label for label, _ in chosen]
    write_report(
        table, pd.DataFrame(mislabel), tests, prep, args, labels, time.perf_counter() - start
    )


def mislabel_check(prep, cfg, method, state, train, label: str) -> dict:
    """Top-20 proponents of each misclassified test example (explained at its predicted
    class c'): the share mislabeled as c', against the share of the training set."""
    data = prep.data
    correct = prep.domain.correct(prep.model, prep.trained.params, data)
    wrong = np.flatnonzero(~correct)
    predicted_cfg = dataclasses.replace(
        cfg, explain=dataclasses.replace(cfg.explain, target="prediction")
    )
    batch = explained_batch(predicted_cfg, prep, wrong)
    top = top_influences(method, state, train, batch, k=20, progress=False)
    shares, base = [], []
    for row, c in enumerate(np.asarray(batch[1])):
        mislabeled_as_c = data.is_noisy & (data.y_train == c)
        shares.append(mislabeled_as_c[top.proponents[row]].mean())
        base.append(mislabeled_as_c.mean())
    return {
        "method": label,
        "test examples": len(wrong),
        "share": float(np.mean(shares)),
        "base rate": float(np.mean(base)),
    }


def _mean_sd(values) -> str:
    return f"{values.mean():+.4f} ± {values.std():.4f}"


def write_report(table, mislabel, tests, prep, args, methods, seconds: float) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    random = table[table.method == "random"]
    lines = [
        "# Explanations against retraining",
        "",
        "Produced by `make explain-check` (`python experiments/explain_check.py`); do not "
        "edit by hand.",
        f"Hardware: {describe_device()}; {seconds / 60:.1f} minutes.",
        "",
        f"cnn_small on 6,000 MNIST images (10% mislabeled), explained model test accuracy "
        f"{prep.trained.info.get('test_accuracy', float('nan')):.2%}. Test examples "
        f"{tests.tolist()}: the first {args.tests // 2} misclassified (highest loss), the rest "
        "correctly classified (random). For each, the model is retrained without the method's "
        f"top k = {args.k} proponents, or opponents, of the test loss (at the test label), and "
        f"without k random training examples ({args.random_draws} draws); `change` is the test "
        f"loss after minus the test loss of a retraining that removes nothing, averaged over "
        f"{args.seeds} training seeds. Removal zeroes the examples' loss weight (same batches, "
        "same order otherwise). `predicted`: the sum of the group's influence / n.",
        "",
        "## Mean change of the test loss (over the test examples)",
        "",
        "`> random`, `< random`: test examples where removing the method's group moved the "
        "loss more than removing k random examples (mean of the draws). Spearman: between "
        "the predicted and the actual change over the method's groups (proponents and "
        "opponents of every test example).",
        "",
        "| method | without proponents | without opponents | without k random | "
        "proponents > random | opponents < random | Spearman |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = random.groupby("test")["change"].mean()
    for label in methods:
        part = table[table.method == label]
        pro = part[part.group == "proponents"].set_index("test")["change"]
        opp = part[part.group == "opponents"].set_index("test")["change"]
        rho = spearmanr(part["predicted"], part["change"]).statistic
        lines.append(
            f"| {label} | {_mean_sd(pro)} | {_mean_sd(opp)} | {_mean_sd(base)} | "
            f"{int((pro > base[pro.index]).sum())} of {len(pro)} | "
            f"{int((opp < base[opp.index]).sum())} of {len(opp)} | {rho:+.2f} |"
        )
    lines += [
        "",
        "## Per test example",
        "",
        "| test | "
        + " | ".join(f"{m} {g}" for m in methods for g in ("pro", "opp"))
        + " | random |",
        "| --- " * (2 * len(methods) + 2) + "|",
    ]
    for z in tests:
        cells = []
        for label in methods:
            for group in ("proponents", "opponents"):
                match = (table.method == label) & (table.test == z) & (table.group == group)
                cells.append(f"{float(table[match]['change'].iloc[0]):+.4f}")
        lines.append(f"| {z} | " + " | ".join(cells) + f" | {base[z]:+.4f} |")
    lines += [
        "",
        "## Mislabel check",
        "",
        "For every misclassified test example (explained at its predicted class c'), the share of "
        "its top-20 proponents that are training images mislabeled as c', against the share of "
        "such images in the training set.",
        "",
        "| method | misclassified test examples | top-20 proponents mislabeled as c' | base rate |",
        "| --- | --- | --- | --- |",
    ]
    for _, r in mislabel.iterrows():
        lines.append(
            f"| {r['method']} | {r['test examples']} | {r['share']:.1%} | {r['base rate']:.1%} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
