"""The typed record of a run's `metrics.json`, made of the records of the stages.

Each part of a run writes its own record, a dataclass whose fields are its keys, built by
keyword where the numbers are made (a misspelt key fails there): `RunInfo` (every run,
`ifscale.run.pipeline`), `DataMetrics` (what the domain measures of its model and data),
`ScoreMetrics` (a method's fit and its self-influence scores: `stage=fit`, `score`, `all`,
`merge`, and the pools of `select`), `ExplainMetrics` (`stage=explain`), `SelectMetrics`
(`stage=select`), `LdsMetrics` (`stage=retrain`, `stage=lds`), and `Closing` (the method's
options, the stage, the wall time, last).
`RunMetrics` is all of them in that order: a record built from the same values writes the
same file byte for byte (`json.dumps(..., indent=2)` and a newline). A key a run does not
write holds the sentinel `MISSING` and is left out of `to_json` (a key written as `null`
holds None and is kept).

Readers (the reports) load a run through `RunMetrics.load`, so a key that is renamed or
missing in a file fails there, in one place, with the file's name, not as a KeyError deep
inside a table.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any, Final


class _Missing(enum.Enum):
    """The type of `MISSING`: a key the run did not write."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING


def written(record) -> dict[str, Any]:
    """The keys of a record that were written (not `MISSING`), in its order."""
    return {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)
        if getattr(record, f.name) is not MISSING
    }


@dataclasses.dataclass(kw_only=True)
class RunInfo:
    """Every run (`ifscale.run.pipeline.run`)."""

    experiment: str
    dataset: str
    model: str
    n_params: int
    n_train: int
    n_test: int
    noise: dict[str, Any]  # kind, rate, n_noisy
    method: str
    seed: int
    test_accuracy: float | None
    train_time_s: float
    train_steps: int
    train_cache_hit: bool
    device: str
    config_hash: str
    train_key_hash: str
    git_commit: str | None


@dataclasses.dataclass(kw_only=True)
class DataMetrics:
    """What the domain measures of its trained model and data (`Domain.run_metrics`)."""

    # Image data: the share of training labels the model predicts (all; mislabeled ones).
    train_accuracy: float | None | _Missing = MISSING
    noisy_labels_fitted: float | None | _Missing = MISSING

    # Text data (translation).
    bleu: float | None | _Missing = MISSING
    test_loss_per_token: float | None | _Missing = MISSING
    test_examples: int | None | _Missing = MISSING
    vocab_size: int | _Missing = MISSING
    data_stats: dict[str, int | None] | _Missing = MISSING
    sequence_loss: str | _Missing = MISSING  # text data with a method


@dataclasses.dataclass(kw_only=True)
class ScoreMetrics:
    """A method's fit and its self-influence scores (`ifscale.run.stages.fit`, `score`):
    fits, scoring runs, merges and the pools of influence selections."""

    auc: float | None | _Missing = MISSING
    ap: float | None | _Missing = MISSING
    t_fit_s: float | _Missing = MISSING
    fit_cache_hit: bool | _Missing = MISSING
    t_score_s: float | _Missing = MISSING
    t_score_compile_s: float | _Missing = MISSING
    examples_per_s: float | _Missing = MISSING
    n_scored: int | _Missing = MISSING
    n_noisy_scored: int | _Missing = MISSING
    pbar: int | None | _Missing = MISSING
    fit_batch_size: int | _Missing = MISSING
    fit_batches: int | _Missing = MISSING
    n_perturbed_params: int | _Missing = MISSING
    auc_compare: float | None | _Missing = MISSING  # with score.compare_examples
    ap_compare: float | None | _Missing = MISSING
    n_compare: int | _Missing = MISSING
    eigenvalues: list[float] | _Missing = MISSING  # methods with a spectrum
    score_cache_hit: bool | _Missing = MISSING  # every chunk came from the score store
    shards: int | _Missing = MISSING  # `score.shards` (`ifscale.cache.chunks`)
    shard: int | _Missing = MISSING  # a shard job's `score.shard` (only part of the scores)
    shard_seconds: list[float] | _Missing = MISSING  # scoring seconds of each shard
    chunks: int | _Missing = MISSING  # chunks of the scored set
    chunks_reused: int | _Missing = MISSING  # of this job's chunks, found finished
    chunks_scored: int | _Missing = MISSING  # of this job's chunks, scored now
    score_choices: dict[str, Any] | _Missing = MISSING  # e.g. the projection route used


@dataclasses.dataclass(kw_only=True)
class ExplainMetrics:
    """Explanations (`stage=explain`, `ifscale.run.stages.explain`)."""

    explain_test_indices: list[int] | _Missing = MISSING
    explain_select: str | None | _Missing = MISSING  # null: explain.test_indices given
    explain_top_k: int | _Missing = MISSING
    explain_target: str | _Missing = MISSING  # "prediction" or "label"
    explain_seconds: float | _Missing = MISSING  # the pass over the training set
    explain_examples_per_s: float | _Missing = MISSING  # training examples per second
    self_influence_examples_per_s: float | _Missing = MISSING  # the same run, same data
    explain_cost_ratio: float | _Missing = MISSING  # per training example, to self-influence


@dataclasses.dataclass(kw_only=True)
class SelectMetrics:
    """Data cleaning (`stage=select`, Table 3: the domain's `select`)."""

    select: dict[str, Any] | _Missing = MISSING  # the SelectConfig
    n_selected: int | _Missing = MISSING
    selected_percent: float | _Missing = MISSING
    n_pool: int | _Missing = MISSING
    t_select_s: float | _Missing = MISSING
    kept_percent_by_kind: dict[str, float] | _Missing = MISSING
    selection_percent_by_kind: dict[str, float] | _Missing = MISSING
    precleaning_reasons: dict[str, int] | None | _Missing = MISSING
    bleu_short: float | None | _Missing = MISSING
    bleu_long: float | None | _Missing = MISSING
    budget_short: int | _Missing = MISSING
    budget_long: int | _Missing = MISSING
    selected_train_time_s: float | _Missing = MISSING
    selected_train_cache_hit: bool | _Missing = MISSING


@dataclasses.dataclass(kw_only=True)
class LdsMetrics:
    """The linear datamodeling score (`stage=lds`) and its ground truth (`stage=retrain`,
    `ifscale.run.groundtruth`)."""

    lds: float | None | _Missing = MISSING  # mean Spearman ρ over the test examples
    lds_low: float | None | _Missing = MISSING  # its 95% bootstrap interval
    lds_high: float | None | _Missing = MISSING
    lds_validation: float | None | _Missing = MISSING  # over the validation examples
    lds_random: float | None | _Missing = MISSING  # seeded random attributions (a control)
    lds_examples: int | _Missing = MISSING  # test examples with a defined ρ
    lds_validation_examples: int | _Missing = MISSING
    lds_subsets: int | _Missing = MISSING  # M
    lds_fraction: float | _Missing = MISSING  # α
    lds_seeds: int | _Missing = MISSING  # K models per subset, outputs averaged
    lds_output: str | _Missing = MISSING  # "loss" (log p of the label) or "margin"
    lds_choice: dict[str, Any] | _Missing = MISSING  # the grid's choice (`lds.grid`)
    lds_grid: list[dict[str, Any]] | _Missing = MISSING  # each point: validation, test LDS
    lds_by_seeds: list[float] | _Missing = MISSING  # test LDS from the first 1..K seeds
    t_attribute_s: float | _Missing = MISSING  # the test side and the pass, its compile excluded
    retrained_models: int | _Missing = MISSING  # trained by this job
    retrain_seconds: float | _Missing = MISSING  # their wall time, compilation included
    retrain_compile_seconds: float | _Missing = MISSING  # the first group's
    retrain_chunks: int | _Missing = MISSING
    retrain_chunks_reused: int | _Missing = MISSING  # of this job's, found stored
    sequential_models: int | _Missing = MISSING  # also trained one at a time (`lds.sequential`)
    sequential_models_per_s: float | _Missing = MISSING
    sequential_max_output_gap: float | _Missing = MISSING  # against the vectorised ones


@dataclasses.dataclass(kw_only=True)
class Closing:
    """Written last by every run (`ifscale.run.pipeline.run`)."""

    # Runs with a method or a selection.
    method_options: dict[str, Any] | _Missing = MISSING
    layers: str | list[str] | None | _Missing = MISSING  # influence runs

    # The stage (`stage`): "fit", "score", "all", "merge", "explain", "select". Runs of
    # older versions wrote it only for "fit", "shard" (a shard job, today a "score" run
    # with `shard`), "merge" and "explain".
    stage: str | _Missing = MISSING

    wall_time_s: float


@dataclasses.dataclass(kw_only=True)
class RunMetrics(
    Closing, LdsMetrics, SelectMetrics, ExplainMetrics, ScoreMetrics, DataMetrics, RunInfo
):
    """One run's metrics: the records of its parts, in this order (see the module
    docstring for which keys which runs have)."""

    @classmethod
    def of(cls, *records) -> RunMetrics:
        """The run's record from its parts' records (each written key once)."""
        values: dict[str, Any] = {}
        for record in records:
            for key, value in written(record).items():
                if key in values:
                    raise ValueError(f"metrics key {key!r} written twice")
                values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The keys the run wrote (those not `MISSING`), in the record's order."""
        return written(self)

    def to_json(self) -> str:
        """The text of `metrics.json`."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "metrics") -> RunMetrics:
        """The record of `values`; an unknown or a missing required key raises ValueError
        naming `source` and the keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in names]
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in values]
        if unknown or missing:
            problems = [f"unknown key(s) {unknown}"] if unknown else []
            problems += [f"missing key(s) {missing}"] if missing else []
            raise ValueError(
                f"{source}: {'; '.join(problems)} (see ifscale.run.metrics.RunMetrics)"
            )
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, source: str = "metrics.json") -> RunMetrics:
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"{source}: not a JSON object")
        return cls.from_dict(values, source)

    @classmethod
    def load(cls, path: str | Path) -> RunMetrics:
        """The record of the `metrics.json` at `path`."""
        return cls.from_json(Path(path).read_text(), str(path))
