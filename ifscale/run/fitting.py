"""The one-time work of a method on the trained model (its fit), stored and reused.

Spectral methods (Arnoldi, RandProj, Exact) store their spectrum with orbax under
`<cache_dir>/fits/` (`ifscale.cache.spectra`), keyed by what determines it
(`ifscale.cache.keys.fit_key`), laid out on the run's mesh; the others (LISSA, TracIn, TRAK,
the baselines) have no one-time work worth storing, but read the training's checkpoints or,
for a method that asks for them, models retrained from other seeds (stored,
`ifscale.run.ensemble`). Every stage with a method fits through
`fit_method` (`stage=fit` alone).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax

from ifscale.cache.keys import FIT_VERSION, fit_key
from ifscale.cache.spectra import SpectrumStore
from ifscale.config import RunConfig
from ifscale.domains import Dataset
from ifscale.influence import Checkpoints, InfluenceMethod, SpectralMethod, Task
from ifscale.influence.hvp import device_batches
from ifscale.influence.protocol import FactoredMethod, StoredFitMethod
from ifscale.influence.sharding import Layout
from ifscale.influence.task import ParamView
from ifscale.run.compose import build_method
from ifscale.run.ensemble import ensemble_checkpoints
from ifscale.run.mesh import run_mesh
from ifscale.utils import check, config_hash, stream_key, stream_rng

log = logging.getLogger(__name__)


def fit_batches(cfg: RunConfig, data: Dataset) -> list[Any]:
    """The seeded training examples whose mean loss defines H, in equal batches."""
    m = cfg.method
    total = m.fit_batch_size * m.fit_batches
    check(
        total <= data.n_train,
        "method.fit_batches",
        f"fit_batch_size x fit_batches = {total} exceeds the {data.n_train} training examples",
    )
    index = stream_rng(cfg.seed, "fit").choice(data.n_train, total, replace=False)
    return [data.train_batch(chunk) for chunk in index.reshape(m.fit_batches, m.fit_batch_size)]


def require_stored_fit(cfg: RunConfig, train_key: dict[str, Any]) -> None:
    """Refuses (ConfigError naming `score.require_fit`) a run whose method's fit is not
    stored yet; checked before training, from the training key alone."""
    method = build_method(cfg.method, progress=False)
    if not isinstance(method, StoredFitMethod):
        return  # nothing stored to require: its one-time work is cheap (LISSA, TracIn)
    store = SpectrumStore(cfg.paths.cache_dir, FIT_VERSION)
    key = fit_key(cfg, config_hash(train_key), method.fit_options())
    check(
        store.exists(key),
        "score.require_fit",
        f"no cached {method.name} fit at {store.path(key)}; run stage=fit with the same "
        "config first",
    )


def fit_method(cfg: RunConfig, prep, method: InfluenceMethod, task: Task):
    """The method's fitted state, and (fit seconds, whether the fit came from the cache),
    for the run prepared in `prep` (`ifscale.run.context.Prepared`).

    Spectral methods (Arnoldi, RandProj, Exact) store their spectrum with orbax under
    `<cache_dir>/fits/` (`ifscale.cache.spectra`), laid out on the run's mesh; the others (LISSA,
    TracIn, TRAK) have no one-time work worth caching. With `score.require_fit` a missing
    spectrum is an error instead of a fit. The fit seconds of a method that reads retrained
    models (TRAK's ensemble) include their training, as stored with them.
    """
    trained = prep.trained
    batches = fit_batches(cfg, prep.data) if method.uses_fit_data else []
    key = stream_key(cfg.seed, "method")
    if isinstance(method, FactoredMethod):
        return _stored_factors(cfg, prep, method, task, batches, key)
    if not isinstance(method, SpectralMethod):
        count, fraction = method.retrained_models()
        retraining = 0.0
        if count:  # models retrained from other seeds (stored), not the training's checkpoints
            checkpoints, retraining = ensemble_checkpoints(cfg, prep, count, fraction)
        else:
            checkpoints = Checkpoints(trained.checkpoint_params, trained.checkpoint_lrs)
        start = time.perf_counter()
        state = method.fit(task, trained.params, batches, key, checkpoints)
        jax.block_until_ready(state)
        # A retrained ensemble's cost is part of the fit: its models' stored training seconds.
        return state, time.perf_counter() - start + retraining, False
    mesh = run_mesh(cfg)
    view = ParamView.create(task, trained.params, example=batches[0]).laid_out(mesh)
    layout = Layout.create(view.size, mesh)
    store = SpectrumStore(cfg.paths.cache_dir, FIT_VERSION)
    cache_key = fit_key(cfg, config_hash(prep.train_key), method.fit_options())
    hit = store.load(cache_key, layout)
    if hit is not None:
        spectrum, info = hit
        log.info("Reusing the %s fit cached at %s", method.name, store.path(cache_key))
        return method.from_spectrum(view, spectrum, layout), info["t_fit_s"], True
    check(
        not cfg.requires_stored_fit,
        "score.require_fit",
        f"no cached {method.name} fit at {store.path(cache_key)} (or it was refused); run "
        "stage=fit with the same config first",
    )
    check(
        cfg.method.fit_batch_size % layout.data == 0,
        "method.fit_batch_size",
        f"{cfg.method.fit_batch_size} must be divisible by the {layout.data} devices on the "
        "mesh's data axis",
    )
    progress = store.progress(cache_key, method.checkpoint_every)
    start = time.perf_counter()
    spectrum = method.spectrum(view, device_batches(batches, layout.batch()), key, layout, progress)
    jax.block_until_ready(spectrum.vectors)
    t_fit = time.perf_counter() - start
    store.save(cache_key, spectrum, {"t_fit_s": t_fit})
    if progress is not None:
        progress.clear()
    return method.from_spectrum(view, spectrum, layout), t_fit, False


def _stored_factors(cfg: RunConfig, prep, method: FactoredMethod, task: Task, batches, key):
    """A factored method's state (K-FAC's factors stored with orbax under `<cache>/fits/`,
    keyed as a spectrum), (fit seconds, whether it came from the store)."""
    view = method.view_for(task, prep.trained.params, batches[0])
    store = SpectrumStore(cfg.paths.cache_dir, FIT_VERSION)
    cache_key = fit_key(cfg, config_hash(prep.train_key), method.fit_options())
    hit = store.load_arrays(cache_key)
    if hit is not None:
        arrays, info = hit
        log.info("Reusing the %s fit cached at %s", method.name, store.path(cache_key))
        return method.from_arrays(view, arrays, batches[0]), info["t_fit_s"], True
    check(
        not cfg.requires_stored_fit,
        "score.require_fit",
        f"no cached {method.name} fit at {store.path(cache_key)} (or it was refused); run "
        "stage=fit with the same config first",
    )
    start = time.perf_counter()
    arrays = method.fit_arrays(view, device_batches(batches), key)
    jax.block_until_ready(arrays)
    t_fit = time.perf_counter() - start
    store.save_arrays(cache_key, arrays, {"t_fit_s": t_fit})
    return method.from_arrays(view, arrays, batches[0]), t_fit, False
