"""One run of an experiment: validate -> check the inputs -> prepare (data, noise, the
trained model, stored) -> the stage (`ifscale.run.stages.STAGES[cfg.stage]`) -> write.

Every stage goes through the run's domain of data (`ifscale.domains`) and the method's
interface (`ifscale.influence.protocol`), never asking which domain or method it has. The
Hydra entry point `experiments/run.py` only builds a `RunConfig` and calls `run`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jax

from ifscale.cache.atomic import write_text
from ifscale.config import RunConfig
from ifscale.models import count_params
from ifscale.run.compose import validate
from ifscale.run.context import Prepared, check_inputs, prepare
from ifscale.run.metrics import Closing, DataMetrics, RunInfo, RunMetrics
from ifscale.run.stages import STAGES, StageResult, check
from ifscale.utils import config_hash, describe_device, git_commit

log = logging.getLogger(__name__)


def run(cfg: RunConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Runs `cfg.stage` and writes its files into `run_dir`, `metrics.json` last; returns
    the metrics. `stage=check` writes nothing and returns what it checked. In a job of
    several processes only process 0 writes."""
    start = time.perf_counter()
    validate(cfg)
    inputs = check_inputs(cfg)
    if cfg.stage == "check":
        return check.run(cfg, inputs)
    prep = prepare(cfg, inputs)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trains_only = cfg.method.name == "none" and cfg.stage == "all"
    # retrain needs no method; lds and the others do (`RunConfig`).
    result = StageResult() if trains_only else STAGES[cfg.stage](cfg, prep)
    closing = Closing(stage=cfg.stage, wall_time_s=time.perf_counter() - start)
    if cfg.method.name != "none" and cfg.stage != "fit":
        closing.method_options = cfg.method.options()
    if cfg.method.name != "none" and cfg.stage in ("all", "score", "merge"):
        closing.layers = (
            list(cfg.method.layers) if isinstance(cfg.method.layers, tuple) else (cfg.method.layers)
        )
    record = RunMetrics.of(run_info(cfg, prep), data_metrics(cfg, prep), *result.records, closing)
    if jax.process_index() == 0:  # one writer per job
        write_run(run_dir, cfg, record, result)
    return record.to_dict()


def run_info(cfg: RunConfig, prep: Prepared) -> RunInfo:
    """What every run records."""
    info = prep.trained.info
    return RunInfo(
        experiment=cfg.name,
        dataset=cfg.dataset.name,
        model=cfg.model.name,
        n_params=count_params(prep.trained.params),
        n_train=prep.data.n_train,
        n_test=prep.domain.n_test(prep.data),
        noise={
            "kind": cfg.noise.kind,
            "rate": cfg.noise.rate,
            "n_noisy": int(prep.data.is_noisy.sum()),
        },
        method=cfg.method.name,
        seed=cfg.seed,
        test_accuracy=info.get("test_accuracy"),
        train_time_s=info["train_time_s"],
        train_steps=info["n_steps"],
        train_cache_hit=prep.cache_hit,
        device=describe_device(),
        config_hash=config_hash(reproducible_config(cfg)),
        train_key_hash=config_hash(prep.train_key),
        git_commit=git_commit(),
    )


def data_metrics(cfg: RunConfig, prep: Prepared) -> DataMetrics:
    """What the domain measures of its trained model and data."""
    return DataMetrics(**prep.domain.run_metrics(cfg, prep.data, prep.trained.info))


def reproducible_config(cfg: RunConfig) -> dict[str, Any]:
    """The config without machine-specific paths and display settings (for hashing)."""
    d = cfg.to_dict()
    for key in ("paths", "progress"):
        d.pop(key)
    for key in ("data_dir", "path", "extra_path"):
        d["dataset"].pop(key, None)
    return d


def write_run(run_dir: Path, cfg: RunConfig, record: RunMetrics, result: StageResult) -> None:
    """The stage's tables and views, the resolved config, then `metrics.json`, last and
    whole: a run folder with `metrics.json` is a finished run (the reports read only those)."""
    for name, table in result.tables.items():
        table.to_csv(run_dir / name, index=False)
    if result.views is not None:
        written = result.views(run_dir)
        log.info("explanations in %s", ", ".join([*result.tables, *written]))
    write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    write_text(run_dir / "metrics.json", record.to_json())
    log.info(
        "test accuracy %.4f (train %.1fs%s); metrics in %s",
        record.test_accuracy,
        record.train_time_s,
        ", cached" if record.train_cache_hit else "",
        run_dir / "metrics.json",
    )
