"""Every config composes; bad configs fail at start with one line naming the key."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf

from ifscale.run.compose import from_dict
from ifscale.run.pipeline import run
from ifscale.utils import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
OmegaConf.register_new_resolver("project_root", lambda: str(ROOT), replace=True)
GROUPS = ("dataset", "model", "noise", "method", "train", "select", "experiment")


def _options(group):
    """The group's presets: its YAML files and the schemas stored by experiments/schema.py
    (all but the base_* schemas that presets build on)."""
    stored = ConfigStore.instance().repo.get(group, {})
    names = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    names |= {name.removesuffix(".yaml") for name in stored if not name.startswith("base")}
    return sorted(names)


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=False)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.random((40, 28, 28)),
        y_train=np.arange(40) % 10,
        x_test=rng.random((10, 28, 28)),
        y_test=np.arange(10) % 10,
    )
    return path


TEXT_DATASETS = (
    "multi30k",
    "noisy_parallel_text",
    "paracrawl",
    "parallel_text",
    "wmt17",
    "wmt_sample",
)
# What a translation option is composed with (a text option alone fails validation on
# purpose: a Transformer on MNIST, or permutation noise on images, is a config error).
TEXT_SETTING = ("dataset=multi30k", "model=transformer_small", "noise=permute")


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_and_validates(group, option, npz_file):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option == "images_npz":
        overrides.append(f"dataset.path={npz_file}")
    text = (
        (group == "dataset" and option in TEXT_DATASETS)
        or (group == "model" and option.startswith("transformer"))
        or (group == "noise" and option in ("permute", "crawl"))
    )
    if text:
        overrides = [o for o in TEXT_SETTING if not o.startswith(f"{group}=")] + overrides
    if option == "parallel_text":
        overrides.append(f"dataset.path={ROOT.parent / 'shared' / 'data' / 'multi30k'}")
    if group == "experiment" and option.startswith("lds_"):
        overrides.append("+lds_methods=exact")  # the sweep's axis: a method per job
    cfg = from_dict(_compose(overrides))  # raises on any invalid value
    chosen = {
        "experiment": cfg.name,
        "model": cfg.model.name,
        "noise": cfg.noise.kind,
        "method": cfg.method.name,
    }
    if group in chosen:
        assert chosen[group] == option


@pytest.mark.parametrize("method", _options("method"))
def test_config_round_trips_through_to_dict(method):
    layers = [] if method == "none" else ["method.layers=[Dense_0]"]
    cfg = from_dict(_compose([f"method={method}", *layers]))
    again = from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("option", _options("lds_methods"))
def test_every_lds_method_composes(option):
    cfg = from_dict(_compose(["experiment=lds_logreg", f"+lds_methods={option}"]))
    assert cfg.stage == "lds" and cfg.method.name != "none"
    for name in cfg.lds.grid:  # every grid key is an option of the method
        assert hasattr(cfg.method, name), (option, name)


def test_the_lds_sweeps_name_existing_methods():
    known = set(_options("lds_methods"))
    for setting in ("lds_logreg", "lds_mlp", "lds_cnn"):
        swept = OmegaConf.load(CONF_DIR / "experiment" / f"{setting}.yaml").hydra.sweeper.params
        methods = swept["+lds_methods"].split(",")
        assert methods and set(methods) <= known, (setting, set(methods) - known)


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), group


def test_experiment_presets_set_the_papers_settings():
    small = from_dict(_compose(["experiment=train_small"]))
    assert (small.model.name, small.dataset.subset_fraction, small.noise.rate) == (
        "cnn_small",
        0.1,
        0.1,
    )
    large = from_dict(_compose(["experiment=train_large"]))
    assert (large.model.name, large.dataset.subset_fraction, large.noise.rate) == (
        "cnn_large",
        None,
        0.1,
    )
    assert (
        large.train.optimizer,
        large.train.learning_rate,
        large.train.momentum,
        large.train.batch_size,
        large.train.epochs,
    ) == ("sgd", 0.1, 0.9, 128, 2)


def _sweep_rows(experiment: str) -> list[str]:
    params = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    key = f"+{experiment}" if f"+{experiment}" in params else f"+{experiment.split('_')[0]}"
    return str(params[key]).split(",")


@pytest.mark.parametrize(
    "experiment, params",
    [
        ("table1", {"+table1"}),
        ("table1_check", {"+table1_check"}),
        ("figures", {"+figures", "method.pbar"}),
        ("figures_baselines", {"+figures"}),  # no p̄: LISSA and TracIn have none
        ("table2", {"method.layers", "+table2", "method.pbar"}),
        ("table2_check", {"method.layers", "+table2_check"}),
        ("table2_baselines", {"+table2", "method.sequence_loss"}),
        ("table2_kfac", {"+table2", "method.layers"}),
        ("table3", {"+table3"}),
        ("table3_check", {"+table3_check"}),
        ("table1_seeds", {"seed", "+table1"}),
        ("regimes", {"train.epochs", "seed", "+regimes"}),
    ],
)
def test_multirun_experiments_sweep_exactly_their_grid(experiment, params):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert set(cfg.hydra.sweeper.params) == params


def test_table2_baselines_score_the_model_and_pairs_of_table2():
    base = from_dict(_compose(["experiment=table2", "+table2=arnoldi"]))
    for kind in ("sum", "mean"):
        loss = from_dict(
            _compose(
                ["experiment=table2_baselines", "+table2=loss", f"method.sequence_loss={kind}"]
            )
        )
        assert loss.method.name == "loss" and loss.method.sequence_loss == kind
        for part in ("dataset", "noise", "model", "train", "score", "seed"):
            assert getattr(loss, part) == getattr(base, part), part
    for name in ("kfac", "ekfac"):  # the K-FAC rows too, with the fit pairs of table2
        kfac = from_dict(
            _compose(["experiment=table2_kfac", f"+table2={name}", "method.layers=last3_decoder"])
        )
        assert kfac.method.name == name and kfac.method.layers == "last3_decoder"
        for part in ("dataset", "noise", "model", "train", "score", "seed"):
            assert getattr(kfac, part) == getattr(base, part), part
        assert kfac.method.fit_batches == base.method.fit_batches


@pytest.mark.parametrize("row", _sweep_rows("table3"))
def test_every_table3_row_composes_and_validates(row):
    cfg = from_dict(_compose(["experiment=table3", f"+table3={row}"]))
    assert cfg.select.method is not None


def test_table3_check_has_the_setting_of_table3():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        main = compose("config", overrides=["experiment=table3"], return_hydra_config=True)
        check = compose("config", overrides=["experiment=table3_check"], return_hydra_config=True)
    # Same data, scoring model and budgets: the check reuses the table's trained model.
    for part in ("dataset", "noise", "model", "train", "select", "score", "method", "seed"):
        assert check[part] == main[part], part


@pytest.mark.parametrize("row", _sweep_rows("table3_check"))
def test_each_table3_check_row_varies_one_setting_of_its_table3_row(row):
    variant = "mean" if row.endswith("_mean") else "by_length"
    base = row.removesuffix(f"_{variant}")
    assert base in _sweep_rows("table3")
    cfg = from_dict(_compose(["experiment=table3_check", f"+table3_check={row}"]))
    table = from_dict(_compose(["experiment=table3", f"+table3={base}"]))
    if variant == "mean":
        changed = {"method": dataclasses.replace(table.method, sequence_loss="mean")}
    else:
        changed = {"select": dataclasses.replace(table.select, by_length=True)}
    assert cfg == dataclasses.replace(table, name="table3_check", **changed)


@pytest.mark.parametrize("row", _sweep_rows("table1"))
def test_every_table1_row_composes_with_its_method(row):
    from ifscale.reports import TABLE1_ROWS

    cfg = from_dict(_compose(["experiment=table1", f"+table1={row}"]))
    spec = next(r for r in TABLE1_ROWS if r.key == row)  # every swept row is in the table
    assert cfg.method.name == spec.method
    assert {k: cfg.method.options()[k] for k in spec.options} == spec.options
    assert (cfg.model.name, cfg.dataset.subset_fraction, cfg.noise.rate) == ("cnn_large", None, 0.1)
    assert cfg.score.compare_examples == 500
    slow = row.startswith("lissa") or row in ("tracin_100", "trak_10")
    assert cfg.score.max_examples == (500 if slow else None)
    full = from_dict(
        _compose(["experiment=table1", f"+table1={row}", "score.compare_examples=null"])
    )
    assert full.score.max_examples is None  # FULL=1: every row scores every example


def test_table1_sweeps_every_row_of_the_paper():
    from ifscale.reports import TABLE1_ROWS

    assert sorted(_sweep_rows("table1")) == sorted(r.key for r in TABLE1_ROWS)


@pytest.mark.parametrize(
    "experiment, row", [(e, r) for e in ("figures", "figures_baselines") for r in _sweep_rows(e)]
)
def test_every_figure_run_composes_on_the_small_model(experiment, row):
    overrides = [f"experiment={experiment}", f"+figures={row}"]
    if experiment == "figures":
        overrides.append("method.pbar=200")
    cfg = from_dict(_compose(overrides))
    assert (cfg.model.name, cfg.dataset.subset_fraction) == ("cnn_small", 0.1)
    assert cfg.method.name == row.split("_")[0]
    # The same training run as experiment=train_small, so the cache is shared.
    small = from_dict(_compose(["experiment=train_small"]))
    assert cfg.train == small.train and cfg.dataset == small.dataset


@pytest.mark.parametrize(
    "override, key",
    [
        ("noise.rate=-0.1", "noise.rate"),
        ("noise.rate=1.0", "noise.rate"),
        ("dataset.subset_size=0", "dataset.subset_size"),
        ("dataset.subset_fraction=1.5", "dataset.subset_fraction"),
        ("train.epochs=0", "train.epochs"),
        ("train.learning_rate=abc", "train.learning_rate"),
        ("dataset.source=s3", "dataset.source"),
        # Modalities do not mix: each of these names what does not fit.
        ("model=transformer_tiny", "model.name"),
        ("dataset=multi30k", "model.name"),
        ("noise=permute", "noise.kind"),
        ("model.width=64", "model.width"),
        ("select.method=all", "select.method"),
        ("method.layers=last3_decoder", "method.layers"),
        ("method.sequence_loss=mean", "method.sequence_loss"),
    ],
)
def test_bad_values_name_the_key(override, key):
    assert key in _refusal([override])


def _refusal(overrides) -> str:
    """The error of composing and building a config: Hydra's or OmegaConf's for unknown
    keys and wrong types (composition), `ConfigError` for values out of range."""
    try:
        from_dict(_compose(overrides))
    except (ConfigError, HydraException) as e:
        return str(e)
    raise AssertionError(f"{overrides} was accepted")


@pytest.mark.parametrize(
    "override, key",
    [
        ("noise=mislabel", "noise.kind"),
        ("model.heads=5", "model.heads"),
        ("model.dropout=1.0", "model.dropout"),
        ("dataset.vocab_size=4", "dataset.vocab_size"),
        ("dataset.max_length=1", "dataset.max_length"),
        ("dataset.path=/nonexistent", "dataset.path"),
        ("dataset.source=hub", "dataset.source"),
        ("dataset.length_policy=cut", "dataset.length_policy"),
        ("select.method=best", "select.method"),
        ("select.fraction=0", "select.fraction"),
        ("select.budget_short=2000", "select.budget_short"),
        ("method.sequence_loss=max", "method.sequence_loss"),
        ("select.by_length=true", "select.by_length"),  # without selection by influence
    ],
)
def test_bad_translation_values_name_the_key(override, key):
    assert key in _refusal([*TEXT_SETTING, override])


@pytest.mark.parametrize(
    "shares, key",
    [
        ({"spam": 0.1}, "noise.shares"),
        ({"garbage": 1.5}, "noise.shares.garbage"),
        ({"garbage": 0.6, "misaligned": 0.5}, "noise.shares"),
        ({}, "noise.shares"),
    ],
)
def test_bad_crawl_shares_name_the_key(shares, key):
    raw = _compose(["dataset=noisy_parallel_text", "model=transformer_small", "noise=crawl"])
    from_dict(raw)  # the preset is valid
    raw["noise"]["shares"] = shares
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(raw)


def _run_cli(*overrides, tmp_path, data_dir):
    env = {
        **os.environ,
        "IFSCALE_CACHE_DIR": str(tmp_path / "cache"),
        "IFSCALE_DATA_DIR": str(data_dir),
    }
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["noise.rate=1.5"], "Bad configuration: noise.rate: must be in [0, 1), got 1.5"),
        (
            ["dataset=images_npz", "dataset.path=/nonexistent/x.npz"],
            "Bad configuration: dataset.path: /nonexistent/x.npz does not exist",
        ),
        (
            ["model=cnn_small", "dataset.subset_size=70000"],
            "Bad configuration: dataset.subset_size: 70000 is larger than the 60000",
        ),
        (["model=resnet"], "Bad configuration: Could not find 'model/resnet'; options: "),
        # Unknown keys and wrong types: refused while composing, before Hydra makes a run
        # folder, in one line naming the key.
        (
            ["train.lerning_rate=0.1"],
            "Bad configuration: train.lerning_rate: Key 'lerning_rate' not in 'TrainConfig'",
        ),
        (
            ["train.epochs=two"],
            "Bad configuration: train.epochs: Value 'two' of type 'str' could not be converted",
        ),
        (
            ["method=arnoldi", "method.iterations=5"],
            "Bad configuration: method.iterations: Key 'iterations' not in 'ArnoldiConfig'",
        ),
        (["method=arnoldi", "method.pbar=2.5"], "Bad configuration: method.pbar: Value '2.5'"),
    ],
)
def test_runner_rejects_bad_config_with_one_clear_line(overrides, message, tmp_path, mnist_dir):
    result = _run_cli(*overrides, tmp_path=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if "Bad configuration" in line]) == 1


def test_runner_trains_writes_metrics_and_reuses_the_cache(tmp_path, mnist_dir):
    args = (
        "model=cnn_small",
        "dataset.subset_size=600",
        "train.epochs=1",
        "train.batch_size=100",
        "train.kept_checkpoints=3",
        "name=cli_test",
    )
    first = _run_cli(*args, tmp_path=tmp_path, data_dir=mnist_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_params"] == 2698
    assert metrics["n_train"] == 600
    assert metrics["noise"] == {"kind": "mislabel", "rate": 0.1, "n_noisy": 60}
    assert 0 <= metrics["test_accuracy"] <= 1
    assert metrics["train_cache_hit"] is False
    assert metrics["experiment"] == "cli_test"
    assert metrics["device"].startswith(("cpu", "gpu", "cuda", "tpu", "rocm"))

    second = _run_cli(*args, tmp_path=tmp_path, data_dir=mnist_dir)
    assert second.returncode == 0
    assert "Reusing the trained model cached" in second.stdout + second.stderr
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["train_cache_hit"] is True
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["config_hash"] == metrics["config_hash"]


def test_library_pipeline_runs_without_hydra(tmp_path, mnist_dir):
    cfg = from_dict(
        {
            "dataset": {"data_dir": str(mnist_dir), "subset_size": 300},
            "noise": {"kind": "mislabel", "rate": 0.2},
            "model": {"name": "cnn_small"},
            "train": {"epochs": 1, "batch_size": 50, "kept_checkpoints": 2},
            "paths": {"cache_dir": str(tmp_path / "cache")},
            "progress": False,
        }
    )
    metrics = run(cfg, tmp_path / "out")
    assert metrics["noise"]["n_noisy"] == 60
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


TINY_TRAIN = (
    "model=cnn_small",
    "dataset.subset_size=600",
    "train.epochs=2",
    "train.batch_size=50",
    "train.kept_checkpoints=4",
)
TINY = (*TINY_TRAIN, "method.fit_batch_size=50", "method.fit_batches=2")


@pytest.mark.parametrize(
    "method_args",
    [
        ("method=arnoldi", "method.n=12", "method.pbar=5"),
        ("method=trak", "method.k=16", "method.models=3"),
        # 20-30 s each through the CLI: in `make test-slow` (each method's scores are tested
        # through the library in make test).
        pytest.param(("method=randproj", "method.pbar=5"), marks=pytest.mark.slow),
        pytest.param(("method=tracin", "method.checkpoints=4"), marks=pytest.mark.slow),
        pytest.param(
            ("method=lissa", "method.r=3", "score.max_examples=40"), marks=pytest.mark.slow
        ),
        # The dense Hessian costs one HVP per parameter (2,698): a 25-example fit set; 42 s,
        # in `make test-slow` (Exact's scores are checked against the dense Hessian in
        # tests/test_influence.py).
        pytest.param(
            ("method=exact", "method.pbar=20", "method.fit_batch_size=25", "method.fit_batches=1"),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_runner_scores_with_every_method(method_args, tmp_path, mnist_dir):
    fit_given = any(a.startswith("method.fit_") for a in method_args)
    base = TINY_TRAIN if fit_given else TINY
    result = _run_cli(*base, *method_args, tmp_path=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    n = 40 if "score.max_examples=40" in method_args else 600
    assert metrics["n_scored"] == n
    assert metrics["n_noisy_scored"] == n // 10  # stratified by noise flag
    assert 0 <= metrics["auc"] <= 1 and 0 <= metrics["ap"] <= 1
    assert metrics["t_fit_s"] >= 0 and metrics["examples_per_s"] > 0
    import pandas as pd

    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    assert len(scores) == n and scores["self_influence"].notna().all()
    assert scores["is_noisy"].sum() == metrics["n_noisy_scored"]


@pytest.mark.slow  # four runs of the CLI, 70 s (tests/test_fit_stage.py reuses fits in make test)
def test_method_fit_is_cached_and_reused(tmp_path, mnist_dir):
    args = (*TINY, "method=arnoldi", "method.n=10", "method.pbar=4")
    first = _run_cli(*args, tmp_path=tmp_path, data_dir=mnist_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    m1 = json.loads((tmp_path / "run" / "metrics.json").read_text())
    second = _run_cli(*args, "method.route=jvp", tmp_path=tmp_path, data_dir=mnist_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Reusing the arnoldi fit cached" in second.stdout + second.stderr
    m2 = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m2["fit_cache_hit"] and not m1["fit_cache_hit"]
    assert m2["auc"] == pytest.approx(m1["auc"], abs=1e-6)
    assert m2["eigenvalues"] == pytest.approx(m1["eigenvalues"])
    # One Arnoldi fit serves every p̄ <= n: the cached spectrum holds all Ritz pairs.
    third = _run_cli(*args, "method.pbar=7", tmp_path=tmp_path, data_dir=mnist_dir)
    assert third.returncode == 0, third.stderr[-2000:]
    m3 = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m3["fit_cache_hit"] and len(m3["eigenvalues"]) == 7
    assert m3["eigenvalues"][:4] == pytest.approx(m1["eigenvalues"])
    # A different n is a different fit.
    fourth = _run_cli(*args, "method.n=11", tmp_path=tmp_path, data_dir=mnist_dir)
    assert fourth.returncode == 0, fourth.stderr[-2000:]
    assert not json.loads((tmp_path / "run" / "metrics.json").read_text())["fit_cache_hit"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=arnoldi", "method.pbar=300", "method.n=200"], "method.pbar"),
        (["method=lissa", "method.scale=0"], "method.scale"),
        (["method=arnoldi", "method.layers=[Conv_9]", *TINY], "method.layers"),
    ],
)
def test_runner_rejects_bad_method_config(overrides, message, tmp_path, mnist_dir):
    result = _run_cli(*overrides, tmp_path=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"Bad configuration: {message}" in result.stdout + result.stderr


def test_a_run_folder_written_before_the_schemas_is_still_read():
    """config.json of runs made before the typed schemas ("image" data, train.checkpoints,
    null Transformer fields on CNNs): reports reload their data through it."""
    old = {
        "dataset": {"name": "mnist", "kind": "image", "source": "hub", "data_dir": "/d"}
        | {"path": None, "subset_fraction": 0.1, "subset_size": None, "scale": True}
        | {"train_size": None, "vocab_size": 4000, "max_length": 64, "length_policy": "drop"},
        "model": {"name": "cnn_small", "width": None, "heads": None, "dropout": None},
        "train": {"epochs": 30, "checkpoints": 100},
        "method": {"name": "arnoldi", "n": 200, "pbar": 5, "fit_batches": 10},
        "name": "figures",
    }
    cfg = from_dict(old)
    assert cfg.dataset.kind == "images" and cfg.dataset.subset_fraction == 0.1
    assert cfg.train.kept_checkpoints == 100 and cfg.method.n == 200


def test_shared_method_keys_need_no_plus_in_a_table_multirun():
    """`make table1 ARGS="method.fit_batches=10"`: the multirun's base config has method=none,
    whose schema has the keys every method shares, so a plain override composes."""
    cfg = from_dict(_compose(["experiment=table1", "method.fit_batches=10"]))
    assert cfg.method.name == "none" and cfg.method.fit_batches == 10
    row = from_dict(_compose(["experiment=table1", "+table1=arnoldi_10", "method.fit_batches=10"]))
    assert row.method.name == "arnoldi" and row.method.fit_batches == 10


def test_table1_seeds_repeat_table1_rows_in_its_setting():
    """`make table1 SEEDS=3`: the other seeds run Table 1's own rows and setting, only the
    seed changed (so seed 0 of the report is Table 1's run)."""
    params = OmegaConf.load(CONF_DIR / "experiment" / "table1_seeds.yaml").hydra.sweeper.params
    assert set(_sweep_rows("table1_seeds")) <= set(_sweep_rows("table1"))
    assert "0" not in str(params["seed"]).split(",")
    for row in _sweep_rows("table1_seeds"):
        table1 = _compose(["experiment=table1", f"+table1={row}"])
        seeds = _compose(["experiment=table1_seeds", f"+table1={row}", "seed=0"])
        table1.pop("name"), seeds.pop("name")
        assert seeds == table1, row
