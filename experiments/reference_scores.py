"""Small reference runs whose outputs must not change when the code is reorganised.

Runs a fixed set of small configs through the command line (`experiments/run.py`) with a
fresh, private cache and keeps each run's `scores.csv` and the numbers of `metrics.json`
that a refactor must not move. Run it before and after a change and compare:

    python experiments/reference_scores.py save /tmp/before      # on the old commit
    python experiments/reference_scores.py save /tmp/after       # on the new one
    python experiments/reference_scores.py compare /tmp/before /tmp/after

`compare` exits 1 unless every `scores.csv` is byte-identical and every kept metric equal.
On a CPU the same config gives the same scores bit for bit, so equality is exact.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMAGES = [
    "dataset=mnist_10pct",
    "model=cnn_small",
    "train.epochs=2",
    "train.kept_checkpoints=10",
    "score.max_examples=300",
    "method.fit_batch_size=64",
    "method.fit_batches=4",
]
TEXT = [
    "dataset=multi30k",
    "dataset.train_size=400",
    "dataset.test_size=40",
    "dataset.vocab_size=600",
    "noise=permute",
    "model=transformer_tiny",
    "train=transformer",
    "train.epochs=2",
    "train.warmup_steps=10",
    "method.fit_batch_size=32",
    "method.fit_batches=2",
    "score.batch_size=64",
]
SELECTION = [
    "dataset=noisy_parallel_text",
    "dataset.train_size=300",
    "dataset.extra_train_size=100",
    "dataset.test_size=40",
    "dataset.vocab_size=600",
    "noise=crawl",
    "model=transformer_tiny",
    "train=transformer",
    "train.epochs=1",
    "train.warmup_steps=5",
    "method.fit_batch_size=32",
    "method.fit_batches=2",
    "score.batch_size=64",
    "stage=select",
    "select.method=influence",
    "select.fraction=0.5",
    "select.budget_short=5",
    "select.budget_long=10",
]

# Projection routes are pinned: "auto" picks the fastest by timing, which may differ
# between runs (and so may the last bits of the scores).
GRAD, JVP = "method.route=grad", "method.route=jvp"
RUNS = {
    "cnn_small_arnoldi": [*IMAGES, "method=arnoldi", "method.n=30", "method.pbar=10", GRAD],
    "cnn_small_randproj": [*IMAGES, "method=randproj", "method.pbar=10", "method.route=layerwise"],
    "cnn_small_tracin": [*IMAGES, "method=tracin", "method.checkpoints=5"],
    "cnn_small_lissa": [*IMAGES, "method=lissa", "method.r=3", "score.max_examples=100"],
    "cnn_small_exact": [*IMAGES, "method=exact", "method.pbar=20", "method.max_params=3000", JVP],
    "transformer_tiny_arnoldi": [*TEXT, "method=arnoldi", "method.n=12", "method.pbar=6", GRAD],
    "table3_selection": [*SELECTION, "method=arnoldi", "method.n=10", "method.pbar=5", GRAD],
}

# Numbers of metrics.json that depend only on the config (no timings, paths or commits).
KEPT = (
    "auc",
    "ap",
    "n_scored",
    "n_noisy_scored",
    "test_accuracy",
    "bleu",
    "eigenvalues",
    "n_selected",
    "bleu_short",
    "bleu_long",
    "kept_percent_by_kind",
)


def save(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.environ.get("IFSCALE_DATA_DIR", ROOT / ".cache" / "data")).resolve()
    with tempfile.TemporaryDirectory(prefix="ifscale-reference-") as tmp:
        env = os.environ | {
            "IFSCALE_CACHE_DIR": str(Path(tmp) / "cache"),
            "IFSCALE_DATA_DIR": str(data_dir),
        }
        for name, overrides in RUNS.items():
            run_dir = Path(tmp) / name
            command = [
                sys.executable,
                str(ROOT / "experiments" / "run.py"),
                *overrides,
                f"name=reference_{name}",
                "progress=false",
                f"hydra.run.dir={run_dir}",
            ]
            print(f"{name}: {' '.join(overrides)}", flush=True)
            subprocess.run(command, env=env, check=True, cwd=ROOT)
            shutil.copy(run_dir / "scores.csv", out / f"{name}.scores.csv")
            metrics = json.loads((run_dir / "metrics.json").read_text())
            kept = {k: metrics[k] for k in KEPT if k in metrics}
            (out / f"{name}.metrics.json").write_text(json.dumps(kept, indent=2) + "\n")


def compare(before: Path, after: Path) -> int:
    failures = 0
    for name in RUNS:
        for suffix in ("scores.csv", "metrics.json"):
            a, b = before / f"{name}.{suffix}", after / f"{name}.{suffix}"
            same = a.read_bytes() == b.read_bytes()
            failures += not same
            print(f"{'identical' if same else 'DIFFERENT'}  {name}.{suffix}")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("save").add_argument("folder", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "save":
        save(args.folder)
    else:
        sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
