"""TRAK (Park et al., ICML 2023): random projections of the model output's gradients, a
Gauss–Newton kernel, an ensemble over models.

For one model θ, with f(x) the model's output (for a classifier the label's log-odds
log p/(1 − p), `Task.output`), P a seeded random k × p matrix and Φ the [n, k] projected
output gradients P∇f(x) of the n fit examples:

    τ(z, x) = (P g_z)ᵀ (ΦᵀΦ/n + λI)⁻¹ (P g_x)

where g_x = ∇L(x) is the training example's loss gradient and g_z the test example's
(or its measurement's, `measuring`). For a classifier's cross-entropy L = log(1 + e^(−f)),
so g_x = −(1 − p_x)∇f(x): TRAK's reweighting Q = diag(1 − p) of the training side is the
loss gradient itself, and with the test side measuring minus the margin f(z) (the LDS
stage, `lds.output=margin`) τ is TRAK's score exactly. ΦᵀΦ/n is the Gauss–Newton matrix of
the output with the output's curvature taken as 1 (TRAK's kernel), averaged over the fit
set so that it is in the units of the other methods' H (the mean loss's Hessian); λ is
added in those units. The ensemble averages τ over M models (the last M kept checkpoints
of the run, or the run's model and M − 1 models retrained from other seeds), each with
the same P, so an ensemble of identical models is one model.

In ifscale's terms each model's state is a `ProjectedState` with directions P and inner
matrix (ΦᵀΦ/n + λI)⁻¹ (a pseudo-inverse below `rcond`): its scoring, projection routes
(layerwise: no [b, p] array), test side and measuring are those of Arnoldi and RandProj.
TRAK's optional soft-thresholding of the scores is not applied.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ifscale.influence.methods.projected import (
    ProjectedScoring,
    ProjectedState,
    check_route,
    gram,
)
from ifscale.influence.protocol import Checkpoints, InfluenceMethod
from ifscale.influence.sharding import Layout
from ifscale.influence.task import Batch, ParamView, view_of_params
from ifscale.utils import check

PROJECTIONS = ("gaussian", "rademacher")
ENSEMBLES = ("checkpoints", "retrained")

_SCORING = ProjectedScoring()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrakState:
    """One `ProjectedState` per model of the ensemble (directions P, inner (ΦᵀΦ/n + λI)⁻¹)."""

    members: tuple[ProjectedState, ...]


@dataclasses.dataclass(frozen=True)
class Trak(InfluenceMethod):
    """TRAK: projected output gradients, the kernel (ΦᵀΦ/n + λI)⁻¹, an ensemble of models.

    Attributes:
      k: projection dimension.
      models: M, the models of the ensemble (1: the trained model alone).
      ensemble: where the M models come from: "checkpoints", the last M checkpoints kept
        by training (`train.kept_checkpoints` >= M; free); "retrained", the trained model
        and M − 1 models retrained from other seeds (`retrain_fraction` of the training
        set each; stored and reused, `ifscale.run.ensemble`).
      retrain_fraction: the share of the training set each retrained model sees (1.0:
        all of it; TRAK's ensembles often use halves).
      damping: λ, added to the kernel (in the units of ΦᵀΦ/n).
      projection: the random matrix's entries, "gaussian" N(0, 1/k) or "rademacher"
        ±1/√k (either way E[PᵀP] = I).
      rcond: relative cutoff of the kernel's pseudo-inverse (a singular kernel: k above the
        fit examples, or dead units).
      route: projection route (`ifscale.influence.projection`).
      progress: progress bar over the ensemble's models during the fit.
    """

    k: int = 100
    models: int = 1
    ensemble: str = "checkpoints"
    retrain_fraction: float = 1.0
    damping: float = 0.0
    projection: str = "gaussian"
    rcond: float = 1e-10
    route: str = "auto"
    progress: bool = True
    name: ClassVar[str] = "trak"
    classifiers_only: ClassVar[bool] = True

    def __post_init__(self):
        check(self.k >= 1, "method.k", f"must be >= 1, got {self.k}")
        check(self.models >= 1, "method.models", f"must be >= 1, got {self.models}")
        check(
            self.ensemble in ENSEMBLES,
            "method.ensemble",
            f"must be one of {ENSEMBLES}, got {self.ensemble!r}",
        )
        check(
            0 < self.retrain_fraction <= 1,
            "method.retrain_fraction",
            f"must be in (0, 1], got {self.retrain_fraction}",
        )
        check(self.damping >= 0, "method.damping", f"must be >= 0, got {self.damping}")
        check(
            self.projection in PROJECTIONS,
            "method.projection",
            f"must be one of {PROJECTIONS}, got {self.projection!r}",
        )
        check(self.rcond >= 0, "method.rcond", "must be >= 0")
        check_route(self.route)

    def checkpoints_needed(self) -> int:
        return self.models if self.ensemble == "checkpoints" and self.models > 1 else 0

    def retrained_models(self) -> tuple[int, float]:
        if self.ensemble == "retrained":
            return self.models - 1, self.retrain_fraction
        return 0, 1.0

    def fit(self, task, params, batches, key, checkpoints: Checkpoints | None = None):
        check(
            task.output is not None,
            "method.name",
            "trak needs the model's output function (a classifier's margin); this task has none",
        )
        check(len(batches) > 0, "method.fit_batches", "trak's kernel needs fit examples")
        view = ParamView.create(task, params, example=batches[0])
        check(
            self.k <= view.size,
            "method.k",
            f"{self.k} exceeds the {view.size} perturbed parameters",
        )
        views = [view] + [
            view_of_params(task, member, view) for member in self._others(checkpoints)
        ]
        layout = Layout.create(view.size)
        directions = _draw(key, self.k, view.size, self.projection, view.dtype, layout)
        members = []
        for member in tqdm(views, desc="trak", unit="model", disable=not self.progress):
            members.append(self._member(member, directions, batches, layout))
        return TrakState(tuple(members))

    def _others(self, checkpoints: Checkpoints | None) -> list:
        """The params of the ensemble's other M − 1 models (the trained model is the first):
        the M − 1 kept checkpoints before the last, or the retrained models."""
        if self.models == 1:
            return []
        what = "checkpoints" if self.ensemble == "checkpoints" else "retrained models"
        check(checkpoints is not None, "method.models", f"trak's ensemble needs the {what}")
        available = len(checkpoints.lrs)
        wanted = self.models if self.ensemble == "checkpoints" else self.models - 1
        check(
            wanted <= available,
            "method.models",
            f"{self.models} models requested but {available} {what} are available"
            + (" (raise train.kept_checkpoints)" if self.ensemble == "checkpoints" else ""),
        )
        if self.ensemble == "checkpoints":  # the last checkpoint is the trained model
            chosen = range(available - self.models, available - 1)
        else:
            chosen = range(wanted)
        return [jax.tree_util.tree_map(lambda a, i=i: a[i], checkpoints.params) for i in chosen]

    def _member(self, view: ParamView, directions, batches: list[Batch], layout: Layout):
        """One model's state: P and (ΦᵀΦ/n + λI)⁻¹ from its output gradients on the fit
        batches."""
        outputs = view.measuring(view.task.output)
        probe = ProjectedState(
            view=outputs,
            directions=directions,
            inner=jnp.zeros((0, 0), view.dtype),
            eigvals=jnp.zeros((0,), view.dtype),
            route=self.route,
            layout=layout,
        )
        probe = _SCORING.prepare(probe, batches[0])
        kernel = np.zeros((self.k, self.k), np.float64)
        count = 0
        for batch in batches:
            phi = _SCORING.projections(probe, batch)
            kernel += np.asarray(gram(phi.T, phi.T), np.float64)
            count += phi.shape[0]
        kernel = kernel / count + self.damping * np.eye(self.k)
        values, vectors = np.linalg.eigh(0.5 * (kernel + kernel.T))
        cutoff = self.rcond * np.abs(values).max(initial=0.0)
        inverse = np.where(values > cutoff, 1.0 / np.where(values > cutoff, values, 1.0), 0.0)
        inner = (vectors * inverse) @ vectors.T
        dtype = view.dtype
        return ProjectedState(
            view=view,
            directions=directions,
            inner=jnp.asarray(inner, dtype),
            eigvals=jnp.asarray(values[::-1], dtype),
            route=probe.route,
            layout=layout,
        )

    def self_influence(self, state: TrakState, batch: Batch) -> jnp.ndarray:
        return _mean(_SCORING.self_influence(m, batch) for m in state.members)

    def influence(self, state: TrakState, train_batch: Batch, test_batch: Batch):
        return self.influence_on(state, train_batch, self.test_side(state, test_batch))

    def test_side(self, state: TrakState, test_batch: Batch) -> list[jnp.ndarray]:
        return [_SCORING.test_side(m, test_batch) for m in state.members]

    def influence_on(self, state: TrakState, train_batch: Batch, test_side) -> jnp.ndarray:
        return _mean(
            _SCORING.influence_on(m, train_batch, side)
            for m, side in zip(state.members, test_side, strict=True)
        )

    def measuring(self, state: TrakState, task) -> TrakState:
        return TrakState(tuple(_SCORING.measuring(m, task) for m in state.members))

    def prepare(self, state: TrakState, batch: Batch, choices=None, mesh=None) -> TrakState:
        first = _SCORING.prepare(state.members[0], batch, choices, mesh)
        # One route for every model, and P laid out per layer once: every model shares it.
        rest = [
            dataclasses.replace(m, route=first.route, prepared=first.prepared)
            for m in state.members[1:]
        ]
        return TrakState((first, *rest))

    def choices(self, state: TrakState):
        return _SCORING.choices(state.members[0])

    def fitted_metrics(self, state: TrakState):
        # The first model's kernel eigenvalues (decreasing), for inspection.
        return {"eigenvalues": np.asarray(state.members[0].eigvals, np.float64).tolist()}


def _mean(values) -> jnp.ndarray:
    values = list(values)
    return sum(values[1:], values[0]) / len(values)


def _draw(key, k: int, size: int, projection: str, dtype, layout: Layout) -> jnp.ndarray:
    """P [k, padded]: entries N(0, 1/k) or ±1/√k, drawn in place on the layout's shards."""

    def sample(key):
        if projection == "gaussian":
            entries = jax.random.normal(key, (k, size), dtype)
        else:
            entries = jax.random.rademacher(key, (k, size), dtype)
        return layout.pad(entries)

    drawn = jax.jit(sample, out_shardings=layout.rows())(key)
    return drawn / np.sqrt(k).astype(dtype)
