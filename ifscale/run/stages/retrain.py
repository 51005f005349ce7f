"""`stage=retrain`: the ground truth of the linear datamodeling score, trained and stored
(`ifscale.run.groundtruth`); with `score.shards` > 1 only this job's chunks of subsets.
Every method's `stage=lds` then reuses it."""

from __future__ import annotations

import logging

from ifscale.config import RunConfig
from ifscale.run.context import Prepared
from ifscale.run.groundtruth import ground_truth
from ifscale.run.metrics import LdsMetrics
from ifscale.run.stages.result import StageResult

log = logging.getLogger(__name__)


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    _, stats = ground_truth(cfg, prep)
    if stats["retrained_models"]:
        log.info(
            "retrained %d models in %.1fs (%.2f models/s, compilation included)",
            stats["retrained_models"],
            stats["retrain_seconds"],
            stats["retrained_models"] / stats["retrain_seconds"],
        )
    record = LdsMetrics(
        lds_subsets=cfg.lds.subsets,
        lds_fraction=cfg.lds.fraction,
        lds_seeds=cfg.lds.seeds,
        lds_output=cfg.lds.output,
        **stats,
    )
    return StageResult((record,))
