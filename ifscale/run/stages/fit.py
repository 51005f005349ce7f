"""`stage=fit`: train (or reuse) the model and fit (or reuse) the method, nothing scored;
the fit is stored for the scoring jobs that follow (`score.require_fit`)."""

from __future__ import annotations

import logging

from ifscale.config import RunConfig
from ifscale.run.compose import method_of
from ifscale.run.context import Prepared
from ifscale.run.fitting import fit_method
from ifscale.run.metrics import ScoreMetrics
from ifscale.run.stages.result import StageResult

log = logging.getLogger(__name__)


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    task = prep.domain.task(prep.model, cfg)
    _, t_fit, hit = fit_method(cfg, prep, method_of(cfg), task)
    log.info("%s fit: %.1fs%s", cfg.method.name, t_fit, " (cached)" if hit else "")
    return StageResult((ScoreMetrics(t_fit_s=t_fit, fit_cache_hit=hit),))
