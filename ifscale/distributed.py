"""Several JAX processes in one job (JAX's own multi-process runtime, `jax.distributed`).

A job with several tasks (SLURM `ntasks` > 1, e.g. submitit's `tasks_per_node`, or the
`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` variables set by hand)
joins one runtime before any other JAX call (`initialize`). The fit's mesh then spans every
process's devices (Hessian-vector products data-parallel over all of them, gloo collectives
on CPU); scoring needs no collectives, so each process scores its own chunks on its own
devices (`local_mesh`) and writes them, and process 0 merges once all are written.
"""

from __future__ import annotations

import logging
import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifscale.influence.sharding import make_mesh
from ifscale.utils import check

log = logging.getLogger(__name__)

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def describes_job(env) -> bool:
    """Whether the environment `env` describes a job of several JAX processes."""
    if any(name in env for name in ENV):
        return True
    return "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1


def initialize() -> bool:
    """Joins the job's multi-process runtime when the environment describes one (call it
    before any other JAX call); returns whether it did."""
    env = os.environ
    given = [name for name in ENV if name in env]
    if given:
        check(
            len(given) == len(ENV),
            "environment",
            f"set all of {list(ENV)} for a multi-process job, not only {given}",
        )
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()  # JAX reads the SLURM variables itself
    else:
        return False
    log.info("JAX process %d of %d", jax.process_index(), jax.process_count())
    return True


def is_primary() -> bool:
    """Whether this is process 0 of the job (the one that writes what all share)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of the job reached `name` (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def local_mesh(model: int = 1) -> Mesh:
    """A mesh of this process's devices only (scoring: no cross-process collectives)."""
    return make_mesh(None, model, devices=jax.local_devices())


def localize(tree, mesh: Mesh):
    """`tree` with every array spanning other processes' devices replaced by its local copy,
    replicated on `mesh` (those arrays must be replicated: one process holds all of them)."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def local(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        check(
            x.is_fully_replicated,
            "mesh.model",
            "scoring in a multi-process job needs the eigenvectors on each process's own "
            "devices: keep mesh.model within one process",
        )
        return jax.device_put(x.addressable_data(0), replicated)

    return jax.tree_util.tree_map(local, tree)
