"""`stage=merge`: gather the stored score chunks of every shard of a scoring into one run
(`experiments/merge.py`, or a multirun's callback). Nothing is fitted or scored: a missing
fit is refused before anything is read (`RunConfig.requires_stored_fit`), and missing
shards are named (`IncompleteScores`)."""

from __future__ import annotations

from ifscale.config import RunConfig
from ifscale.run.context import Prepared
from ifscale.run.stages import score
from ifscale.run.stages.result import StageResult


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    return score.run(cfg, prep)  # `score` gathers only, for stage=merge
