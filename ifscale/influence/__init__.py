"""Influence methods behind one interface (see `methods`), and what they share."""

from ifscale.influence.methods import (
    METHODS,
    Arnoldi,
    Checkpoints,
    Exact,
    Lissa,
    RandProj,
    Spectrum,
    TracIn,
    make_method,
)
from ifscale.influence.scoring import ScoreResult, self_influence_scores, stream_scores
from ifscale.influence.task import ParamView, Task

__all__ = [
    "METHODS",
    "Arnoldi",
    "Checkpoints",
    "Exact",
    "Lissa",
    "ParamView",
    "RandProj",
    "ScoreResult",
    "Spectrum",
    "Task",
    "TracIn",
    "make_method",
    "self_influence_scores",
    "stream_scores",
]
