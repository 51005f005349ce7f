"""Where and how the Krylov basis is kept: in host memory, orthogonalized a block at a time
(the host traffic, counted, against its formula), and in bfloat16 (`method.basis_dtype`:
half the bytes, what it costs in Ritz values and scores)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from ifscale.influence.hvp import device_batches
from ifscale.influence.krylov import arnoldi
from ifscale.influence.methods import Arnoldi
from ifscale.influence.scoring import self_influence_scores
from ifscale.influence.sharding import Layout
from ifscale.influence.task import ParamView

from .test_block_krylov import _cnn_small_problem, _known_spectrum

KEY = jax.random.key(0)


def _fit(matrix, n, block, memory, reorthogonalize=False, basis_dtype=None):
    p = matrix.shape[0]
    start = jax.random.normal(KEY, (block, p) if block > 1 else (p,), matrix.dtype)
    return arnoldi(
        lambda v: matrix @ v,
        start,
        n,
        block=block,
        matvec_block=lambda vs: vs @ matrix.T,
        reorthogonalize=reorthogonalize,
        progress=False,
        basis_memory=memory,
        basis_dtype=basis_dtype,
    )


@pytest.mark.parametrize("block", [1, 4])
@pytest.mark.parametrize("reorthogonalize", [False, True])
def test_a_host_basis_orthogonalized_by_blocks_equals_the_device_basis(block, reorthogonalize):
    with jax.enable_x64(True):
        _, _, _, matrix = _known_spectrum(p=60)
        device = _fit(matrix, 24, block, "device", reorthogonalize)
        host = _fit(matrix, 24, block, "host", reorthogonalize)
        assert host.m == device.m == 24
        np.testing.assert_allclose(host.hessenberg, device.hessenberg, rtol=0, atol=1e-12)
        np.testing.assert_allclose(host.basis, device.basis, rtol=0, atol=1e-12)
        gram = np.asarray(host.basis @ host.basis.T)
        np.testing.assert_allclose(gram, np.eye(24), atol=1e-12)


@pytest.mark.parametrize("reorthogonalize", [False, True])
def test_host_traffic_falls_by_the_block_size_as_the_formula_says(reorthogonalize):
    """Rows read from host memory during the iteration: the n rows multiplied, plus, per
    step and Gram-Schmidt pass, every row stored when the step starts (first + b): one read
    for the step's b products together, not one per product."""
    passes = 2 if reorthogonalize else 1
    n, p = 48, 80
    with jax.enable_x64(True):
        _, _, _, matrix = _known_spectrum(p=p)
        row = 8 * p
        read = {}
        for block in (1, 4, 8):
            krylov = _fit(matrix, n, block, "host", reorthogonalize)
            assert krylov.m == n
            formula = n + passes * sum(first + block for first in range(0, n, block))
            assert krylov.host_bytes_read == formula * row
            read[block] = krylov.host_bytes_read
        orthogonalization = {b: read[b] - n * row for b in read}
        # Σ (first + b) over the n/b steps is n(n + b)/(2b) rows a pass: b(n + 1)/(n + b)
        # times fewer than one product at a time (3.8 for b = 4, 7 for b = 8 at n = 48).
        for block in (4, 8):
            ratio = orthogonalization[1] / orthogonalization[block]
            assert ratio == pytest.approx(block * (n + 1) / (n + block))
        assert _fit(matrix, n, 4, "device").host_bytes_read == 0


def test_a_bfloat16_basis_halves_the_bytes_and_keeps_the_top_ritz_values():
    _, _, values, matrix = _known_spectrum(p=200)
    matrix = matrix.astype(jnp.float32)
    full = _fit(matrix, 40, 4, "device")
    half = _fit(matrix, 40, 4, "device", basis_dtype=jnp.bfloat16)
    assert half.rows.dtype == jnp.bfloat16 and full.rows.dtype == jnp.float32
    assert half.rows.nbytes * 2 == full.rows.nbytes
    top = np.sort(np.abs(values))[::-1][:4]
    for krylov, tol in ((full, 1e-4), (half, 2e-2)):
        a = krylov.hessenberg
        ritz = np.sort(np.abs(np.linalg.eigvalsh(0.5 * (a + a.T))))[::-1][:4]
        np.testing.assert_allclose(ritz, top, rtol=tol)
    # The same in host memory: rows stored narrow there too.
    host = _fit(matrix, 40, 4, "host", basis_dtype=jnp.bfloat16)
    assert all(r.dtype == jnp.bfloat16 for r in host.rows.rows)


@pytest.mark.parametrize("memory", ["device", "host"])
def test_bfloat16_eigenvectors_score_as_float32_ones_on_cnn_small(memory):
    task, params, batches = _cnn_small_problem(np.float32, images=48)
    view = ParamView.create(task, params)
    layout = Layout.create(view.size)
    fit = device_batches(batches[:4], layout.batch())
    data = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *batches)
    out = {}
    for dtype in (None, "bfloat16"):
        method = Arnoldi(
            n=30, pbar=10, keep=10, block=4, basis_dtype=dtype, basis_memory=memory, progress=False
        )
        spectrum = method.spectrum(view, fit, KEY, layout)
        state = method.from_spectrum(view, spectrum, layout)
        scores = self_influence_scores(method, state, data, 16, False).scores
        out[dtype] = (spectrum, state, scores)
    (full, _, full_scores), (half, half_state, half_scores) = out[None], out["bfloat16"]
    assert half.vectors.dtype == half_state.directions.dtype == jnp.bfloat16
    assert half.vectors.nbytes * 2 == full.vectors.nbytes
    np.testing.assert_allclose(half.values[:10], full.values[:10], rtol=1e-2)
    assert spearmanr(half_scores, full_scores).statistic > 0.999
    assert not np.array_equal(half_scores, full_scores)  # the rounding is real


def test_the_basis_dtype_is_in_the_fit_key_unless_it_is_the_parameters():
    from .test_block_krylov import fit_key_of

    assert "basis_dtype" not in fit_key_of(Arnoldi(n=20))["options"]
    assert fit_key_of(Arnoldi(n=20, basis_dtype="bfloat16"))["options"]["basis_dtype"] == (
        "bfloat16"
    )
