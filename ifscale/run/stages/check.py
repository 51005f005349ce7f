"""`stage=check`: load and check the data, the model and the config (`check_inputs`), log
what a run would use, and stop: nothing is trained or written."""

from __future__ import annotations

import logging
from typing import Any

from ifscale.config import RunConfig
from ifscale.models import count_params
from ifscale.run.context import Inputs

log = logging.getLogger(__name__)


def run(cfg: RunConfig, inputs: Inputs) -> dict[str, Any]:
    data, shapes = inputs.data, inputs.shapes
    summary = {
        "stage": "check",
        "dataset": cfg.dataset.name,
        "n_train": data.n_train,
        "n_noisy": int(data.is_noisy.sum()),
        "n_test": inputs.domain.n_test(data),
        "model": cfg.model.name,
        "n_params": None if shapes is None else count_params(shapes),
        "method": cfg.method.name,
    }
    log.info("check passed: %s", ", ".join(f"{k}={v}" for k, v in summary.items()))
    return summary
