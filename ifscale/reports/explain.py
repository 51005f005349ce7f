"""The summary of an explanation run (`stage=explain`) for `results/explain_<data>/`."""

from __future__ import annotations

import pandas as pd


def explain_summary(metrics: dict, table: pd.DataFrame, run: str, figure: str | None) -> str:
    """results/explain_<data>/README.md: what an explanation run explained, how fast, and
    how many mislabeled or noisy training examples its proponents and opponents hold."""
    k = metrics["explain_top_k"]
    target = (
        "make explain" if metrics["experiment"] == "explain_mnist" else "make explain-translation"
    )
    lines = [
        f"# Explanations: {metrics['experiment']}",
        "",
        f"Produced by `{target}` from `{run}` (`python experiments/report.py explain`); do not "
        "edit by hand.",
        "",
        f"- Model: {metrics['model']} ({metrics['n_params']:,} parameters) on "
        f"{metrics['dataset']}, {metrics['n_train']:,} training examples of which "
        f"{metrics['noise']['n_noisy']:,} noisy.",
        f"- Method: {metrics['method']} {metrics.get('method_options', {})}; "
        f"{len(metrics['explain_test_indices'])} test examples "
        f"({metrics.get('explain_select') or 'explain.test_indices'}), each explained at its "
        f"{'predicted class' if metrics['explain_target'] == 'prediction' else 'label'}; "
        f"top {k} proponents (I > 0) and opponents (I < 0) among all training examples.",
        f"- Speed: {metrics['explain_examples_per_s']:,.0f} training examples/s against all "
        f"test examples at once ({metrics['explain_seconds']:.1f} s, compilation excluded); "
        f"self-influence in the same run: {metrics['self_influence_examples_per_s']:,.0f} "
        f"examples/s, so an explanation costs {metrics['explain_cost_ratio']:.2f}x a "
        "self-influence score per training example.",
        f"- Hardware: {metrics['device']}.",
        "",
        "Noisy training examples among each test example's top proponents and opponents:",
        "",
        "| test example | proponents noisy | opponents noisy |",
        "| --- | --- | --- |",
    ]
    for z, rows in table.groupby("test_index", sort=False):
        pro = rows[rows["kind"] == "proponent"]["is_noisy"]
        opp = rows[rows["kind"] == "opponent"]["is_noisy"]
        lines.append(f"| {z} | {int(pro.sum())} of {len(pro)} | {int(opp.sum())} of {len(opp)} |")
    noisy_share = metrics["noise"]["n_noisy"] / metrics["n_train"]
    lines += ["", f"Share of noisy examples in the training set: {noisy_share:.1%}."]
    if figure:
        lines += ["", f"![explanations]({figure})"]
    else:
        lines += ["", "The pairs themselves: [explanations.md](explanations.md)."]
    return "\n".join(lines) + "\n"
