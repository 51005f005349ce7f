"""The parameter axis (of the parameters and of the basis) sharded over a `model` mesh axis
changes no score: fits, scores and stored spectra on meshes (data, model) = (1, 1), (1, 4),
(2, 2), (4, 1) of 4 simulated CPU devices (tests/sharding_checks.py, in a subprocess:
XLA_FLAGS is read when JAX starts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.simulated_devices import simulated_devices_env

ROOT = Path(__file__).resolve().parents[1]
MESHES = ("1x1", "1x4", "2x2", "4x1")
# float64 on CPU: a sharded reduction only reorders sums.
RTOL = 1e-10


def _run_checks(tmp_path_factory, problems):
    out = tmp_path_factory.mktemp("sharding") / "results.json"
    env = simulated_devices_env(4, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sharding_checks.py"), str(out), *problems],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["devices"] == 4
    return results


# The CNN (jvp route) in `make test`; the Transformer (the same checks, grad route, twice the
# time) in `make test-slow`.
PROBLEMS = (
    "cnn_small",
    pytest.param("transformer_tiny", marks=pytest.mark.slow),
)


@pytest.fixture(scope="module")
def meshes(tmp_path_factory, request):
    return _run_checks(tmp_path_factory, [request.param])


def _problem(results) -> str:
    (name,) = (k for k in results if k != "devices")
    return name


def _relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _subspace_gap(u, v) -> float:
    """1 - the smallest cosine of the principal angles between the row spaces."""
    u, v = np.asarray(u), np.asarray(v)
    u = np.linalg.qr(u.T)[0]
    v = np.linalg.qr(v.T)[0]
    return float(1 - np.linalg.svd(u.T @ v, compute_uv=False).min())


@pytest.mark.parametrize("meshes", PROBLEMS, indirect=True)
@pytest.mark.parametrize("mesh", MESHES[1:])
@pytest.mark.parametrize("method", ["arnoldi", "randproj"])
def test_sharded_fit_and_scores_equal_the_unsharded(meshes, mesh, method):
    got, want = meshes[_problem(meshes)][mesh][method], meshes[_problem(meshes)]["1x1"][method]
    assert _relative(got["values"], want["values"]) < RTOL
    assert _subspace_gap(got["vectors"], want["vectors"]) < 1e-10
    assert _relative(got["self"], want["self"]) < 1e-8
    assert _relative(got["pairs"], want["pairs"]) < 1e-8


@pytest.mark.parametrize("meshes", PROBLEMS, indirect=True)
def test_directions_stay_sharded_over_model(meshes):
    for mesh in ("1x4", "2x2"):
        for method in ("arnoldi", "randproj"):
            assert "model" in meshes[_problem(meshes)][mesh][method]["sharding"], (mesh, method)


@pytest.mark.parametrize("meshes", PROBLEMS, indirect=True)
def test_each_of_four_model_devices_holds_a_quarter_of_the_basis(meshes):
    one, four = meshes[_problem(meshes)]["1x1"], meshes[_problem(meshes)]["1x4"]
    ratio = four["basis_bytes_per_device"] / one["basis_bytes_per_device"]
    # A quarter of the padded width (zeros up to a multiple of 1024 parameters).
    assert ratio == pytest.approx(four["padded"] / one["padded"] / 4)
    assert 0.25 <= ratio < 0.3


@pytest.mark.parametrize("meshes", PROBLEMS, indirect=True)
def test_each_of_four_model_devices_holds_a_quarter_of_the_parameters(meshes):
    one, four = meshes[_problem(meshes)]["1x1"], meshes[_problem(meshes)]["1x4"]
    assert four["params_bytes_per_device"] * 4 == four["padded"] * 8  # float64, padded
    assert one["params_bytes_per_device"] == one["padded"] * 8  # replicated, unpadded
    for mesh in ("1x4", "2x2"):
        assert meshes[_problem(meshes)][mesh]["params_sharding"] == "P('model',)"
        # a product of a basis row comes back split as the row and the parameters are
        assert meshes[_problem(meshes)][mesh]["product_sharding"] == "P('model',)"


@pytest.mark.parametrize("meshes", PROBLEMS, indirect=True)
def test_a_basis_in_host_memory_gives_the_same_scores(meshes):
    on_device, on_host = (
        meshes[_problem(meshes)]["1x4"]["arnoldi"],
        meshes[_problem(meshes)]["1x4"]["arnoldi_host"],
    )
    assert _relative(on_host["values"], on_device["values"]) < RTOL
    assert _relative(on_host["self"], on_device["self"]) < 1e-8


@pytest.mark.parametrize("meshes", PROBLEMS, indirect=True)
def test_a_spectrum_stored_on_2x2_restores_on_one_device_and_on_1x4(meshes):
    stored = meshes[_problem(meshes)]["2x2"]
    for target in ("1x1", "1x4"):
        np.testing.assert_array_equal(
            stored["restored"][target], stored["arnoldi"]["vectors"], err_msg=target
        )
