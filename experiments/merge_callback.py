"""A Hydra callback: at the end of a multirun, merge the jobs that scored shards.

Registered for every run in conf/config.yaml (`hydra.callbacks.merge_shards`). A sweep over
`score.shard` leaves one shard run per job; this gathers each config's shards (the jobs that
differ only in `score.shard`) into `<sweep dir>/merged/<k>/` with the library's merge
(`stage=merge`), as `experiments/merge.py` does by hand. A sweep without shard jobs is left
alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ifscale.cache.chunks import IncompleteScores
from ifscale.run.compose import from_dict
from ifscale.run.metrics import MISSING, RunMetrics
from ifscale.utils import ConfigError, canonical_json

log = logging.getLogger("ifscale.merge")


def shard_groups(sweep_dir: Path) -> list[dict[str, Any]]:
    """The configs (as dicts, `score.shard` dropped) of the sweep's shard jobs, one per
    distinct config, in job order."""
    groups: dict[str, dict[str, Any]] = {}
    for metrics_path in sorted(sweep_dir.glob("*/metrics.json")):
        if RunMetrics.load(metrics_path).shard is MISSING:  # not a shard job
            continue
        config = json.loads((metrics_path.parent / "config.json").read_text())
        config["score"].pop("shard")
        groups.setdefault(canonical_json(config), config)
    return list(groups.values())


def merge_sweep(sweep_dir: Path) -> list[Path]:
    """Merges every config's shards in `sweep_dir`; returns the merged run folders."""
    from ifscale.run.pipeline import run  # the library's merge; imported when there is work

    merged = []
    for k, config in enumerate(shard_groups(sweep_dir)):
        out = sweep_dir / "merged" / str(k)
        try:
            run(from_dict(config | {"stage": "merge"}), out)
        except (ConfigError, IncompleteScores) as e:
            log.error("Cannot merge %s: %s", out, e)
            continue
        log.info("Merged %d shards into %s", config["score"]["shards"], out)
        merged.append(out)
    return merged


class MergeShards(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        merge_sweep(Path(config.hydra.sweep.dir))
