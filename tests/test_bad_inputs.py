"""Bad input never gives a wrong answer or a traceback.

The corpus (`tests/bad_inputs`) is run through what the command line runs before any
training: `experiments/run.py`'s composition and checks (`compose_run`) and the pipeline's
input checks (`ifscale.run.context.check_inputs`, `stage=check`). Each case must end in one
`ConfigError` line naming the key or the file, and leave nothing in the cache. A few cases
go through the real command line too; the fixes that are not refusals (pixel scaling, cache
repair, deterministic routes elsewhere) have tests of their own below.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ifscale.run.pipeline
from experiments import cli  # registers the resolvers and schemas
from ifscale.cache.arrays import ArrayStore
from ifscale.data.images import load_images, pixels_to_float
from ifscale.data.text import load_translation
from ifscale.domains.images import ImagesDomain
from ifscale.domains.translation import stored_tokenizer
from ifscale.models import build_model, init_params
from ifscale.utils import ConfigError
from tests.bad_inputs import CASES, good_image_run, make_inputs
from tests.simulated_devices import simulated_devices_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_inputs")
    make_inputs(folder)
    return folder


def _overrides(case, inputs: Path, cache: Path) -> list[str]:
    overrides = [o.replace("{dir}", str(inputs)) for o in case.overrides]
    if not any(o.startswith("paths.cache_dir=") for o in overrides):
        overrides.append(f"paths.cache_dir={cache}")
    return overrides


def test_the_corpus_is_large_and_covers_every_class():
    assert len(CASES) >= 40
    prefixes = {case.id.split("-")[0] for case in CASES}
    assert prefixes == {"config", "explain", "images", "text", "cache"}
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_naming_the_key_or_file(case, inputs, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as refused:
        cfg = cli.compose_run(_overrides(case, inputs, cache))
        ifscale.run.context.check_inputs(cfg)
    message = str(refused.value)
    assert len(message.strip().splitlines()) == 1, message
    assert case.names in message, message
    # Nothing trained, fitted or scored: at most a tokenizer of a corpus that was read.
    written = set(os.listdir(cache)) if cache.is_dir() else set()
    assert written <= {"tokenizers"}, written


def _cli(*overrides, env=None):
    command = [sys.executable, str(ROOT / "experiments" / "run.py"), *overrides]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env or os.environ
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines


@pytest.mark.parametrize(
    "case_id",
    [
        "config-n-not-int",  # refused while composing: no run folder
        "images-label_gap",  # refused at load, inside the run
        pytest.param("config-unknown-method", marks=pytest.mark.slow),
        pytest.param("images-truncated", marks=pytest.mark.slow),
    ],
)
def test_the_command_line_says_one_line_and_exits_2(case_id, inputs, tmp_path):
    (case,) = [c for c in CASES if c.id == case_id]
    run_dir = tmp_path / "run"
    code, lines = _cli(*_overrides(case, inputs, tmp_path / "cache"), f"hydra.run.dir={run_dir}")
    assert code == 2, lines
    errors = [line for line in lines if "Bad configuration" in line]
    assert len(errors) == 1 and case.names in errors[0], lines
    assert not any("Traceback" in line for line in lines), lines
    assert not (tmp_path / "cache").exists() or set(os.listdir(tmp_path / "cache")) == set()
    # A refused composition writes no run folder at all; a refused data set only its log.
    assert not run_dir.exists() or not (run_dir / "metrics.json").exists()


def test_stage_check_loads_and_checks_without_training_or_writing(inputs, tmp_path):
    cfg = cli.compose_run(
        good_image_run(
            inputs, tmp_path / "cache", "method=arnoldi", "method.layers=[Dense_0]", "stage=check"
        )
    )
    summary = ifscale.run.pipeline.run(cfg, tmp_path / "run")
    assert summary["stage"] == "check" and summary["n_train"] == 40 and summary["n_test"] == 20
    assert summary["n_params"] > 0
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- fixes that are not refusals


def test_pixels_are_scaled_by_their_dtypes_range():
    x16 = np.array([[[0, 65535], [32768, 1]]], np.uint16)
    np.testing.assert_allclose(pixels_to_float(x16, True, "x")[..., 0], x16 / 65535.0)
    x8 = np.array([[[0, 255], [128, 1]]], np.uint8)
    np.testing.assert_allclose(pixels_to_float(x8, True, "x")[..., 0], x8 / 255.0)
    bytes_as_floats = x8.astype(np.float64)
    np.testing.assert_allclose(pixels_to_float(bytes_as_floats, True, "x")[..., 0], x8 / 255.0)
    unit = np.array([[[0.0, 0.5], [1.0, 0.25]]])
    np.testing.assert_array_equal(pixels_to_float(unit, True, "x")[..., 0], unit)
    assert pixels_to_float(x16, False, "x").max() == 65535.0  # scale=false: as they are
    with pytest.raises(ConfigError, match="whole numbers"):
        pixels_to_float(unit * 3, True, "x")  # fractions above 1: no guess


def test_uint16_images_train_like_their_uint8_twins(inputs, tmp_path):
    """The same images stored as uint16 (x 257) load to the same float pixels."""
    with np.load(inputs / "good.npz") as f:
        arrays = dict(f)
    np.savez(
        tmp_path / "u16.npz",
        **(arrays | {k: arrays[k].astype(np.uint16) * 257 for k in ("x_train", "x_test")}),
    )
    a = load_images("npz", path=inputs / "good.npz")
    b = load_images("npz", path=tmp_path / "u16.npz")
    np.testing.assert_allclose(a.x_train, b.x_train, rtol=1e-6)
    assert a.num_classes == b.num_classes == 4


def test_classes_are_the_training_classes(inputs):
    data = load_images("npz", path=inputs / "good.npz")
    assert data.num_classes == 4 and data.y_train.dtype == np.int32


def test_a_cache_key_folder_replaced_by_a_file_is_rebuilt(tmp_path):
    cache = ArrayStore(tmp_path, "trained", 1)
    key = {"a": 1}
    cache.save(key, {"w": np.arange(3)}, {"test_accuracy": 0.9})
    folder = cache.path(key)
    import shutil

    shutil.rmtree(folder)
    folder.write_text("not a folder")
    assert cache.load(key) is None
    cache.save(key, {"w": np.arange(3)}, {"test_accuracy": 0.9})
    arrays, info = cache.load(key)
    np.testing.assert_array_equal(arrays["w"], np.arange(3))


def test_an_edited_info_in_meta_json_is_refused(tmp_path, caplog):
    cache = ArrayStore(tmp_path, "trained", 1)
    key = {"a": 1}
    folder = cache.save(key, {"w": np.arange(3)}, {"test_accuracy": 0.9})
    meta = json.loads((folder / "meta.json").read_text())
    meta["info"]["test_accuracy"] = 0.99
    (folder / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        assert cache.load(key) is None
    assert "meta.json was edited or damaged" in caplog.text


def test_an_artifact_stored_before_records_were_sealed_is_refused_and_rebuilt(tmp_path, caplog):
    cache = ArrayStore(tmp_path, "trained", 1)
    key = {"a": 1}
    folder = cache.save(key, {"w": np.arange(3)}, {"test_accuracy": 0.9})
    meta = json.loads((folder / "meta.json").read_text())
    del meta["sha256"]  # as written by an older ifscale: nothing vouches for its info
    (folder / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        assert cache.load(key) is None
    assert "has no checksum (stored by an older ifscale)" in caplog.text
    assert not folder.exists()  # removed: the next save rebuilds it


def test_dead_writers_temporary_folders_are_removed(tmp_path):
    cache = ArrayStore(tmp_path, "trained", 1)
    cache.root.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    from ifscale.cache.atomic import HOST as _HOST

    gone = cache.root / f".abc-{_HOST}-{dead}-xyz"
    old = cache.root / ".def-legacy"
    alive = cache.root / f".ghi-{_HOST}-{os.getpid()}-xyz"
    for folder in (gone, old, alive):
        folder.mkdir()
    os.utime(old, (time.time() - 7 * 3600,) * 2)
    cache.save({"a": 1}, {"w": np.arange(3)}, {})
    assert not gone.exists() and not old.exists() and alive.exists()


def test_the_data_folder_does_not_follow_the_cache_folder(monkeypatch, tmp_path):
    """IFSCALE_CACHE_DIR alone moves the caches, not the MNIST that `make setup` fetched."""
    monkeypatch.setenv("IFSCALE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("IFSCALE_DATA_DIR", raising=False)
    cfg = cli.compose_run([])
    assert cfg.paths.cache_dir == str(tmp_path)
    assert cfg.paths.data_dir == str(ROOT / ".cache" / "data")


def test_a_collapsed_model_is_called_degenerate_before_any_fit(inputs):
    data = load_images("npz", path=inputs / "good.npz")
    model = build_model("cnn_small", data.num_classes)
    params = init_params(model, data.input_shape, __import__("jax").random.key(0))
    kind = ImagesDomain()
    assert kind.degenerate(model, params, data) is None
    import jax

    zero = jax.tree_util.tree_map(lambda p: p * 0, params)  # constant logits for every image
    assert "same outputs for every image" in kind.degenerate(model, zero, data)


def test_a_train_size_beyond_the_corpus_is_logged_and_recorded(inputs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        data = load_translation(
            path=str(inputs / "corpus_good"),
            train_size=1000,
            vocab_size=40,
            max_length=16,
            tokenizer_fn=stored_tokenizer(tmp_path),
        )
    assert "train_size=1000 but the corpus has 48" in caplog.text
    assert data.stats["train_pairs_requested"] == 1000 and data.stats["train_pairs_read"] == 48


def test_a_degenerate_model_stops_the_run_before_the_fit(inputs, tmp_path, monkeypatch):
    from ifscale.utils import DegenerateModelError

    monkeypatch.setattr(ImagesDomain, "degenerate", lambda self, model, params, data: "collapsed")
    fitted = []
    import ifscale.run.stages.score

    monkeypatch.setattr(ifscale.run.stages.score, "fit_method", lambda *a, **k: fitted.append(1))
    cfg = cli.compose_run(
        good_image_run(inputs, tmp_path / "cache", "method=tracin", "progress=false")
    )
    with pytest.raises(DegenerateModelError, match="collapsed"):
        ifscale.run.pipeline.run(cfg, tmp_path / "run")
    assert not fitted and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("case_id", ["config-mesh-model-indivisible", "config-name-too-long"])
def test_config_refused_without_data_leaves_no_run_folder(case_id, inputs, tmp_path):
    """Checks that need no data (the mesh, the run name) run before Hydra makes the run
    folder: nothing is written, not even a run.log."""
    (case,) = [c for c in CASES if c.id == case_id]
    run_dir = tmp_path / "run"
    code, lines = _cli(*_overrides(case, inputs, tmp_path / "cache"), f"hydra.run.dir={run_dir}")
    assert code == 2 and len(lines) == 1 and case.names in lines[0], lines
    assert not run_dir.exists() and not (tmp_path / "cache").exists()


def test_the_grad_route_is_refused_where_it_would_be_wrong(inputs, tmp_path):
    """vmap of a convolution's gradient is wrong on several CPU devices (docs/scaling.md):
    `method.route=grad` with `mesh.data` > 1 there is refused in one line, before training."""
    env = simulated_devices_env(2)
    overrides = good_image_run(
        inputs, tmp_path / "cache", "method=arnoldi", "method.route=grad", "mesh.data=2"
    )
    code, lines = _cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert code == 2, lines
    errors = [line for line in lines if "Bad configuration" in line]
    assert len(errors) == 1 and "method.route" in errors[0] and "CPU" in errors[0], lines
    assert not (tmp_path / "cache" / "trained").exists()


def test_merge_runs_and_names_what_is_missing_in_one_line(inputs, tmp_path):
    """experiments/merge.py runs (every call ended in AttributeError before): with no
    stored fit it says so in one line, exit 2, before training."""
    command = [sys.executable, str(ROOT / "experiments" / "merge.py")]
    overrides = good_image_run(inputs, tmp_path / "cache", "method=arnoldi", "score.shards=2")
    done = subprocess.run(
        [*command, *overrides, f"hydra.run.dir={tmp_path / 'merge'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if "ERROR" in line]
    assert len(errors) == 1 and "score.require_fit: no cached arnoldi fit" in errors[0], lines
    assert not (tmp_path / "cache" / "trained").exists()


AUTO_ROUTE_ON_TWO_CPUS = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from ifscale.influence import Arnoldi, ParamView, Task
from ifscale.influence.hvp import device_batches
from ifscale.influence.scoring import self_influence_scores
from ifscale.influence.sharding import make_mesh
from ifscale.models import build_model
from ifscale.train import cross_entropy

rng = np.random.default_rng(0)
model = build_model("cnn_small")
x = rng.random((16, 28, 28, 1)).astype(np.float32)
y = rng.integers(0, 10, 16).astype(np.int32)
params = model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))["params"]
# A plain loss, no layerwise capture: "auto" would take the grad route.
task = Task(loss=lambda p, b: cross_entropy(model.apply({"params": p}, b[0]), b[1]))
view = ParamView.create(task, params, example=(x[:2], y[:2]))
method = Arnoldi(n=8, pbar=4, progress=False)
spectrum = method.spectrum(view, device_batches([(x, y)]), jax.random.key(0))
state = method.from_spectrum(view, spectrum)
out = {}
for name, mesh in (("one", make_mesh(1)), ("two", make_mesh(2))):
    out[name + "_route"] = method.prepare(state, (x, y), mesh=mesh).route
    out[name] = self_influence_scores(method, state, (x, y), 8, False, mesh).scores.tolist()
json.dump(out, sys.stdout)
"""


def test_route_auto_avoids_the_grad_route_where_it_would_be_wrong():
    env = simulated_devices_env(2)
    done = subprocess.run(
        [sys.executable, "-c", AUTO_ROUTE_ON_TWO_CPUS],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["one_route"] == "grad" and out["two_route"] == "jvp"
    np.testing.assert_allclose(out["two"], out["one"], rtol=1e-4)
