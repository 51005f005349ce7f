"""The parameters split over a mesh's `model` axis (`ParamView.laid_out`) change no score.

Every method that curves (Arnoldi in blocks, RandProj, Exact, LISSA, K-FAC) and TracIn, on
4 simulated CPU devices (a subprocess: XLA_FLAGS is read when JAX starts) with meshes
(data, model) = (2, 2) and (1, 4) against one device, float64: the Ritz values, self-influence
and pairwise scores agree to 1e-10; and the bytes each device holds of the parameters,
measured on their shards, are the padded share of θ plus each frozen parameter's share.
In `make test-slow` (2 min); `tests/test_sharding.py` checks Arnoldi and RandProj with the
parameters split in `make test`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.simulated_devices import json_from_script

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MESHES = ("2x2", "1x4")

SCRIPT = """
import dataclasses, json, sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import flax.linen as nn
from tests.test_kfac import classify, flax_task
from ifscale.influence import (Arnoldi, Checkpoints, Exact, Kfac, Lissa, ParamView, RandProj,
                               TracIn, top_influences)
from ifscale.influence.hvp import device_batches
from ifscale.influence.scoring import self_influence_scores
from ifscale.influence.sharding import Layout, bytes_per_device, make_mesh

class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = jnp.tanh(nn.Dense(8)(x))  # Dense_0
        return nn.Dense(3)(hidden)  # Dense_1

rng = np.random.default_rng(0)
data = (rng.normal(size=(48, 6)), rng.integers(0, 3, 48))
model = MLP()
params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64) * 1.5,
                                model.init(jax.random.key(1), data[0][:1])["params"])
task = flax_task(model, classify, l2=0.05)
# The perturbed part: the second layer (the first is frozen, its kernel [6, 8] split).
sub = dataclasses.replace(task, layers=("Dense_1",))
test = (data[0][:5], data[1][:5])
stack = jax.tree_util.tree_map(lambda a: np.stack([0.9 * a, a]), params)
ckpt = Checkpoints(stack, np.array([0.2, 0.1]))
out = {}
for shape in ((1, 1), (2, 2), (1, 4)):
    mesh = make_mesh(*shape)
    mesh_key = f"{shape[0]}x{shape[1]}"
    for task_key, t in (("all", task), ("sub", sub)):
        view = ParamView.create(t, params, example=data).laid_out(mesh)
        layout = Layout.create(view.size, mesh)
        fit = device_batches([data], layout.batch())
        res = {"values_bytes": max(bytes_per_device(view.values).values()),
               "frozen_bytes": sum(max(bytes_per_device(a).values()) for a in view.frozen.values()),
               "size": view.size, "padded": layout.padded,
               "frozen_sizes": [int(a.size) for a in view.frozen.values()]}
        spectral = {"arnoldi": Arnoldi(n=12, pbar=6, keep=8, block=2, progress=False),
                    "randproj": RandProj(pbar=6, rcond=0.0, progress=False),
                    "exact": Exact(progress=False)}
        for name, m in spectral.items():
            spectrum = m.spectrum(view, fit, jax.random.key(0), layout)
            state = m.from_spectrum(view, spectrum, layout)
            res[name + "-values"] = np.asarray(spectrum.values).tolist()
            res[name + "-self"] = self_influence_scores(
                m, state, data, batch_size=16, progress=False, mesh=mesh).scores.tolist()
            top = top_influences(m, state, data, test, k=5, batch_size=16, progress=False,
                                 mesh=mesh)
            res[name + "-top"] = top.proponent_scores.tolist()
        fitted = {"lissa": Lissa(r=20, scale=10.0, damping=0.01, progress=False),
                  "kfac": Kfac(fisher="empirical", progress=False),
                  "tracin": TracIn(checkpoints=2)}
        for name, m in fitted.items():
            state = m.fit(t, params, [data], jax.random.key(0), ckpt)
            res[name + "-self"] = self_influence_scores(
                m, state, data, batch_size=16, progress=False, mesh=mesh).scores.tolist()
            top = top_influences(m, state, data, test, k=5, batch_size=16, progress=False,
                                 mesh=mesh)
            res[name + "-top"] = top.proponent_scores.tolist()
            prepared = m.prepare(state, data, mesh=mesh)
            sharding = prepared.view.values.sharding
            res[name + "-values-sharding"] = str(getattr(sharding, "spec", sharding))
        out[f"{mesh_key}-{task_key}"] = res
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results():
    return json_from_script(SCRIPT, str(ROOT), devices=4, timeout=600)


def _relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("which", ["all", "sub"])
def test_parameters_split_over_model_give_the_scores_of_one_device(results, mesh, which):
    got, want = results[f"{mesh}-{which}"], results[f"1x1-{which}"]
    for name in ("arnoldi", "randproj", "exact"):
        assert _relative(got[name + "-values"], want[name + "-values"]) < 1e-10, name
    for name in ("arnoldi", "randproj", "exact", "lissa", "kfac", "tracin"):
        assert _relative(got[name + "-self"], want[name + "-self"]) < 1e-10, name
        assert _relative(got[name + "-top"], want[name + "-top"]) < 1e-10, name
        if name in ("lissa", "tracin"):  # laid out by `prepare` (K-FAC's stay replicated)
            assert got[name + "-values-sharding"] == "P('model',)", name


@pytest.mark.parametrize("which", ["all", "sub"])
def test_each_device_holds_its_share_of_the_parameters(results, which):
    one = results[f"1x1-{which}"]
    assert one["values_bytes"] == one["size"] * 8  # float64, whole, unpadded
    for mesh in MESHES:
        got = results[f"{mesh}-{which}"]
        model = int(mesh.split("x")[1])
        assert got["padded"] == 1024
        assert got["values_bytes"] == 1024 // model * 8
        # the frozen first layer: its kernel [6, 8] split on the axis of 8, its 8 biases too
        if which == "sub":
            assert got["frozen_sizes"] == [8, 48]
            assert got["frozen_bytes"] == (8 + 48) // model * 8
        else:
            assert got["frozen_bytes"] == 0
