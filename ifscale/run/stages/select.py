"""`stage=select` (Table 3): the domain's data cleaning (`Domain.select`, translation:
`ifscale.domains.translation.selection`), the pool's self-influence scored like every
scoring (stored in chunks, so selections of several shares from the same scores score the
corpus once)."""

from __future__ import annotations

import logging

import numpy as np

from ifscale.config import RunConfig
from ifscale.run.context import Prepared
from ifscale.run.metrics import ScoreMetrics, SelectMetrics, written
from ifscale.run.stages import score
from ifscale.run.stages.result import StageResult
from ifscale.utils import check

log = logging.getLogger(__name__)


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    def score_pool(pool: np.ndarray):
        check(cfg.score.shards == 1, "score.shards", "selections score their pool in one job")
        record, table = score.score(cfg, prep, index=pool)
        return written(record), table

    metrics, scores = prep.domain.select(cfg, prep, score_pool)
    selected = {k: v for k, v in metrics.items() if k in SelectMetrics.__dataclass_fields__}
    pool = {k: v for k, v in metrics.items() if k not in selected}
    record = SelectMetrics(**selected)
    log.info(
        "selection %s (%.0f%% of the pairs): BLEU %.1f after %d steps, %.1f after %d",
        cfg.select.method,
        record.selected_percent,
        record.bleu_short,
        record.budget_short,
        record.bleu_long,
        record.budget_long,
    )
    tables = {} if scores is None else {"scores.csv": scores}
    return StageResult((ScoreMetrics(**pool), record), tables)
