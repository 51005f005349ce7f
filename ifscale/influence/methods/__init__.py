"""Influence methods behind one interface (`ifscale.influence.protocol.InfluenceMethod`),
one module each, and the registry of all of them.

Every method is a frozen dataclass of hyperparameters whose `__post_init__` checks them
(raising `ConfigError` naming the config key); the runner, the tests and the benchmarks
never special-case a method. Exact, Arnoldi and RandProj share a state and its scoring
(`projected`), which TRAK applies to each model of its ensemble; LISSA, TracIn, K-FAC and
EK-FAC (`kfac`), the per-example baselines (loss, EL2N) and the training-dynamics baselines
over checkpoints (checkpoint_loss, aum) have their own.
"""

from __future__ import annotations

import dataclasses

from ifscale.influence.methods.arnoldi import Arnoldi
from ifscale.influence.methods.baselines import EL2N, LossBaseline
from ifscale.influence.methods.dynamics import AreaUnderMargin, CheckpointLoss
from ifscale.influence.methods.exact import Exact
from ifscale.influence.methods.kfac import Ekfac, Kfac
from ifscale.influence.methods.lissa import Lissa
from ifscale.influence.methods.projected import Projected, ProjectedState
from ifscale.influence.methods.randproj import RandProj
from ifscale.influence.methods.similarity import GradientCosine, GradientDot
from ifscale.influence.methods.tracin import TracIn
from ifscale.influence.methods.trak import Trak
from ifscale.utils import check

__all__ = [
    "EL2N",
    "METHODS",
    "AreaUnderMargin",
    "Arnoldi",
    "CheckpointLoss",
    "Ekfac",
    "Exact",
    "GradientCosine",
    "GradientDot",
    "Kfac",
    "Lissa",
    "LossBaseline",
    "Projected",
    "ProjectedState",
    "RandProj",
    "TracIn",
    "Trak",
    "make_method",
]

METHODS = {
    "loss": LossBaseline,
    "el2n": EL2N,
    "checkpoint_loss": CheckpointLoss,
    "aum": AreaUnderMargin,
    "exact": Exact,
    "arnoldi": Arnoldi,
    "randproj": RandProj,
    "lissa": Lissa,
    "kfac": Kfac,
    "ekfac": Ekfac,
    "tracin": TracIn,
    "trak": Trak,
    "graddot": GradientDot,
    "gradcos": GradientCosine,
}


def make_method(name: str, **options):
    """The method registered as `name` with its hyperparameters (validated)."""
    check(name in METHODS, "method.name", f"unknown method {name!r}; choose from {sorted(METHODS)}")
    fields = {f.name for f in dataclasses.fields(METHODS[name])}
    unknown = set(options) - fields
    check(
        not unknown,
        f"method.{sorted(unknown)[0] if unknown else ''}",
        f"not an option of {name}; options are {sorted(fields)}",
    )
    return METHODS[name](**options)
