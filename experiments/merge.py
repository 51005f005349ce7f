"""Gathers the stored chunks of a sharded scoring into one run: scores.csv + metrics.json.

Give the same config as the shard jobs (any `score.shard`):

    python experiments/merge.py experiment=train_large method=arnoldi score.shards=8

A multirun over `score.shard` merges by itself at its end (`merge_callback.MergeShards`).
Missing or unfinished shards are named in one line (exit 2); nothing is fitted or scored.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as entry  # noqa: E402  (registers the schema and the project_root resolver)

from ifscale.config import build  # noqa: E402
from ifscale.pipeline import run  # noqa: E402


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    with entry.one_line_errors():
        return run(build(cfg), HydraConfig.get().runtime.output_dir, merge=True)


if __name__ == "__main__":
    entry.preflight(sys.argv[1:])
    main()
