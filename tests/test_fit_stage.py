"""The fit as a stage of its own: stored with orbax (a damaged one is refused and rebuilt),
required by scoring jobs when asked, resumed after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from ifscale.cache.spectra import SpectrumStore
from ifscale.influence import Spectrum
from ifscale.influence.sharding import Layout

ROOT = Path(__file__).resolve().parents[1]
SMALL = (
    "model=cnn_small",
    "dataset.subset_size=600",
    "train.epochs=2",
    "train.batch_size=50",
    "train.kept_checkpoints=4",
    "method.fit_batch_size=50",
    "method.fit_batches=2",
    "method=arnoldi",
    "method.pbar=5",
    "method.route=grad",
    "progress=false",
)


def _cli(*overrides, cache: Path, run_dir: Path, data_dir: Path, wait: bool = True):
    env = os.environ | {"IFSCALE_CACHE_DIR": str(cache), "IFSCALE_DATA_DIR": str(data_dir)}
    command = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _spectrum(values, rows):
    return Spectrum(np.asarray(values, np.float64), jax.numpy.asarray(rows))


def test_a_damaged_stored_spectrum_is_refused(tmp_path):
    store = SpectrumStore(tmp_path, version=1)
    key = {"fit": 1}
    layout = Layout.create(6)
    rows = np.arange(18, dtype=np.float32).reshape(3, 6)
    store.save(key, _spectrum([3.0, 2.0, 1.0], rows), {"t_fit_s": 1.5})
    spectrum, info = store.load(key, layout)
    np.testing.assert_array_equal(np.asarray(spectrum.vectors), rows)
    assert info == {"t_fit_s": 1.5}
    assert store.load({"fit": 2}, layout) is None  # another key: not there

    # A truncated data file of the checkpoint: refused (and removed, to be rebuilt).
    files = [p for p in (store.path(key) / "spectrum").rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    assert store.load(key, layout) is None
    assert not store.path(key).exists()

    # A write that died before its meta.json: refused.
    store.save(key, _spectrum([3.0, 2.0, 1.0], rows), {"t_fit_s": 1.5})
    (store.path(key) / "meta.json").unlink()
    assert store.load(key, layout) is None

    # A deleted file: refused.
    store.save(key, _spectrum([3.0, 2.0, 1.0], rows), {"t_fit_s": 1.5})
    for path in (store.path(key) / "spectrum").rglob("*"):
        if path.is_file() and "manifest" in path.name:
            path.unlink()
    files = [p for p in (store.path(key) / "spectrum").rglob("*") if p.is_file()]
    max(files, key=lambda p: p.stat().st_size).unlink()
    assert store.load(key, layout) is None


@pytest.mark.slow  # end to end, minutes: make test-slow
def test_scoring_that_requires_a_fit_refuses_to_fit_then_uses_the_fit_stage(tmp_path, mnist_dir):
    cache = tmp_path / "cache"
    run = lambda name, *extra: _cli(  # noqa: E731
        *SMALL, "method.n=20", *extra, cache=cache, run_dir=tmp_path / name, data_dir=mnist_dir
    )
    refused = run("refused", "stage=score", "score.require_fit=true")
    assert refused.returncode == 2
    errors = [
        line
        for line in refused.stderr.splitlines() + refused.stdout.splitlines()
        if "ERROR" in line
    ]
    assert len(errors) == 1 and "score.require_fit: no cached arnoldi fit at" in errors[0]
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "refused" / "scores.csv").exists()
    assert not (cache / "trained").exists()  # refused before training, not after

    fit = run("fit", "stage=fit")
    assert fit.returncode == 0, fit.stderr[-2000:]
    fit_metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert fit_metrics["stage"] == "fit" and not fit_metrics["fit_cache_hit"]
    assert not (tmp_path / "fit" / "scores.csv").exists()

    scored = run("score", "stage=score", "score.require_fit=true")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads((tmp_path / "score" / "metrics.json").read_text())["fit_cache_hit"]

    # The same config in one run, from a fresh cache: bit for bit the same scores.
    whole = _cli(
        *SMALL,
        "method.n=20",
        cache=tmp_path / "fresh",
        run_dir=tmp_path / "all",
        data_dir=mnist_dir,
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert (tmp_path / "score" / "scores.csv").read_bytes() == (
        tmp_path / "all" / "scores.csv"
    ).read_bytes()


@pytest.mark.slow  # end to end, minutes: make test-slow
def test_a_killed_fit_resumes_from_its_checkpoint_with_the_same_ritz_values(tmp_path, mnist_dir):
    args = (*SMALL, "method.n=40", "method.checkpoint_every=4", "stage=fit")
    cache = tmp_path / "cache"
    victim = _cli(*args, cache=cache, run_dir=tmp_path / "killed", data_dir=mnist_dir, wait=False)
    deadline = time.time() + 300
    partial = None
    while time.time() < deadline and victim.poll() is None:
        # A committed checkpoint: orbax's step folder, then the record of its checksums
        # (`meta.json`, written last: without it the checkpoint is not resumed from).
        found = list((cache / "fits").glob("*.partial/meta.json"))
        if found:
            partial = found[0].parent
            break
        time.sleep(0.05)
    assert partial is not None, "no Arnoldi checkpoint appeared before the fit ended"
    os.kill(victim.pid, signal.SIGKILL)  # kill -9: no cleanup runs
    victim.wait()
    assert victim.returncode == -signal.SIGKILL

    resumed = _cli(*args, cache=cache, run_dir=tmp_path / "resumed", data_dir=mnist_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming the Arnoldi iteration from step" in resumed.stderr + resumed.stdout
    assert not partial.exists()  # cleared once the fit is stored

    # An uninterrupted fit of the same config, from a fresh cache.
    whole = (*args, "stage=all")
    done = _cli(*whole, cache=tmp_path / "fresh", run_dir=tmp_path / "fresh", data_dir=mnist_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    scored = _cli(*whole, cache=cache, run_dir=tmp_path / "scored", data_dir=mnist_dir)
    assert scored.returncode == 0, scored.stderr[-2000:]
    resumed_metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    fresh_metrics = json.loads((tmp_path / "fresh" / "metrics.json").read_text())
    assert resumed_metrics["fit_cache_hit"]
    assert resumed_metrics["eigenvalues"] == fresh_metrics["eigenvalues"]  # bit for bit
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "scored" / "scores.csv"),
        pd.read_csv(tmp_path / "fresh" / "scores.csv"),
        check_exact=True,
    )


@pytest.mark.parametrize(
    "overrides, key",
    [
        (("stage=fit",), "stage"),  # no method
        (("stage=train",), "stage"),
        (("method=arnoldi", "method.basis_memory=disk"), "method.basis_memory"),
        (("method=arnoldi", "method.basis_dtype=float16"), "method.basis_dtype"),
        (("method=arnoldi", "method.pbar=150"), "method.pbar"),  # > keep = 100
        (("method=arnoldi", "mesh.model=0"), "mesh.model"),
    ],
)
def test_bad_stage_and_mesh_settings_name_the_key(overrides, key, tmp_path, mnist_dir):
    done = _cli(*overrides, cache=tmp_path, run_dir=tmp_path / "run", data_dir=mnist_dir)
    assert done.returncode == 2
    assert f"Bad configuration: {key}" in done.stderr + done.stdout
