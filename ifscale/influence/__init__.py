"""Influence methods behind one interface (`protocol`), and what they share."""

from ifscale.influence.methods import (
    EL2N,
    METHODS,
    AreaUnderMargin,
    Arnoldi,
    CheckpointLoss,
    Exact,
    GradientCosine,
    GradientDot,
    Lissa,
    LossBaseline,
    RandProj,
    TracIn,
    Trak,
    make_method,
)
from ifscale.influence.pairwise import TopInfluences, top_influences
from ifscale.influence.protocol import Checkpoints, InfluenceMethod, SpectralMethod, Spectrum
from ifscale.influence.scoring import ScoreResult, self_influence_scores, stream_scores
from ifscale.influence.task import ParamView, Task

__all__ = [
    "EL2N",
    "LossBaseline",
    "METHODS",
    "AreaUnderMargin",
    "Arnoldi",
    "CheckpointLoss",
    "Checkpoints",
    "Exact",
    "GradientCosine",
    "GradientDot",
    "InfluenceMethod",
    "Lissa",
    "ParamView",
    "RandProj",
    "ScoreResult",
    "SpectralMethod",
    "Spectrum",
    "Task",
    "TopInfluences",
    "TracIn",
    "Trak",
    "make_method",
    "self_influence_scores",
    "stream_scores",
    "top_influences",
]
