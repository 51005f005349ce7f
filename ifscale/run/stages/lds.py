"""`stage=lds`: a method's attributions scored by the linear datamodeling score.

The method is fitted on the model trained on every example (or its stored fit is reused);
its test side measures the ground truth's output (`Domain.retraining().measurement`:
minus the output, so that a positive attribution predicts a higher output); every training
example is streamed once against all measured test examples, summed into each subset's
prediction (`ifscale.influence.pairwise.subset_sums`); the LDS of a test example is
Spearman's ρ between those predictions and the retrained models' outputs (mean over the K
seeds of each subset). Reported: the mean over the test examples with a 95% bootstrap
interval, the mean over the validation examples (which choose hyperparameters: the report
picks, per method, the setting with the best validation LDS), and the LDS of seeded random
attributions (≈ 0: a control). Missing ground-truth chunks are trained first.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pandas as pd

from ifscale.config import RunConfig
from ifscale.influence.lds import lds_interval, spearman_rows, subset_predictions
from ifscale.influence.pairwise import subset_sums
from ifscale.run.compose import method_of
from ifscale.run.context import Prepared
from ifscale.run.fitting import fit_method
from ifscale.run.groundtruth import ground_truth, lds_examples, masks
from ifscale.run.mesh import run_mesh
from ifscale.run.metrics import LdsMetrics, ScoreMetrics
from ifscale.run.stages.result import StageResult
from ifscale.utils import stream_rng

log = logging.getLogger(__name__)


def run(cfg: RunConfig, prep: Prepared) -> StageResult:
    data = prep.data
    truth, stats = ground_truth(cfg, prep)  # [M, K, m]
    test, validation = lds_examples(cfg, prep)
    subset_masks = masks(cfg, data.n_train)
    measured = truth.mean(axis=1).T  # [m, M]: the mean over each subset's seeds
    points = _grid(cfg)
    scored = [
        _score(cfg.replace_method(point) if point else cfg, prep, subset_masks, measured)
        for point in points
    ]
    validations = [
        np.nanmean(rho[len(test) :]) if len(validation) else np.nan for rho, *_ in scored
    ]
    best = int(np.nanargmax(validations)) if np.isfinite(validations).any() else 0
    rho, predicted, t_fit, hit, seconds, fitted = scored[best]
    lds, low, high = lds_interval(rho[: len(test)], cfg.lds.bootstrap, cfg.seed)
    random = stream_rng(cfg.seed, "lds-random").standard_normal((len(test), data.n_train))
    control = spearman_rows(subset_predictions(random, subset_masks), measured[: len(test)])
    extra = {}
    if points != [{}]:
        extra["lds_choice"] = points[best]
        extra["lds_grid"] = [
            point | {"validation": _mean(r[len(test) :]), "test": _mean(r[: len(test)])}
            for point, (r, *_) in zip(points, scored, strict=True)
        ]
    if cfg.lds.seeds > 1:  # how the LDS moves with the seeds averaged per subset
        extra["lds_by_seeds"] = [
            _mean(spearman_rows(predicted[: len(test)], truth[:, :k, : len(test)].mean(1).T))
            for k in range(1, cfg.lds.seeds + 1)
        ]
    record = LdsMetrics(
        lds=lds,
        lds_low=low,
        lds_high=high,
        lds_validation=_mean(rho[len(test) :]),
        lds_random=_mean(control),
        lds_examples=int(np.isfinite(rho[: len(test)]).sum()),
        lds_validation_examples=len(validation),
        lds_subsets=cfg.lds.subsets,
        lds_fraction=cfg.lds.fraction,
        lds_seeds=cfg.lds.seeds,
        lds_output=cfg.lds.output,
        **extra,
        t_attribute_s=seconds,
        **stats,
    )
    log.info(
        "%s%s: LDS %.3f [%.3f, %.3f] over %d test examples (validation %s, random %.3f; "
        "fit %.1fs, attributions %.1fs)",
        cfg.method.name,
        f" {points[best]}" if points[best] else "",
        lds,
        low,
        high,
        record.lds_examples,
        f"{record.lds_validation:.3f}" if record.lds_validation is not None else "none",
        record.lds_random,
        t_fit,
        seconds,
    )
    table = pd.DataFrame(
        {
            "test_index": np.concatenate([test, validation]),
            "split": ["test"] * len(test) + ["validation"] * len(validation),
            "rho": rho,
        }
    )
    fit = ScoreMetrics(t_fit_s=t_fit, fit_cache_hit=hit, pbar=cfg.method.pbar, **fitted)
    return StageResult((fit, record), {"lds_examples.csv": table})


def _grid(cfg: RunConfig) -> list[dict[str, Any]]:
    """Every combination of the values of `lds.grid` ([{}] without one)."""
    names = list(cfg.lds.grid)
    values = [cfg.lds.grid[name] for name in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _score(cfg: RunConfig, prep: Prepared, subset_masks: np.ndarray, measured: np.ndarray):
    """(ρ [m] of every measured example, the predictions [m, M], fit seconds, whether the
    fit was stored, attribution seconds, the fit's numbers worth reporting: the eigenvalues)
    of the method of `cfg`."""
    domain, data = prep.domain, prep.data
    test, validation = lds_examples(cfg, prep)
    method = method_of(cfg)
    state, t_fit, hit = fit_method(cfg, prep, method, domain.task(prep.model, cfg))
    state = method.measuring(state, domain.retraining(prep.model, data, cfg).measurement)
    predicted, seconds = subset_sums(
        method,
        state,
        data.train_batch(np.arange(data.n_train)),
        domain.test_batch(data, np.concatenate([test, validation])),
        subset_masks,
        batch_size=cfg.score.batch_size,
        progress=cfg.progress,
        mesh=run_mesh(cfg),
    )
    fitted = method.fitted_metrics(state)
    return spearman_rows(predicted, measured), predicted, t_fit, hit, seconds, fitted


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None
