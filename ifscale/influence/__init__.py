"""Influence methods behind one interface (`protocol`), and what they share."""

from ifscale.influence.methods import (
    EL2N,
    METHODS,
    AreaUnderMargin,
    Arnoldi,
    CheckpointLoss,
    Ekfac,
    Exact,
    GradientCosine,
    GradientDot,
    Kfac,
    Lissa,
    LossBaseline,
    RandProj,
    TracIn,
    Trak,
    make_method,
)
from ifscale.influence.pairwise import TopInfluences, top_influences
from ifscale.influence.protocol import (
    Checkpoints,
    FactoredMethod,
    InfluenceMethod,
    SpectralMethod,
    Spectrum,
)
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
    "Ekfac",
    "Exact",
    "FactoredMethod",
    "GradientCosine",
    "GradientDot",
    "InfluenceMethod",
    "Kfac",
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
