"""Hydra entry point: one cell of an experiment.

python experiments/run.py experiment=train_small
python experiments/run.py -m model=cnn_small,cnn_large seed=0,1
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ifscale.config import RunConfig
from ifscale.pipeline import run
from ifscale.utils import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
log = logging.getLogger("ifscale.run")
# JAX logs at INFO that it found no TPU; Hydra's INFO root logger would show it on every run.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    try:
        run_cfg = RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))
        return run(run_cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        # One clear line naming the key, not a traceback from deep inside the stack.
        log.error("Bad configuration: %s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
