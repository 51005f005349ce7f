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

import logging

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
    domain, data = prep.domain, prep.data
    truth, stats = ground_truth(cfg, prep)
    measured = truth.mean(axis=1).T  # [m, M]: the mean over each subset's seeds
    test, validation = lds_examples(cfg, prep)
    index = np.concatenate([test, validation])
    subset_masks = masks(cfg, data.n_train)

    method = method_of(cfg)
    task = domain.task(prep.model, cfg)
    state, t_fit, hit = fit_method(cfg, prep, method, task)
    state = method.measuring(state, domain.retraining(prep.model, data, cfg).measurement)
    predicted, seconds = subset_sums(
        method,
        state,
        data.train_batch(np.arange(data.n_train)),
        domain.test_batch(data, index),
        subset_masks,
        batch_size=cfg.score.batch_size,
        progress=cfg.progress,
        mesh=run_mesh(cfg),
    )
    rho = spearman_rows(predicted, measured)
    lds, low, high = lds_interval(rho[: len(test)], cfg.lds.bootstrap, cfg.seed)
    random = stream_rng(cfg.seed, "lds-random").standard_normal((len(test), data.n_train))
    control = spearman_rows(subset_predictions(random, subset_masks), measured[: len(test)])
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
        t_attribute_s=seconds,
        **stats,
    )
    log.info(
        "%s: LDS %.3f [%.3f, %.3f] over %d test examples (validation %.3f, random %.3f; "
        "fit %.1fs, attributions %.1fs)",
        cfg.method.name,
        lds,
        low,
        high,
        record.lds_examples,
        record.lds_validation if record.lds_validation is not None else float("nan"),
        record.lds_random,
        t_fit,
        seconds,
    )
    table = pd.DataFrame(
        {
            "test_index": index,
            "split": ["test"] * len(test) + ["validation"] * len(validation),
            "rho": rho,
        }
    )
    fitted = ScoreMetrics(t_fit_s=t_fit, fit_cache_hit=hit, pbar=cfg.method.pbar)
    return StageResult((fitted, record), {"lds_examples.csv": table})


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None
