"""Gathers the stored chunks of a sharded scoring into one run: scores.csv + metrics.json.

Give the same config as the shard jobs (any `score.shard`):

    python experiments/merge.py experiment=train_large method=arnoldi score.shards=8

which is `experiments/run.py ... stage=merge`. A multirun over `score.shard` merges by itself
at its end (`experiments.merge_callback.MergeShards`). Missing or unfinished shards, or a
missing fit, are named in one line (exit 2); nothing is fitted or scored.
"""

from __future__ import annotations

import sys

from experiments.cli import preflight
from experiments.run import main

if __name__ == "__main__":
    sys.argv.append("stage=merge")
    preflight(sys.argv[1:])
    main()
