"""Influence methods behind one interface (`ifscale.influence.protocol.InfluenceMethod`),
one module each, and the registry of all of them.

Every method is a frozen dataclass of hyperparameters whose `__post_init__` checks them
(raising `ConfigError` naming the config key); the runner, the tests and the benchmarks
never special-case a method. Exact, Arnoldi and RandProj share a state and its scoring
(`projected`); LISSA, TracIn and the per-example baselines (loss, EL2N) have their own.
"""

from __future__ import annotations

import dataclasses

from ifscale.influence.methods.arnoldi import Arnoldi
from ifscale.influence.methods.baselines import EL2N, LossBaseline
from ifscale.influence.methods.exact import Exact
from ifscale.influence.methods.lissa import Lissa
from ifscale.influence.methods.projected import Projected, ProjectedState
from ifscale.influence.methods.randproj import RandProj
from ifscale.influence.methods.similarity import GradientCosine, GradientDot
from ifscale.influence.methods.tracin import TracIn
from ifscale.utils import check

__all__ = [
    "EL2N",
    "METHODS",
    "Arnoldi",
    "Exact",
    "GradientCosine",
    "GradientDot",
    "Lissa",
    "LossBaseline",
    "Projected",
    "ProjectedState",
    "RandProj",
    "TracIn",
    "make_method",
]

METHODS = {
    "loss": LossBaseline,
    "el2n": EL2N,
    "exact": Exact,
    "arnoldi": Arnoldi,
    "randproj": RandProj,
    "lissa": Lissa,
    "tracin": TracIn,
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
