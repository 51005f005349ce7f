"""The run's device mesh (`mesh.data` x `mesh.model`, `ifscale.influence.sharding`)."""

from __future__ import annotations

from jax.sharding import Mesh

from ifscale.config import RunConfig
from ifscale.distributed import local_mesh
from ifscale.influence.sharding import make_mesh


def run_mesh(cfg: RunConfig) -> Mesh:
    """The mesh of `cfg.mesh` over every device of the job (ConfigError naming the key when
    it does not fit them)."""
    return make_mesh(cfg.mesh.data, cfg.mesh.model)


def scoring_mesh(cfg: RunConfig, processes: int) -> Mesh:
    """Where this process scores: the run's mesh, or in a job of several processes (no
    collectives while scoring) this process's own devices."""
    return local_mesh(cfg.mesh.model) if processes > 1 else run_mesh(cfg)
