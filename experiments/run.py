"""Hydra entry point: one cell of an experiment.

python experiments/run.py experiment=train_small
python experiments/run.py -m model=cnn_small,cnn_large seed=0,1
python experiments/run.py -m experiment=train_large method=arnoldi stage=score \
    score.require_fit=true score.shards=4 'score.shard=range(4)' launcher=local
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.cli import one_line_errors, preflight
from ifscale import distributed
from ifscale.run.compose import build
from ifscale.run.pipeline import run

# An absolute path: the same whether this file runs as a script, as `python -m
# experiments.run`, or is imported (`experiments/merge.py`).
CONF = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(config_path=CONF, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    with one_line_errors():
        # A job with several tasks joins JAX's multi-process runtime before any JAX call.
        distributed.initialize()
        return run(build(cfg), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    preflight(sys.argv[1:])
    main()
