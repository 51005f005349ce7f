"""Readable views of a run's `explanations.csv` (`stage=explain`), written into its run
folder: a figure where the examples are pictures (images), a Markdown table of text
(translation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SHOWN = 6  # proponents and opponents drawn per test example
# Test examples drawn at most (the figure's size and memory stay bounded; the CSV has all).
MAX_DRAWN = 32


def image_explanations(
    table: pd.DataFrame,
    test_pictures: dict[int, np.ndarray],
    train_pictures: dict[int, np.ndarray],
    path: Path,
    shown: int = SHOWN,
    most: int = MAX_DRAWN,
) -> None:
    """One row per test example (the first `most` of them): the image (label, prediction),
    then its top proponents and top opponents with their given and true labels; mislabeled
    training images are framed red. `test_pictures` and `train_pictures` hold the images
    [h, w, c] by test index and by training example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = list(dict.fromkeys(table["test_index"]))
    if len(tests) > most:
        tests = tests[:most]
    cols = 1 + 2 * shown
    fig, axes = plt.subplots(
        len(tests), cols, figsize=(1.25 * cols, 1.45 * len(tests)), squeeze=False
    )
    for row, z in enumerate(tests):
        rows = table[table["test_index"] == z]
        first = rows.iloc[0]
        _show(
            axes[row, 0],
            test_pictures[z],
            f"test {z}\ny={first.test_label} ŷ={first.test_prediction}",
        )
        axes[row, 0].set_title(axes[row, 0].get_title(), fontsize=7, color="navy")
        for offset, which in ((1, "proponent"), (1 + shown, "opponent")):
            picked = rows[rows["kind"] == which].head(shown)
            for col, (_, r) in enumerate(picked.iterrows()):
                ax = axes[row, offset + col]
                mark = f"{r.label} (true {r.clean_label})" if r.is_noisy else f"{r.label}"
                _show(ax, train_pictures[r.train_example], f"{which[:3]} {r['rank']}: {mark}")
                if r.is_noisy:
                    for spine in ax.spines.values():
                        spine.set(visible=True, color="red", linewidth=2)
            for col in range(len(picked), shown):
                axes[row, offset + col].axis("off")
    every = len(set(table["test_index"]))
    fig.suptitle(
        "Test images (left), their top proponents (I > 0) and top opponents (I < 0); "
        "label shown as given (true label if mislabeled, framed red)"
        + (
            f"; the first {len(tests)} of {every} test images (all in the CSV)"
            if every > len(tests)
            else ""
        ),
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _show(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(np.asarray(image)[..., 0], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(title, fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def text_explanations(table: pd.DataFrame, shown: int = 3, most: int = MAX_DRAWN) -> str:
    """Markdown: each test pair (the first `most`: source, reference, translation), then
    its top proponents and opponents (source, target as trained, noise kind, influence)."""
    lines = ["# Explanations", ""]
    tests = list(dict.fromkeys(table["test_index"]))
    if len(tests) > most:
        lines += [f"The first {most} of {len(tests)} test pairs (all in explanations.csv).", ""]
        table = table[table["test_index"].isin(tests[:most])]
    lines += [
        "For each test pair, the training pairs whose removal would most raise its loss "
        "(proponents, I > 0) and most lower it (opponents, I < 0). `noise` is the pair's "
        "noise kind (`clean` or how it was corrupted).",
        "",
    ]
    for z, rows in table.groupby("test_index", sort=False):
        first = rows.iloc[0]
        lines += [
            f"## Test pair {z}",
            "",
            f"- source: {_cell(first.test_source)}",
            f"- reference: {_cell(first.test_reference)}",
            f"- translation: {_cell(first.test_translation)}",
            "",
            "| kind | rank | influence | noise | source | target |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for which in ("proponent", "opponent"):
            for _, r in rows[rows["kind"] == which].head(shown).iterrows():
                lines.append(
                    f"| {which} | {r['rank']} | {r.influence:.4g} | {r.noise_kind} | "
                    f"{_cell(r.source)} | {_cell(r.target)} |"
                )
        lines.append("")
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
