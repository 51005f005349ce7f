"""The stages of a run, one module each, and the table that picks one by `stage`.

Every stage but `check` takes the run's config and its prepared data and model
(`ifscale.run.context.Prepared`) and returns a `StageResult`: its metrics (records of
`ifscale.run.metrics`) and the tables and views it wants written into the run folder, which
the pipeline writes (`ifscale.run.pipeline`). `check` stops before anything is trained.
"""

from __future__ import annotations

from ifscale.run.stages import explain, fit, lds, merge, retrain, score, select
from ifscale.run.stages.result import StageResult

__all__ = ["STAGES", "StageResult"]

# stage -> its code; "all" and "score" are one stage (score.require_fit makes the
# difference: a scoring job that must not fit).
STAGES = {
    "all": score.run,
    "score": score.run,
    "fit": fit.run,
    "merge": merge.run,
    "explain": explain.run,
    "select": select.run,
    "retrain": retrain.run,
    "lds": lds.run,
}
