"""`stage=retrain`: the ground truth of the linear datamodeling score, trained and stored
(`ifscale.run.groundtruth`); with `score.shards` > 1 only this job's chunks of subsets.
Every method's `stage=lds` then reuses it. For a method whose fit reads models retrained
from other seeds (TRAK with `method.ensemble=retrained`), those models too (this shard's
contiguous range of them; `ifscale.run.ensemble`)."""

from __future__ import annotations

import logging

from ifscale.cache.chunks import ChunkPlan
from ifscale.config import RunConfig
from ifscale.run.compose import method_of
from ifscale.run.context import Prepared
from ifscale.run.ensemble import train_ensemble
from ifscale.run.groundtruth import ground_truth
from ifscale.run.metrics import LdsMetrics
from ifscale.run.stages.result import StageResult

log = logging.getLogger(__name__)


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    count, fraction = (0, 1.0) if cfg.method.name == "none" else method_of(cfg).retrained_models()
    if count:
        plan = ChunkPlan(count, 1)
        models = plan.shard(cfg.score.shard, cfg.score.shards)
        spent = train_ensemble(cfg, prep, count, fraction, models)
        log.info(
            "ensemble: models %d-%d of %d stored (%d trained in %.1fs)",
            models.start,
            models.stop - 1,
            count,
            spent["ensemble_models_trained"],
            spent["ensemble_train_seconds"],
        )
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
