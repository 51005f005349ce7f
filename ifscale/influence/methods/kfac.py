"""K-FAC and EK-FAC: the Gauss–Newton matrix approximated layer by layer by Kronecker
factors (Martens & Grosse 2015; George et al. 2018; Grosse et al. 2023, kronfluence).

For a Dense or Conv layer whose per-example weight gradient is G = Σ_t x̃_t δ_tᵀ (x̃ its
input with a 1 appended for the bias, or the conv's patches, t over tokens or positions; δ
the gradient of the example's loss with respect to the layer's output), the layer's block
of the GGN, E[vec(G) vec(G)ᵀ], is approximated by A ⊗ S with

  A = E[x̃ x̃ᵀ]  (over examples and their tokens or positions),
  S = E[Σ_t δ_t δ_tᵀ]  (over examples; δ from targets drawn from the model's predictive
                        distribution: then E[δ δᵀ] is the GGN's output curvature),

so its eigenbasis is Q_A ⊗ Q_S and its eigenvalues λ_A λ_Sᵀ (K-FAC). EK-FAC keeps the basis
and fits the eigenvalues to the per-example gradients, Λ = E[(Q_Aᵀ G Q_S)²]: the diagonal
of the GGN in that basis. The inverse-curvature product of a layer's gradient is then

  H⁻¹ G = Q_A [(Q_Aᵀ G Q_S) / (Λ + l2 + λ)] Q_Sᵀ,

never a p × p matrix; layers are independent (the approximation is block diagonal).
Influence ⟨g_z, H⁻¹ g_x⟩ is computed in the rotated basis: each example's gradient is
rotated once, and a Dense layer on vectors (a rank-one gradient x̃ δᵀ) never forms it.

Damping λ is relative, `damping` times the mean of the layer's eigenvalues (kronfluence's
heuristic default, 0.1): eigenvalues of trained networks span many decades and many are
near zero, and a relative λ keeps every layer's inverse bounded by 1/λ without one absolute
number having to suit layers whose curvatures differ by orders of magnitude.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, ClassVar

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ifscale.influence import layerwise
from ifscale.influence.methods import kronecker
from ifscale.influence.protocol import FactoredMethod
from ifscale.influence.task import Batch, ParamView
from ifscale.utils import ConfigError, check

log = logging.getLogger(__name__)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KfacState:
    """A fitted (E)K-FAC: per layer the eigenbases of A and S, the eigenvalues Λ [a, s] of
    the layer's block in the basis Q_A ⊗ Q_S, and 1/(Λ + l2 + λ) (damped)."""

    view: ParamView
    qa: dict[str, jnp.ndarray]
    qs: dict[str, jnp.ndarray]
    values: dict[str, jnp.ndarray]
    inverse: dict[str, jnp.ndarray]
    groups: tuple[kronecker.LayerGroup, ...] = dataclasses.field(metadata={"static": True})
    measure: ParamView | None = None  # the test side's function (`measuring`); None: loss


@dataclasses.dataclass(frozen=True)
class Kfac(FactoredMethod):
    """K-FAC influence: the GGN approximated per Dense/Conv layer by A ⊗ S (module docstring).

    Attributes:
      damping: λ of each layer, relative to the mean of its eigenvalues (> 0).
      fisher: where the output gradients δ of S (and of EK-FAC's eigenvalues) come from:
        "sampled" (targets drawn from the model's predictive distribution, one draw per
        example and pass: an unbiased estimate of the GGN), "empirical" (the true labels:
        the empirical Fisher, which is not the GGN away from a perfect fit) or "exact" (the
        expectation over the model's distribution computed in closed form from the loss's
        Hessian in the outputs: one backward pass per output, up to 1,024 outputs).
      max_factor_size: refuse a layer whose activation or output factor has more rows
        (the factor is that size squared, twice with its eigenvectors).
      progress: progress bars over the fit batches.
    """

    damping: float = 0.1
    fisher: str = "sampled"
    max_factor_size: int = 16_384
    progress: bool = True
    name: ClassVar[str] = "kfac"
    fit_fields: ClassVar[tuple[str, ...]] = ("fisher",)
    #: whether the eigenvalues are fitted to the per-example gradients (EK-FAC).
    corrected: ClassVar[bool] = False

    def __post_init__(self):
        check(self.damping > 0, "method.damping", f"must be > 0, got {self.damping}")
        check(
            self.fisher in kronecker.FISHERS,
            "method.fisher",
            f"must be one of {kronecker.FISHERS}, got {self.fisher!r}",
        )
        check(self.max_factor_size >= 1, "method.max_factor_size", "must be >= 1")

    # -- fit ---------------------------------------------------------------------------

    def view_for(self, task, params, example) -> ParamView:
        """The perturbed parameters of supported (Dense, DenseGeneral, Conv) layers: those of
        other layers (embeddings, layer norms) are left out, as kronfluence does, and
        logged; a `method.layers` prefix that selects none of a supported layer is
        refused."""
        view = ParamView.create(task, params, example=example)
        if task.layerwise is None:
            raise ConfigError(
                "method.layers: K-FAC needs the model's per-layer capture (Task.layerwise: "
                "a Flax Linen or NNX model of Dense/Conv layers); this task has none"
            )
        specs = layerwise.layer_specs(task.layerwise, params, example)
        bad = set(layerwise.unsupported(specs, view.names))
        if not bad:
            return view
        kept = tuple(name for name in view.names if name not in bad)
        supported = sorted(k for k, v in specs.items() if v is not None)
        for prefix in task.layers or ():
            check(
                any(kronecker.selects(prefix, name) for name in kept),
                "method.layers",
                f"{prefix!r} selects no kernel or bias of a Dense or Conv layer K-FAC "
                f"supports; choose among {supported}",
            )
        check(kept, "method.layers", f"no Dense or Conv layer to factor; supported: {supported}")
        log.info(
            "%s: %d parameter arrays of other layers are left out (e.g. %s)",
            self.name,
            len(bad),
            ", ".join(sorted(bad)[:3]),
        )
        return ParamView.create(dataclasses.replace(task, layers=kept), params, example=example)

    def check_model(self, task, shapes, example) -> None:
        """The checks of the fit (layers, factor sizes, the Fisher), on traced parameters."""

        def trace(params):
            view = self.view_for(task, params, example)
            self._checked_groups(view, example)
            return view.theta

        jax.eval_shape(trace, shapes)

    def _checked_groups(self, view: ParamView, example) -> tuple[kronecker.LayerGroup, ...]:
        task = view.task
        groups = kronecker.layer_groups(view, example)
        for group in groups:
            for rows, what in ((group.inputs, "activation"), (group.outputs, "output")):
                check(
                    rows <= self.max_factor_size,
                    "method.max_factor_size",
                    f"layer {group.layer}'s {what} factor is {rows:,} x {rows:,} "
                    f"({rows * rows * view.dtype.itemsize / 2**20:,.0f} MiB); choose "
                    f"other method.layers or raise max_factor_size={self.max_factor_size:,}",
                )
        if self.fisher == "sampled":
            check(
                task.sample_targets is not None,
                "method.fisher",
                "sampled needs Task.sample_targets (draws from the model); use empirical",
            )
        if self.fisher == "exact":
            check(
                task.outputs is not None and task.loss_from_outputs is not None,
                "method.fisher",
                "exact needs Task.outputs and Task.loss_from_outputs; use sampled",
            )
        return groups

    def fit_arrays(self, view, batches, key) -> dict[str, list]:
        """Per layer (in `kronecker.layer_groups` order): the eigenvectors of A and S and the
        eigenvalues Λ [a, s] of the layer's block in their basis (undamped)."""
        groups = self._checked_groups(view, batches[0])
        n = sum(len(jax.tree_util.tree_leaves(b)[0]) for b in batches)
        keys = jax.random.split(key, 2 * len(batches))
        sums = None
        for i, batch in enumerate(self._bar(batches, "factors")):
            part = _factor_sums(view, groups, self.fisher, batch, keys[i])
            sums = part if sums is None else jax.tree_util.tree_map(jnp.add, sums, part)
        qa, qs, values = {}, {}, {}
        for group in groups:
            a_sum, s_sum, rows = sums[group.layer]
            la, qa[group.layer] = _eigh(a_sum / rows)
            ls, qs[group.layer] = _eigh(s_sum / n)
            values[group.layer] = jnp.outer(jnp.maximum(la, 0), jnp.maximum(ls, 0))
        if self.corrected:
            total = None
            for i, batch in enumerate(self._bar(batches, "eigenvalues")):
                part = _correction_sums(view, groups, self.fisher, qa, qs, batch, keys[-1 - i])
                total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
            values = {layer: v / n for layer, v in total.items()}
        for layer, v in values.items():
            check(
                bool(jnp.mean(v) > 0),
                "method.layers",
                f"layer {layer} has no curvature on the fit data (all its eigenvalues are 0)",
            )
        layers = [g.layer for g in groups]
        return {
            "qa": [qa[k] for k in layers],
            "qs": [qs[k] for k in layers],
            "values": [values[k] for k in layers],
        }

    def from_arrays(self, view, arrays, example) -> KfacState:
        """The state with this damping: 1/(Λ + l2 + damping · mean Λ) per layer."""
        groups = kronecker.layer_groups(view, example)
        check(
            len(arrays["values"]) == len(groups),
            "method.layers",
            f"the stored factors have {len(arrays['values'])} layers, the model {len(groups)}",
        )
        layers = [g.layer for g in groups]
        dtype = view.dtype

        def by_layer(name):
            return {k: jnp.asarray(a, dtype) for k, a in zip(layers, arrays[name], strict=True)}

        values = by_layer("values")
        inverse = {
            k: 1.0 / (v + view.task.l2 + self.damping * jnp.mean(v)) for k, v in values.items()
        }
        return KfacState(view, by_layer("qa"), by_layer("qs"), values, inverse, groups)

    def _bar(self, batches, what):
        return tqdm(batches, desc=f"{self.name} {what}", unit="batch", disable=not self.progress)

    # -- scores ------------------------------------------------------------------------

    def self_influence(self, state: KfacState, batch: Batch) -> jnp.ndarray:
        return _self_influence(state, batch)

    def test_side(self, state: KfacState, test_batch: Batch) -> dict[str, jnp.ndarray]:
        """Per layer [m, a, s]: each test gradient rotated and divided by Λ + l2 + λ."""
        return _test_side(state, test_batch)

    def influence_on(self, state: KfacState, train_batch: Batch, test_side) -> jnp.ndarray:
        return _influence_on(state, train_batch, test_side)

    def influence(self, state: KfacState, train_batch: Batch, test_batch: Batch):
        return self.influence_on(state, train_batch, self.test_side(state, test_batch))

    def measuring(self, state: KfacState, task) -> KfacState:
        measure = state.view.measuring(task)
        check(
            measure.per_layer,
            "lds.output",
            f"{self.name} needs the per-layer capture of the measured function too",
        )
        return dataclasses.replace(state, measure=measure)

    def prepare(self, state: KfacState, batch, choices=None, mesh=None) -> KfacState:
        """With a `model` axis on `mesh`, each layer's Q_A, Λ and inverse are split over it
        by rows (the activation side: the larger factor of a wide layer) where their row
        count divides evenly, so that a layer too large for one device is spread over
        several; the products are XLA's, the scores those of one device. The parameters
        stay replicated: laid out over `model` (`ParamView.laid_out`), the jitted test side
        of a Conv model on a CPU mesh of data 2 x model 2 with a replicated test batch came
        out wrong (1x4, 4x1, a data-split batch and the same captures outside that jit were
        right): an XLA fault on CPU, like the convolution fault of docs/scaling.md."""
        if mesh is None or mesh.shape.get("model", 1) == 1:
            return state
        model = mesh.shape["model"]
        rows = NamedSharding(mesh, PartitionSpec("model"))
        replicated = NamedSharding(mesh, PartitionSpec())

        def put(arrays):
            return {
                k: jax.device_put(a, rows if a.shape[0] % model == 0 else replicated)
                for k, a in arrays.items()
            }

        return dataclasses.replace(
            state, qa=put(state.qa), values=put(state.values), inverse=put(state.inverse)
        )

    def fitted_metrics(self, state: KfacState) -> dict[str, Any]:
        # The 100 largest eigenvalues of the block-diagonal approximation, all layers.
        values = np.concatenate([np.asarray(v, np.float64).ravel() for v in state.values.values()])
        return {
            "eigenvalues": np.sort(values)[::-1][:100].tolist(),
            # the parameters of the factored layers (others, e.g. embeddings, are left out)
            "n_perturbed_params": state.view.size,
        }

    def inverse_product(self, state: KfacState, vector: jnp.ndarray) -> jnp.ndarray:
        """[p] (Â + l2 + λ)⁻¹ v, Â the (E)K-FAC approximation, in the view's flat layout."""
        blocks = state.view.unravel(vector)
        out = {}
        for group in state.groups:
            g = kronecker.matrix_of(blocks, group)
            q_a, q_s = state.qa[group.layer], state.qs[group.layer]
            rotated = q_a.T @ g @ q_s * state.inverse[group.layer]
            out.update(kronecker.blocks_of(q_a @ rotated @ q_s.T, group))
        return jax.flatten_util.ravel_pytree({name: out[name] for name in state.view.names})[0]


@dataclasses.dataclass(frozen=True)
class Ekfac(Kfac):
    """EK-FAC influence: K-FAC's eigenbasis with eigenvalues fitted to the per-example
    gradients (one more pass over the fit data). See `Kfac` for the options."""

    name: ClassVar[str] = "ekfac"
    corrected: ClassVar[bool] = True


# -- layers ------------------------------------------------------------------------------


def _rotated(state: KfacState, group: kronecker.LayerGroup, inputs, delta):
    """The gradients in the eigenbasis: (x̃ Q_A, δ Q_S) or (Q_Aᵀ G Q_S, None)."""
    q_a, q_s = state.qa[group.layer], state.qs[group.layer]
    first, second = kronecker.gradient_parts(inputs, delta, group)
    if second is not None:
        return first @ q_a, second @ q_s
    return jnp.einsum("ja,bjk,ks->bas", q_a, first, q_s), None


def _eigh(matrix: jnp.ndarray):
    values, vectors = jnp.linalg.eigh(0.5 * (matrix + matrix.T))
    return values, vectors


@functools.partial(jax.jit, static_argnames=("groups", "fisher"))
def _factor_sums(view, groups, fisher, batch, key):
    """{layer: (Σ x̃ x̃ᵀ over examples and tokens, Σ δ δᵀ, the number of x̃ rows)}."""
    inputs, deltas, _ = kronecker.fisher_captures(view, fisher, batch, key)
    sums = {}
    for group in groups:
        x = kronecker.activations(inputs[group.layer], group.spec, group)
        a_sum = jnp.einsum("bta,btc->ac", x, x)
        s_sum = 0.0
        for d in deltas:
            d = kronecker.output_grads(d[group.layer], group)
            s_sum = s_sum + jnp.einsum("bts,btr->sr", d, d)
        sums[group.layer] = (a_sum, s_sum, jnp.asarray(x.shape[0] * x.shape[1], x.dtype))
    return sums


@functools.partial(jax.jit, static_argnames=("groups", "fisher"))
def _correction_sums(view, groups, fisher, qa, qs, batch, key):
    """{layer: Σ over examples of (Q_Aᵀ G Q_S)²} (EK-FAC's eigenvalues, times n)."""
    inputs, deltas, _ = kronecker.fisher_captures(view, fisher, batch, key)
    sums = {}
    state = KfacState(view, qa, qs, {}, {}, groups)
    for group in groups:
        total = 0.0
        for d in deltas:
            first, second = _rotated(state, group, inputs[group.layer], d[group.layer])
            if second is not None:
                total = total + (first * first).T @ (second * second)
            else:
                total = total + jnp.sum(first * first, axis=0)
        sums[group.layer] = total
    return sums


# -- scoring -------------------------------------------------------------------------------


def _captured(view: ParamView, batch: Batch):
    inputs, deltas, _ = view.task.layerwise.capture(view.params(view.theta), batch)
    return inputs, deltas


@jax.jit
def _self_influence(state: KfacState, batch):
    inputs, deltas = _captured(state.view, batch)
    total = 0.0
    for group in state.groups:
        first, second = _rotated(state, group, inputs[group.layer], deltas[group.layer])
        inv = state.inverse[group.layer]
        if second is not None:
            total = total + jnp.einsum("ba,as,bs->b", first * first, inv, second * second)
        else:
            total = total + jnp.einsum("bas,as->b", first * first, inv)
    return total


@jax.jit
def _test_side(state: KfacState, batch):
    inputs, deltas = _captured(state.measure or state.view, batch)
    side = {}
    for group in state.groups:
        first, second = _rotated(state, group, inputs[group.layer], deltas[group.layer])
        rotated = first[:, :, None] * second[:, None, :] if second is not None else first
        side[group.layer] = rotated * state.inverse[group.layer]
    return side


@jax.jit
def _influence_on(state: KfacState, batch, side):
    inputs, deltas = _captured(state.view, batch)
    total = 0.0
    for group in state.groups:
        first, second = _rotated(state, group, inputs[group.layer], deltas[group.layer])
        if second is not None:
            total = total + jnp.einsum("mas,na,ns->mn", side[group.layer], first, second)
        else:
            total = total + jnp.einsum("mas,nas->mn", side[group.layer], first)
    return total
