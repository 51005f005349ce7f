"""Scores stored in chunks: resumable, sharded, merged (`ifscale.cache.chunks`, the pipeline's
scoring stage). The CLI, launcher, kill -9 and multi-process checks are in
test_scale_out_slow.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import ifscale.run.pipeline
from ifscale.cache.chunks import ChunkPlan, ChunkStore, IncompleteScores
from ifscale.config import ModelConfig, NoiseConfig, RunConfig, ScoreConfig
from ifscale.influence import stream_scores
from ifscale.influence.scoring import stream_chunks
from ifscale.run.compose import build_method, method_config
from ifscale.train import TrainConfig
from tests.test_kinds import BlobsConfig, tabular_kind  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_shards_are_contiguous_whole_chunks_covering_the_set():
    plan = ChunkPlan(n=1000, chunk=64)
    assert plan.count == 16 and plan.span(15) == (960, 1000)
    for shards in (1, 3, 7, 16):
        parts = [plan.shard(i, shards) for i in range(shards)]
        assert [j for part in parts for j in part] == list(range(16))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert all(plan.shard_of(j, shards) == i for i, p in enumerate(parts) for j in p)


def _store(tmp_path, **key):
    return ChunkStore(tmp_path, 1, {"m": 1, **key}, {"d": 1}, ChunkPlan(n=10, chunk=4)).open()


def test_a_chunk_is_done_only_if_it_reads_back_whole(tmp_path):
    store = _store(tmp_path)
    scores = np.arange(4, dtype=np.float64) / 3
    store.save(0, scores, seconds=1.5, compile_seconds=0.25)
    chunk = store.load(0)
    np.testing.assert_array_equal(chunk["scores"], scores)
    assert chunk["seconds"] == 1.5 and chunk["compile_seconds"] == 0.25
    assert store.load(1) is None

    # A half-written file under a chunk's name (what kronfluence would count as done):
    # refused, removed, to be scored again.
    path = store.path(0)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert store.load(0) is None and not path.exists()
    # One flipped byte inside the scores: refused by the stored checksum.
    store.save(0, scores, 1.0)
    data = bytearray(path.read_bytes())
    offset = data.find(scores.tobytes()[:8])
    data[offset + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.load(0) is None
    # Another chunk's file copied under this name: refused (positions differ).
    store.save(1, scores, 1.0)
    path.write_bytes(store.path(1).read_bytes())
    assert store.load(0) is None
    # The last chunk is shorter; a wrong length is refused before it is written.
    store.save(2, np.ones(2), 1.0)
    assert store.load(2)["scores"].shape == (2,)
    with pytest.raises(AssertionError):
        store.save(2, np.ones(4), 1.0)
    # A leftover temporary file of a killed write is never a chunk.
    (store.folder / ".chunk-000003.npz-x.tmp").write_bytes(b"partial")
    assert sorted(store.done(range(3))) == [1, 2]


def test_another_key_in_the_folder_is_refused_and_cleared(tmp_path):
    store = _store(tmp_path)
    store.save(0, np.ones(4), 1.0)
    meta = store.folder / "meta.json"
    meta.write_text(meta.read_text().replace('"m": 1', '"m": 2'))
    again = _store(tmp_path)
    assert again.load(0) is None and '"m": 1' in meta.read_text()


def test_gather_names_the_shards_that_are_missing(tmp_path):
    store = ChunkStore(tmp_path, 1, {"m": 1}, {"d": 1}, ChunkPlan(n=40, chunk=4)).open()
    for j in (0, 1, 2, 3, 6, 7, 9):  # of 10 chunks; 4 shards: [0,1] [2,3,4] [5,6] [7,8,9]
        store.save(j, np.full(4, j, np.float64), 1.0)
    with pytest.raises(IncompleteScores, match=r"3 of 10 chunks .* shard\(s\) \[1, 2, 3\] of"):
        store.gather(shards=4)
    for j in (4, 5, 8):
        store.save(j, np.full(4, j, np.float64), 1.0)
    scores, chunks = store.gather(shards=4)
    np.testing.assert_array_equal(scores, np.repeat(np.arange(10.0), 4))
    assert len(chunks) == 10


def test_chunked_streaming_gives_the_bits_of_one_stream():
    """Batches never cross a chunk boundary, so the same chunks give the same bits however
    a run is cut (resumed, sharded); and the chunks of a whole stream equal one stream
    when the chunk is a multiple of the batch."""
    x = np.random.default_rng(0).normal(size=(103, 7)).astype(np.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(7, 5)), jnp.float32)
    score = jax.jit(lambda b: jnp.sum(jnp.tanh(b @ w) ** 2, axis=1))
    whole = stream_scores(score, x, batch_size=8, progress=False).scores
    plan = ChunkPlan(len(x), 16)
    got = {}
    spans = [plan.span(j) for j in range(plan.count)]
    stream_chunks(
        score, lambda i: x[i], spans, lambda i, s, *_: got.update({i: s.copy()}), 8, False
    )
    np.testing.assert_array_equal(np.concatenate([got[i] for i in range(plan.count)]), whole)
    # Scoring only chunks 5 and 2 (a resumed run) gives those chunks' bits.
    part = {}
    stream_chunks(
        score, lambda i: x[i], [spans[5], spans[2]], lambda i, s, *_: part.update({i: s}), 8, False
    )
    np.testing.assert_array_equal(part[0], got[5])
    np.testing.assert_array_equal(part[1], got[2])


def _blobs_run(tmp_path, **score) -> RunConfig:
    cfg = RunConfig(
        dataset=BlobsConfig(),
        model=ModelConfig(name="mlp"),
        noise=NoiseConfig(kind="mislabel", rate=0.1),
        train=TrainConfig(epochs=30, batch_size=40, learning_rate=0.1, kept_checkpoints=4),
        method=method_config("arnoldi", n=12, pbar=6, fit_batch_size=40, fit_batches=2),
        score=ScoreConfig(chunk=32, **score),
        progress=False,
    )
    cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def _merge(cfg: RunConfig) -> RunConfig:
    return dataclasses.replace(cfg, stage="merge")


def test_shards_then_merge_equal_one_run(tabular_kind, tmp_path):  # noqa: F811
    whole = ifscale.run.pipeline.run(_blobs_run(tmp_path / "one"), tmp_path / "one" / "run")
    assert whole["chunks"] == 8 and whole["chunks_scored"] == 8 and whole["shards"] == 1

    shard = ifscale.run.pipeline.run(_blobs_run(tmp_path, shards=3, shard=2), tmp_path / "s2")
    assert shard["shard"] == 2 and "auc" not in shard  # one shard: no AUC
    assert shard["chunks_scored"] == 3 and not (tmp_path / "s2" / "scores.csv").exists()
    with pytest.raises(IncompleteScores, match=r"shard\(s\) \[0, 1\] of score.shards=3"):
        ifscale.run.pipeline.run(_merge(_blobs_run(tmp_path, shards=3)), tmp_path / "merged")
    for i in (0, 1):
        ifscale.run.pipeline.run(_blobs_run(tmp_path, shards=3, shard=i), tmp_path / f"s{i}")
    merged = ifscale.run.pipeline.run(_merge(_blobs_run(tmp_path, shards=3)), tmp_path / "m")
    assert merged["stage"] == "merge" and merged["chunks_scored"] == 0
    assert len(merged["shard_seconds"]) == 3
    for key in ("auc", "ap", "n_scored", "n_noisy_scored", "eigenvalues"):
        assert merged[key] == whole[key], key
    one = pd.read_csv(tmp_path / "one" / "run" / "scores.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "m" / "scores.csv"), one)

    # A rerun finds every chunk and scores none.
    again = ifscale.run.pipeline.run(_blobs_run(tmp_path), tmp_path / "again")
    assert again["chunks_reused"] == 8 and again["chunks_scored"] == 0
    assert again["score_cache_hit"] and again["auc"] == whole["auc"]


def test_bad_shard_settings_are_one_line_errors(tabular_kind, tmp_path):  # noqa: F811
    from ifscale.utils import ConfigError

    with pytest.raises(ConfigError, match="score.shard: must be in"):
        ScoreConfig(shards=2, shard=2)
    with pytest.raises(ConfigError, match="score.chunk"):
        ScoreConfig(chunk=0)
    cfg = _blobs_run(tmp_path, shards=9)  # 8 chunks
    with pytest.raises(ConfigError, match="9 shards of 8 chunks"):
        ifscale.run.pipeline.run(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="stage=merge needs a method"):
        _merge(dataclasses.replace(cfg, method=method_config("none")))


@pytest.mark.parametrize(
    "launcher, expected",
    [
        (
            "local",
            {
                "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                "n_jobs": 2,
            },
        ),
        (
            "submitit_local",
            {
                "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                "tasks_per_node": 1,
            },
        ),
        (
            "slurm",
            {
                "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                "timeout_min": 240,
                "array_parallelism": 64,
                "max_num_timeout": 3,
                "partition": "gpu",
                "gpus_per_task": 1,
            },
        ),
    ],
)
def test_launcher_presets_compose(launcher, expected):
    """The composed Hydra config of each launcher preset (SLURM cannot run here)."""
    import yaml

    command = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "experiment=train_small",
        f"launcher={launcher}",
        "hydra.launcher.partition=gpu" if launcher == "slurm" else "seed=0",
        "hydra.launcher.gpus_per_task=1" if launcher == "slurm" else "seed=0",
        "--cfg",
        "hydra",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    hydra_cfg = yaml.safe_load(done.stdout)["hydra"]
    for key, value in expected.items():
        assert hydra_cfg["launcher"][key] == value, key
    assert hydra_cfg["callbacks"]["merge_shards"]["_target_"] == (
        "experiments.merge_callback.MergeShards"
    )


def test_the_first_jobs_choices_are_recorded_and_win(tmp_path):
    store = _store(tmp_path)
    assert store.choices() is None
    assert store.record_choices({"route": "jvp"}) == {"route": "jvp"}
    # A later job that timed another route makes the recorded choice instead.
    assert store.record_choices({"route": "grad"}) == {"route": "jvp"}
    assert store.choices() == {"route": "jvp"}
    assert not list(store.folder.glob(".choices.json-*"))  # no temporary file left


def test_a_recorded_route_is_made_again_instead_of_timed(tabular_kind, tmp_path):  # noqa: F811
    from ifscale.influence.scoring import prepared_scorer
    from ifscale.influence.sharding import make_mesh

    cfg = _blobs_run(tmp_path)
    metrics = ifscale.run.pipeline.run(cfg, tmp_path / "run")
    timed = metrics["score_choices"]["route"]  # route=auto: chosen by the rule, recorded
    assert timed in ("grad", "jvp", "layerwise")
    prep = ifscale.run.context.prepare(cfg)
    method = build_method(cfg.method, progress=False)
    task = prep.domain.task(prep.model, cfg)
    state, _, _ = ifscale.run.fitting.fit_method(cfg, prep, method, task)
    other = "jvp" if timed != "jvp" else "grad"
    sample = prep.data.train_batch(np.arange(8))
    _, made = prepared_scorer(method, state, sample, make_mesh(), {"route": other})
    assert made == {"route": other}


def test_route_auto_is_a_rule_so_fresh_caches_give_identical_scores(tabular_kind, tmp_path):  # noqa: F811
    """`route=auto` never times: two runs on fresh caches choose the same route and write
    the same scores, bit for bit; `route=fastest` times once and records its choice."""
    runs = [ifscale.run.pipeline.run(_blobs_run(tmp_path / c), tmp_path / f"run-{c}") for c in "ab"]
    assert runs[0]["score_choices"] == runs[1]["score_choices"]
    texts = [(tmp_path / f"run-{c}" / "scores.csv").read_text() for c in "ab"]
    assert texts[0] == texts[1]
    cfg = _blobs_run(tmp_path / "c")
    cfg.method = dataclasses.replace(cfg.method, route="fastest")
    timed = ifscale.run.pipeline.run(cfg, tmp_path / "run-c")
    assert timed["score_choices"]["route"] in ("grad", "jvp", "layerwise")


def _hydra_cfg(*overrides):
    import yaml

    command = [sys.executable, str(ROOT / "experiments" / "run.py"), *overrides]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=120)
    return done, (yaml.safe_load(done.stdout) if done.returncode == 0 else None)


def test_two_runs_started_in_the_same_second_get_their_own_folders():
    """Each process resolves the run folder with its own token (`cli.py`'s `run_token`)."""
    script = (
        "from experiments import cli\n"
        "from hydra import compose, initialize_config_dir\n"
        "with initialize_config_dir(str(cli.PROJECT_ROOT / 'conf'), version_base='1.3'):\n"
        "    cfg = compose('config', ['experiment=train_small'], return_hydra_config=True)\n"
        "print(cfg.hydra.run.dir)\n"
    )
    folders = set()
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        folders.add(done.stdout.strip().splitlines()[-1])
    assert len(folders) == 2  # same second or not
    assert all(f.startswith(str(ROOT / "outputs" / "train_small")) for f in folders)


@pytest.mark.parametrize("name", ["../../escaped", ".hidden", ""])
def test_a_run_name_cannot_leave_the_outputs_folder(name, tmp_path):
    done, _ = _hydra_cfg(f"name={name}", "experiment=train_small", f"hydra.run.dir={tmp_path}/x")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == [
        f"Bad configuration: name: {name!r} must be a plain folder name (no '/', no '..')"
    ]
    assert not (tmp_path / "x").exists()
