"""Block Arnoldi (`method.block`): the same eigenpairs as the one-vector iteration and the
exact Hessian, bit-for-bit the old fit at block 1, and blocks in the fit's cache key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifscale.domains.images import classification_task
from ifscale.influence.hvp import dense_hessian, device_batches, hvp
from ifscale.influence.krylov import ArnoldiProgress, _extend_on, _first_rows, arnoldi, distill
from ifscale.influence.methods import Arnoldi, Exact, RandProj
from ifscale.influence.sharding import Layout
from ifscale.influence.task import ParamView
from ifscale.models import build_model, init_params

from .influence_fixtures import mlp_problem, split

KEY = jax.random.key(0)


def _known_spectrum(p=40, seed=1):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    values = np.concatenate([[50.0, -20.0, 10.0, 7.0], rng.uniform(-1, 1, p - 4)])
    return rng, q, values, jnp.asarray(q @ np.diag(values) @ q.T)


def _cnn_small_problem(dtype, images=32, size=8):
    """cnn_small at its initial parameters on seeded random images: the HVPs go through
    both convolutions, the pools and the dense layer."""
    rng = np.random.default_rng(0)
    x = rng.random((images, size, size, 1)).astype(dtype)
    y = rng.integers(0, 10, images)
    model = build_model("cnn_small")
    params = jax.tree_util.tree_map(
        lambda a: a.astype(dtype), init_params(model, x.shape[1:], jax.random.key(1))
    )
    task = classification_task(model)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, images, 8)]
    return task, params, batches


def _principal_cosines(a, b):
    """Cosines of the principal angles between the row spaces of a and b."""
    qa, _ = np.linalg.qr(np.asarray(a, np.float64).T)
    qb, _ = np.linalg.qr(np.asarray(b, np.float64).T)
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


@pytest.mark.parametrize("block,n", [(3, 40), (4, 38), (8, 40)])
def test_block_arnoldi_on_a_known_spectrum(block, n):
    with jax.enable_x64(True):
        rng, q, values, matrix = _known_spectrum()
        calls = []

        def matvec_block(vs):
            calls.append(len(vs))
            return vs @ matrix  # symmetric: (H vᵢ) as rows

        start = jnp.asarray(rng.normal(size=(block, 40)))
        krylov = arnoldi(None, start, n, block=block, matvec_block=matvec_block, progress=False)
        # n products, or fewer at a breakdown: here when the basis fills the 40 dimensions.
        assert sum(calls) == n or (krylov.breakdown and krylov.m <= sum(calls) <= n)
        assert max(calls) == block
        basis = np.asarray(krylov.basis)
        np.testing.assert_allclose(basis @ basis.T, np.eye(krylov.m), atol=1e-10)
        top, vectors = distill(krylov, 4)
        # A block of b vectors reaches polynomial degree n/b only: less converged than
        # one vector at the same n (here 8 x 5 steps), within the 1e-6 asked of a block fit.
        np.testing.assert_allclose(top, [50.0, -20.0, 10.0, 7.0], rtol=1e-6)
        np.testing.assert_allclose(np.abs(np.asarray(vectors) @ q[:, :4]), np.eye(4), atol=1e-7)


def test_a_start_block_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="start block of 4 rows"):
        arnoldi(lambda v: v, jnp.ones((3, 10)), 8, block=4, progress=False)


def test_block_and_one_vector_fits_agree_on_an_mlp_with_the_exact_top_pbar():
    with jax.enable_x64(True):
        task, params, data = mlp_problem()
        view = ParamView.create(task, params)
        p = view.size
        train, test = split(data, np.arange(40)), split(data, np.arange(40, 48))
        exact = Exact(pbar=5)
        exact_state = exact.fit(task, params, [data], KEY)
        want = exact.influence(exact_state, train, test)
        spectra = {}
        for block in (1, 4):
            # In p dimensions a block fit stops (breakdown) once its rows fill them, after
            # p - b + 1 products.
            method = Arnoldi(n=p, pbar=5, reorthogonalize=True, block=block, progress=False)
            spectra[block] = method.spectrum(view, [data], KEY)
            np.testing.assert_allclose(
                spectra[block].values[:5], np.asarray(exact_state.eigvals), rtol=1e-6, err_msg=block
            )
            # An eigenvector's error is about the square root of its eigenvalue's: block
            # 4's 5th eigenvalue is off by 5e-10, its influence by up to 3e-4.
            got = method.influence(method.fit(task, params, [data], KEY), train, test)
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6 * np.abs(want).max())
        cosines = _principal_cosines(spectra[4].vectors[:3], spectra[1].vectors[:3])
        assert cosines.min() > 1 - 1e-6


@pytest.mark.slow  # about 30 s: in make test-slow
def test_block_and_one_vector_fits_agree_on_cnn_small_in_float64():
    """n < p: the top eigenpairs of a block fit, a one-vector fit and the dense Hessian."""
    with jax.enable_x64(True):
        task, params, batches = _cnn_small_problem(np.float64)
        view = ParamView.create(task, params, example=batches[0])
        fit = device_batches(batches)
        hessian = dense_hessian(view, fit, chunk=128)
        exact = np.linalg.eigvalsh(hessian)
        exact = exact[np.argsort(-np.abs(exact))][:5]
        spectra = {
            block: Arnoldi(
                n=160, pbar=5, keep=5, block=block, reorthogonalize=True, progress=False
            ).spectrum(view, fit, KEY)
            for block in (1, 8)
        }
        for block, spectrum in spectra.items():
            np.testing.assert_allclose(spectrum.values[:5], exact, rtol=1e-6, err_msg=block)
        np.testing.assert_allclose(spectra[8].values[:5], spectra[1].values[:5], rtol=1e-6)
        cosines = _principal_cosines(spectra[8].vectors[:5], spectra[1].vectors[:5])
        assert cosines.min() > 1 - 1e-6


def _one_vector_reference(view, batches, key, n):
    """The one-vector iteration as it was before blocks (ifscale 13187b1), step for step:
    block 1 must give these bits."""
    layout = Layout.create(view.size)
    start = jax.random.normal(key, (view.size,), view.theta.dtype)
    basis = _first_rows(layout, n + 1)(layout.pad(start / jnp.linalg.norm(start)))
    hessenberg = np.zeros((n + 1, n), np.float64)
    extend = _extend_on(layout, 1)
    for step in range(1, n + 1):
        w = hvp(view, batches, layout.unpad(basis[step - 1]))
        basis, coeffs, norm = extend(basis, layout.pad(w), jnp.asarray(step))
        hessenberg[:step, step - 1] = np.asarray(coeffs[:step], np.float64)
        hessenberg[step, step - 1] = float(norm)
    return np.asarray(basis[:n]), hessenberg[:n, :n]


def test_block_one_is_the_one_vector_iteration_bit_for_bit():
    task, params, batches = _cnn_small_problem(np.float32)
    view = ParamView.create(task, params, example=batches[0])
    fit = device_batches(batches)
    basis, hessenberg = _one_vector_reference(view, fit, KEY, 12)
    start = jax.random.normal(KEY, (view.size,), view.theta.dtype)
    krylov = arnoldi(lambda v: hvp(view, fit, v), start, 12, progress=False)
    assert np.array_equal(np.asarray(krylov.basis), basis)
    assert np.array_equal(krylov.hessenberg, hessenberg)


def test_a_resumed_block_fit_equals_an_uninterrupted_one():
    with jax.enable_x64(True):
        rng, _, _, matrix = _known_spectrum()
        start = jnp.asarray(rng.normal(size=(4, 40)))
        saved: list[ArnoldiProgress] = []

        def run(**kwargs):
            return arnoldi(
                None,
                start,
                24,
                block=4,
                matvec_block=lambda vs: vs @ matrix,
                progress=False,
                **kwargs,
            )

        def keep(progress):  # a copy: the iteration donates its basis to the next step
            saved.append(
                ArnoldiProgress(
                    progress.step, jnp.array(progress.basis), progress.hessenberg.copy()
                )
            )

        whole = run(checkpoint=keep, checkpoint_every=10)
        assert [s.step for s in saved] == [12, 20]  # at the ends of the blocks crossing 10, 20
        first = saved[0]
        resumed = run(resume=first)
        assert np.array_equal(np.asarray(resumed.basis), np.asarray(whole.basis))
        assert np.array_equal(resumed.hessenberg, whole.hessenberg)


def test_randproj_blocks_change_only_the_rounding():
    with jax.enable_x64(True):
        task, params, data = mlp_problem()
        view = ParamView.create(task, params)
        one = RandProj(pbar=10, progress=False).spectrum(view, [data], KEY)
        four = RandProj(pbar=10, block=4, progress=False).spectrum(view, [data], KEY)
        np.testing.assert_allclose(four.values, one.values, rtol=1e-10)
        np.testing.assert_allclose(
            np.abs(np.asarray(four.vectors)), np.abs(np.asarray(one.vectors)), atol=1e-10
        )


def fit_key_of(method):
    """The method's fit key in a run with fixed other settings."""
    from types import SimpleNamespace

    from ifscale.cache.keys import fit_key

    cfg = SimpleNamespace(
        method=SimpleNamespace(
            name=method.name, layers=None, fit_batch_size=8, fit_batches=2, sequence_loss="sum"
        ),
        train=SimpleNamespace(l2=0.0),
        seed=0,
    )
    return fit_key(cfg, "m", method.fit_options())


def test_the_block_is_in_the_fit_key_unless_it_is_one():
    key = fit_key_of
    assert "block" not in key(Arnoldi(n=20))["options"]  # the keys of fits stored before
    assert key(Arnoldi(n=20, block=4))["options"]["block"] == 4
    assert key(Arnoldi(n=20, block=4)) != key(Arnoldi(n=20, block=2))
    assert key(RandProj(pbar=10, block=5))["options"]["block"] == 5


def test_positive_only_chooses_among_the_stored_eigenvectors():
    """A spectrum stores all n Ritz values but only `keep` vectors: `positive_only` picks
    the largest positive values among the stored (it indexed all n values before, which
    failed for keep < n)."""
    from ifscale.influence.protocol import Spectrum

    ritz = np.array([50.0, -20.0, 10.0, 7.0, *np.linspace(0.9, -0.9, 26)])  # n = 30
    spectrum = Spectrum(ritz, jnp.eye(4, 40))  # keep = 4 vectors
    method = Arnoldi(n=30, pbar=2, keep=4, positive_only=True, progress=False)
    keep, chosen, inverse = method.select(spectrum)
    assert list(keep) == [0, 2] and list(chosen) == [50.0, 10.0]
    np.testing.assert_allclose(inverse, [1 / 50, 1 / 10])
