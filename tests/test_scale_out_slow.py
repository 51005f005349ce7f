"""Scale-out scoring end to end, through the command line (`make test-slow`): a kill -9
mid-chunk resumes bit for bit, shards on the joblib and submitit launchers merge into the
unsharded run, and two JAX processes (jax.distributed, gloo on CPU) equal one process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.simulated_devices import xla_flags

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# LISSA on cnn_small: slow enough per example (r HVPs each) to be killed mid-chunk.
LISSA = (
    "model=cnn_small",
    "dataset.subset_size=600",
    "train.epochs=2",
    "train.batch_size=50",
    "train.kept_checkpoints=4",
    "method=lissa",
    "method.r=8",
    "method.fit_batch_size=50",
    "method.fit_batches=2",
    "score.batch_size=16",
    "score.chunk=32",  # 19 chunks
    "progress=false",
    "name=scale_out",
)


def _cli(script, *overrides, cache: Path, data_dir: Path, wait=True, timeout=900):
    env = os.environ | {"IFSCALE_CACHE_DIR": str(cache), "IFSCALE_DATA_DIR": str(data_dir)}
    command = [sys.executable, str(ROOT / "experiments" / script), *overrides]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(done) -> None:
    assert done.returncode == 0, done.stderr[-3000:]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_dir) -> Path:
    """The uninterrupted, unsharded run of LISSA, in a cache of its own."""
    where = tmp_path_factory.mktemp("reference")
    _ok(
        _cli(
            "run.py",
            *LISSA,
            f"hydra.run.dir={where / 'run'}",
            cache=where / "cache",
            data_dir=mnist_dir,
        )
    )
    return where / "run"


def test_a_killed_scoring_resumes_redoing_at_most_one_chunk(reference, tmp_path, mnist_dir):
    cache = tmp_path / "cache"
    victim = _cli(
        "run.py",
        *LISSA,
        f"hydra.run.dir={tmp_path / 'killed'}",
        cache=cache,
        data_dir=mnist_dir,
        wait=False,
    )
    deadline = time.time() + 600
    chunks = []
    while time.time() < deadline and victim.poll() is None and len(chunks) < 4:
        chunks = list((cache / "scores").glob("*/*/chunk-*.npz"))
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)  # mid-chunk: the next chunk is being scored
    victim.wait()
    folder = chunks[0].parent
    finished = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("chunk-*")}
    assert 4 <= len(finished) < 19
    assert not (tmp_path / "killed" / "metrics.json").exists()

    # Merging now names what is missing, in one line.
    merge = _cli(
        "merge.py",
        *LISSA,
        f"hydra.run.dir={tmp_path / 'merge'}",
        cache=cache,
        data_dir=mnist_dir,
    )
    assert merge.returncode == 2 and "Traceback" not in merge.stderr
    errors = [line for line in (merge.stdout + merge.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "shard(s) [0] of score.shards=1" in errors[0], errors

    # A finished chunk damaged after the kill is refused and scored again.
    damaged = sorted(finished)[1]
    (folder / damaged).write_bytes(finished[damaged][0][:100])
    resumed = _cli(
        "run.py",
        *LISSA,
        f"hydra.run.dir={tmp_path / 'resumed'}",
        cache=cache,
        data_dir=mnist_dir,
    )
    _ok(resumed)
    metrics = _metrics(tmp_path / "resumed")
    assert metrics["chunks"] == 19
    assert metrics["chunks_reused"] == len(finished) - 1  # all but the damaged one
    assert metrics["chunks_scored"] == 19 - len(finished) + 1
    for name, (data, mtime) in finished.items():  # reused, never rewritten
        if name != damaged:
            assert (folder / name).stat().st_mtime_ns == mtime
            assert (folder / name).read_bytes() == data
    assert f"{len(finished) - 1} of 19 chunks already scored" in resumed.stdout + resumed.stderr
    # Bit for bit the uninterrupted run.
    assert (tmp_path / "resumed" / "scores.csv").read_bytes() == (
        reference / "scores.csv"
    ).read_bytes()
    assert metrics["auc"] == _metrics(reference)["auc"]


@pytest.mark.parametrize("launcher, shards", [("local", 4), ("submitit_local", 2)])
def test_shards_on_a_launcher_merge_into_the_unsharded_run(
    reference, tmp_path, mnist_dir, launcher, shards
):
    cache = tmp_path / "cache"
    sweep = tmp_path / "sweep"
    _ok(
        _cli(
            "run.py",
            *LISSA,
            "stage=fit",
            f"hydra.run.dir={tmp_path / 'fit'}",
            cache=cache,
            data_dir=mnist_dir,
        )
    )
    done = _cli(
        "run.py",
        "-m",
        *LISSA,
        "stage=score",
        "score.require_fit=true",
        f"score.shards={shards}",
        f"score.shard=range({shards})",
        f"launcher={launcher}",
        f"hydra.sweep.dir={sweep}",
        cache=cache,
        data_dir=mnist_dir,
    )
    _ok(done)
    jobs = [_metrics(sweep / str(i)) for i in range(shards)]
    assert sorted(j["shard"] for j in jobs) == list(range(shards))
    assert all(j["stage"] == "score" and "auc" not in j for j in jobs)
    assert sum(j["chunks_scored"] for j in jobs) == 19
    merged = sweep / "merged" / "0"
    assert _metrics(merged)["stage"] == "merge"
    assert len(_metrics(merged)["shard_seconds"]) == shards
    assert (merged / "scores.csv").read_bytes() == (reference / "scores.csv").read_bytes()

    # The reports' completeness check names a job of this real sweep that lost its results.
    from experiments.sweeps import missing_jobs

    assert missing_jobs(sweep) == []
    (sweep / "1" / "metrics.json").unlink()
    assert missing_jobs(sweep) == ["1: score.shard=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_jax_processes_equal_one_process_with_two_devices(tmp_path, mnist_dir):
    """jax.distributed on CPU (gloo): the fit's mesh spans both processes, each scores its
    chunks; the scores are those of one process with two (simulated) devices."""
    arnoldi = (
        *LISSA[:5],
        "method=arnoldi",
        "method.n=20",
        "method.pbar=5",
        "method.route=jvp",  # vmap(grad) of a conv is wrong on several CPU devices (XLA)
        "method.fit_batch_size=50",
        "method.fit_batches=2",
        "score.chunk=128",
        "progress=false",
    )
    port = _free_port()
    jobs = []
    for pid in range(2):
        env = os.environ | {
            "IFSCALE_CACHE_DIR": str(tmp_path / "cache"),
            "IFSCALE_DATA_DIR": str(mnist_dir),
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(pid),
        }
        command = [sys.executable, str(ROOT / "experiments" / "run.py"), *arnoldi]
        command.append(f"hydra.run.dir={tmp_path / f'process{pid}'}")
        jobs.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    for job in jobs:
        log, _ = job.communicate(timeout=900)
        assert job.returncode == 0, log[-3000:]
    assert "JAX process 1 of 2" in log
    # Process 0 writes the run; process 1 only its chunks.
    assert not (tmp_path / "process1" / "metrics.json").exists()
    two = _metrics(tmp_path / "process0")
    assert two["chunks"] == 5 and two["chunks_scored"] == 3  # process 0's of 5 chunks

    env = os.environ | {
        "IFSCALE_CACHE_DIR": str(tmp_path / "single"),
        "IFSCALE_DATA_DIR": str(mnist_dir),
        "XLA_FLAGS": xla_flags(2),
    }
    command = [sys.executable, str(ROOT / "experiments" / "run.py"), *arnoldi]
    single = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path / 'single_run'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    _ok(single)
    assert (tmp_path / "process0" / "scores.csv").read_bytes() == (
        tmp_path / "single_run" / "scores.csv"
    ).read_bytes()
    assert _metrics(tmp_path / "single_run")["eigenvalues"] == two["eigenvalues"]
