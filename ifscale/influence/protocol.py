"""What every influence method offers, and all that the pipeline and the scoring engine may
rely on.

A method is a frozen dataclass of hyperparameters that subclasses `InfluenceMethod`:

    fit(task, params, batches, key, checkpoints=None) -> state   # one-time work, a pytree
    self_influence(state, batch) -> [b]                          # <g_x, H⁻¹ g_x>
    influence(state, train_batch, test_batch) -> [n_test, n_train]  # <g_z, H⁻¹ g_x>

and may override the optional members, which have working defaults here:

    test_side(state, test_batch) -> side   # what pairwise influence needs of test examples,
    influence_on(state, train_batch, side) # computed once: explaining m test examples costs
                                           # each training example one pass, whatever m
    prepare(state, batch, choices) -> state  # fix choices before scoring many batches
    choices(state) -> dict              # ... recorded with stored scores, made again later
    fitted_metrics(state) -> dict       # numbers of the fit worth reporting

Methods whose one-time work is a curvature spectrum that can be stored and reused
(Arnoldi, RandProj, Exact) subclass `SpectralMethod`, which splits `fit` into
`spectrum` (the expensive, cacheable part) and `from_spectrum` (cheap), and names in
`fit_fields` the hyperparameters the spectrum depends on. Methods whose stored fit is
another tree of arrays (K-FAC, EK-FAC: per-layer factors) subclass `FactoredMethod`, split
into `fit_arrays` and `from_arrays` the same way.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from ifscale.influence.sharding import Layout
    from ifscale.influence.task import Batch, ParamView, Task


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """Models a fit reads beside the trained one, params stacked on a leading [K] axis: the
    training checkpoints (TracIn, TRAK's ensemble over checkpoints, the training-dynamics
    baselines), with the learning rate in force at each ([K]); or, for a method whose
    `retrained_models` is above zero, the models the runner retrained for it (their `lrs`
    are ones)."""

    params: Any
    lrs: np.ndarray

    def evenly_spaced(self, k: int) -> np.ndarray:
        """[k] positions of k of them evenly spaced, ending with the last (k <= len)."""
        available = len(self.lrs)
        return np.round(np.linspace(available / k, available, k)).astype(int) - 1


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """The one-time, cacheable artifact of a spectral method: curvature values and their
    directions, sorted by decreasing |λ|. Selecting p̄ of them (and inverting) is cheap, so
    one fit serves every p̄ (Arnoldi, Exact).

    Attributes:
      values: [m] eigenvalues of H (Exact), Ritz values (Arnoldi) or eigenvalues of H̃
        (RandProj), float64.
      vectors: [k, padded] directions in parameter space, as rows, for the first k values
        (k <= m: Arnoldi stores only the top `keep`), laid out by a `Layout` (sharded over
        the mesh's `model` axis).
    """

    values: np.ndarray
    vectors: Any


class Resumable(Protocol):
    """Where a long fit keeps its progress, so that a killed fit resumes (a store implements
    it, e.g. `ifscale.cache.spectra.FitProgress`; it stores named arrays at a step and knows
    nothing of the method)."""

    #: steps between saves.
    every: int

    def save(self, step: int, arrays: dict[str, Any]) -> None:
        """Keeps `arrays` (JAX or NumPy arrays) as the state after `step` steps."""

    def load(self, target: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """(step, arrays) of the last save, restored like `target` (arrays or
        `jax.ShapeDtypeStruct`s with their shardings), or None."""


class InfluenceMethod(abc.ABC):
    """The interface of every influence method (see the module docstring)."""

    #: the registered name (`method.name` in configs).
    name: ClassVar[str]
    #: whether `fit` reads the fit batches (the baselines do not: no fit set is drawn).
    uses_fit_data: ClassVar[bool] = True
    #: whether `influence` between two examples is defined (not for per-example baselines).
    pairwise: ClassVar[bool] = True
    #: whether it is defined for classifiers only (a logit per class: the task's
    #: `error_norm`, `logit_margin` or `output`), so that other models are refused before
    #: training.
    classifiers_only: ClassVar[bool] = False

    @abc.abstractmethod
    def fit(
        self,
        task: Task,
        params: Any,
        batches: list[Batch],
        key: Any,
        checkpoints: Checkpoints | None = None,
    ) -> Any:
        """The fitted state (a pytree) from the trained `params`, the equally sized fit
        `batches` whose mean loss defines H, a PRNG `key`, and the training checkpoints
        (used by TracIn only)."""

    @abc.abstractmethod
    def self_influence(self, state: Any, batch: Batch) -> Any:
        """[b] self-influence of each example of `batch`."""

    @abc.abstractmethod
    def influence(self, state: Any, train_batch: Batch, test_batch: Batch) -> Any:
        """[n_test, n_train] influence of each training example on each test example:
        I(x, z) = <∇L(z), H⁻¹ ∇L(x)>, H the Hessian of the mean training loss. I > 0: x is a
        proponent of z (removing it raises L(z), by about I/n); I < 0: an opponent."""

    def test_side(self, state: Any, test_batch: Batch) -> Any:
        """What `influence_on` needs of the test examples, computed once for a whole pass
        over the training set (projected methods: M·(U∇L(z)); LISSA: H⁻¹∇L(z); TracIn: the
        test gradients at each checkpoint); by default the test batch itself."""
        return test_batch

    def influence_on(self, state: Any, train_batch: Batch, test_side: Any) -> Any:
        """[n_test, n_train] `influence`, with the test side from `test_side`."""
        return self.influence(state, train_batch, test_side)

    def measuring(self, state: Any, task: Task) -> Any:
        """The state whose test side (`test_side`) takes the gradients of `task`'s
        per-example function in place of the training loss: a measurement of the test
        examples, e.g. minus their margin (kronfluence's "measurement"; the linear
        datamodeling score, `ifscale.run.stages.lds`). The curvature and the training
        gradients do not change. `task` perturbs the same parameters."""
        raise NotImplementedError(f"{self.name} has no pairwise influence to measure")

    def prepare(
        self,
        state: Any,
        batch: Batch,
        choices: dict[str, Any] | None = None,
        mesh: Mesh | None = None,
    ) -> Any:
        """The state, ready to score many batches shaped like `batch` on `mesh` (default:
        one device), e.g. a projection route chosen and directions laid out; by default
        unchanged. `choices` (what `choices` returned for an earlier job of the same scoring)
        are made again instead of anew, so that every shard and every resumed run gives the
        same bits."""
        return state

    def choices(self, state: Any) -> dict[str, Any]:
        """The choices `prepare` made that can change the scores' last bits (e.g. the
        projection route chosen by timing), JSON-able; by default none."""
        return {}

    def fitted_metrics(self, state: Any) -> dict[str, Any]:
        """Numbers of the fitted state worth reporting (e.g. eigenvalues); by default none."""
        return {}

    def check_model(self, task: Task, shapes: Any, example: Batch) -> None:
        """Refuses (ConfigError naming the key), before any training, a model this method
        cannot score, from the shapes of its parameters (`jax.ShapeDtypeStruct`s) and a
        batch of its data; by default, a `curvature` option the task cannot define."""
        curvature = getattr(self, "curvature", None)
        if curvature is not None:
            task.with_curvature(curvature)

    def checkpoints_needed(self) -> int:
        """How many kept training checkpoints the fit reads (checked against
        `train.kept_checkpoints` before training); by default none."""
        return 0

    def retrained_models(self) -> tuple[int, float]:
        """(how many models, retrained from other seeds, the fit reads in `checkpoints`
        instead of the training checkpoints; the share of the training set each sees);
        by default (0, 1.0): none."""
        return 0, 1.0


class StoredFitMethod(InfluenceMethod):
    """A method whose one-time work is worth storing: the pipeline keys it by the trained
    model, the fit data and `fit_options` (`ifscale.cache.keys.fit_key`)."""

    #: the hyperparameters the stored fit depends on: it is reused by every setting that
    #: agrees on these (e.g. Arnoldi's n, but not p̄; K-FAC's Fisher, but not its damping).
    fit_fields: ClassVar[tuple[str, ...]] = ()

    def fit_options(self) -> dict[str, Any]:
        """The hyperparameters the stored fit depends on, by name (part of its cache key)."""
        return {name: getattr(self, name) for name in self.fit_fields}


class FactoredMethod(StoredFitMethod):
    """A method whose stored fit is a tree of arrays (K-FAC's per-layer factors), split as
    `fit_arrays` (the expensive, stored part) and `from_arrays` (cheap)."""

    @abc.abstractmethod
    def fit_arrays(self, view: ParamView, batches: list[Batch], key: Any) -> dict[str, Any]:
        """The stored part of the fit: a dict of lists of arrays (host or device)."""

    @abc.abstractmethod
    def from_arrays(self, view: ParamView, arrays: dict[str, Any], example: Batch) -> Any:
        """The fitted state for this method's settings from (possibly stored) arrays;
        `example` is a batch of the data (the model is traced on it, not run)."""

    def view_for(self, task: Task, params: Any, example: Batch) -> ParamView:
        """The parameters the fit covers (by default every parameter `task` perturbs)."""
        from ifscale.influence.task import ParamView

        return ParamView.create(task, params, example=example)

    def fit(self, task, params, batches, key, checkpoints=None):
        from ifscale.influence.hvp import device_batches

        batches = device_batches(batches)
        view = self.view_for(task, params, batches[0])
        return self.from_arrays(view, self.fit_arrays(view, batches, key), batches[0])


class SpectralMethod(StoredFitMethod):
    """A method whose one-time work is a `Spectrum`, cached by the pipeline."""

    #: steps between checkpoints of a resumable fit (None: the fit is not checkpointed).
    checkpoint_every: int | None = None

    @abc.abstractmethod
    def spectrum(
        self,
        view: ParamView,
        batches: list[Batch],
        key: Any,
        layout: Layout | None = None,
        progress: Resumable | None = None,
    ) -> Spectrum:
        """The expensive part of the fit: curvature values and directions, laid out by
        `layout` (default: the default mesh); `progress` checkpoints a long fit so that it
        resumes (methods without steps to resume ignore it)."""

    @abc.abstractmethod
    def from_spectrum(
        self, view: ParamView, spectrum: Spectrum, layout: Layout | None = None
    ) -> Any:
        """The fitted state for this method's settings from a (possibly cached) spectrum."""

    def fit(self, task, params, batches, key, checkpoints=None):
        from ifscale.influence.hvp import device_batches
        from ifscale.influence.task import ParamView

        view = ParamView.create(task, params, example=batches[0])
        return self.from_spectrum(view, self.spectrum(view, device_batches(batches), key))
