"""Settings of the stages beyond scoring: explaining test predictions (`stage=explain`,
`ExplainConfig`) and selecting data to retrain on (`stage=select`, Table 3, `SelectConfig`)."""

from __future__ import annotations

import dataclasses

from ifscale.utils import check

SELECTIONS = ("all", "precleaning", "random", "influence")


EXPLAIN_SELECTIONS = ("misclassified", "highest_loss", "random")
EXPLAIN_TARGETS = ("prediction", "label")


@dataclasses.dataclass
class ExplainConfig:
    """Which test predictions `stage=explain` explains, and how.

    Attributes:
      test_indices: explain these test examples (positions in the test split); null: choose
        `count` of them by `select`.
      select: "misclassified" (those with the highest loss among the wrongly classified;
        classifiers only), "highest_loss" or "random" (seeded).
      count: how many test examples `select` chooses.
      target: whose loss L(z) is explained: "prediction" (the trained model's predicted
        class: proponents support the prediction as made) or "label" (the test label, or a
        translation's reference: proponents help the right answer).
      top_k: proponents and opponents kept per test example.
      compare_examples: the same run times self-influence on this many training examples,
        for the cost ratio of an explanation to a self-influence score.
    """

    test_indices: list[int] | None = None
    select: str = "misclassified"
    count: int = 16
    target: str = "prediction"
    top_k: int = 20
    compare_examples: int = 2048

    def __post_init__(self):
        check(
            self.select in EXPLAIN_SELECTIONS,
            "explain.select",
            f"must be one of {EXPLAIN_SELECTIONS}, got {self.select!r}",
        )
        check(self.count >= 1, "explain.count", f"must be >= 1, got {self.count}")
        check(
            self.target in EXPLAIN_TARGETS,
            "explain.target",
            f"must be one of {EXPLAIN_TARGETS}, got {self.target!r}",
        )
        check(self.top_k >= 1, "explain.top_k", f"must be >= 1, got {self.top_k}")
        check(self.compare_examples >= 1, "explain.compare_examples", "must be >= 1")
        if self.test_indices is not None:
            indices = list(self.test_indices)
            check(len(indices) >= 1, "explain.test_indices", "give at least one, or null")
            check(min(indices) >= 0, "explain.test_indices", f"must be >= 0, got {min(indices)}")
            check(
                len(set(indices)) == len(indices),
                "explain.test_indices",
                "each test example once",
            )
            self.test_indices = indices


@dataclasses.dataclass
class SelectConfig:
    """Data cleaning (`stage=select`, Table 3): select part of the noisy training set, train
    a fresh model on it, report BLEU after a short and a long budget.

    Attributes:
      method: which selection `stage=select` makes: "all" (no cleaning), "precleaning"
        (heuristic filters, `ifscale.domains.translation.cleaning`), "random" (the
        control), "influence" (lowest self-influence under `method`, from the model trained
        on the whole noisy set); null outside `stage=select`.
      fraction: share of the whole training set to keep (random, influence).
      after_precleaning: select from the pre-cleaned pairs only (random, influence).
      by_length: (influence) keep `fraction` of each target-length decile, its lowest
        scores, instead of the lowest scores overall.
      budget_short, budget_long: training steps of the fresh model at which BLEU is
        measured.
    """

    method: str | None = None
    fraction: float = 1.0
    after_precleaning: bool = False
    by_length: bool = False
    budget_short: int = 300
    budget_long: int = 1500

    def __post_init__(self):
        check(
            self.method is None or self.method in SELECTIONS,
            "select.method",
            f"must be null or one of {SELECTIONS}, got {self.method!r}",
        )
        check(0 < self.fraction <= 1, "select.fraction", f"must be in (0, 1], got {self.fraction}")
        check(
            not self.by_length or self.method == "influence",
            "select.by_length",
            f"stratifies selection by influence, not select.method={self.method!r}",
        )
        check(
            1 <= self.budget_short <= self.budget_long,
            "select.budget_short",
            f"must be in [1, budget_long={self.budget_long}], got {self.budget_short}",
        )


LDS_OUTPUTS = ("loss", "margin")


@dataclasses.dataclass
class LdsConfig:
    """The linear datamodeling score (LDS; Park et al., "TRAK", ICML 2023): how well a
    method's attributions predict what retraining on random subsets of the training set
    does to the outputs on test examples. `stage=retrain` trains the ground truth (resumable,
    in chunks of subsets, sharded with `score.shards`); `stage=lds` scores a method on it.

    Attributes:
      subsets: M random subsets of the training set (drawn with the run's seed).
      fraction: α, each subset's share of the training set, in (0, 1).
      seeds: K models trained from different seeds on each subset; their outputs are
        averaged.
      test_examples: the LDS is the mean over the first this many test examples.
      validation_examples: the next this many test examples choose hyperparameters (the
        damping...) and are never reported as the LDS.
      output: what is measured on a test example z: "margin" (the label's logit minus the
        log-sum-exp of the others, = log p/(1−p), TRAK's) or "loss" (−cross-entropy =
        log p(label), dattri's). Either way higher is better, and a proponent's attribution
        is positive.
      chunk: subsets per stored chunk of the ground truth (the unit of resuming and sharding).
      parallel: models trained at once, vectorised over models (`ifscale.retraining`); 1:
        one at a time, its steps dispatched one by one (fastest for convolutions on CPU).
      bootstrap: resamples of the test examples behind the 95% interval of the LDS.
      sequential: models also trained one at a time, for the speed-up of training many at
        once (0: none).
      grid: method options to choose on the validation examples, each with its candidate
        values (e.g. {damping: [0.001, 0.01, 0.1]}): `stage=lds` scores every combination
        and reports the test LDS of the one with the best validation LDS (with the whole
        grid); empty: the method as configured.
    """

    subsets: int = 100
    fraction: float = 0.5
    seeds: int = 1
    test_examples: int = 500
    validation_examples: int = 100
    output: str = "margin"
    chunk: int = 10
    parallel: int = 10
    bootstrap: int = 1000
    sequential: int = 0
    grid: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check(self.subsets >= 2, "lds.subsets", f"must be >= 2, got {self.subsets}")
        check(0 < self.fraction < 1, "lds.fraction", f"must be in (0, 1), got {self.fraction}")
        check(self.seeds >= 1, "lds.seeds", f"must be >= 1, got {self.seeds}")
        check(self.test_examples >= 2, "lds.test_examples", "must be >= 2")
        check(self.validation_examples >= 0, "lds.validation_examples", "must be >= 0")
        check(
            self.output in LDS_OUTPUTS,
            "lds.output",
            f"must be one of {LDS_OUTPUTS}, got {self.output!r}",
        )
        check(self.chunk >= 1, "lds.chunk", f"must be >= 1, got {self.chunk}")
        check(self.parallel >= 1, "lds.parallel", f"must be >= 1, got {self.parallel}")
        check(self.bootstrap >= 0, "lds.bootstrap", "must be >= 0")
        check(self.sequential >= 0, "lds.sequential", "must be >= 0")
        for option, values in self.grid.items():
            check(len(values) >= 1, f"lds.grid.{option}", "give at least one value")
