"""Data cleaning (Table 3): select training pairs, train a fresh model on them, judge it by
BLEU after a short and a long budget.

Selections: every pair ("all"), the heuristic pre-cleaning's ("precleaning"), a seeded
random share ("random", the control), or the share with the lowest self-influence
("influence", optionally within each target-length decile), each optionally from the
pre-cleaned pairs only. The translation domain's `select` (`stage=select`).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ifscale.cache.arrays import ArrayStore
from ifscale.cache.keys import SELECTED_VERSION, selection_key
from ifscale.data.text import PAD_ID
from ifscale.domains.translation.cleaning import (
    length_strata,
    lowest_scores,
    lowest_scores_by_stratum,
    pre_clean,
    random_selection,
)
from ifscale.train import TrainedModel
from ifscale.utils import check, config_hash

if TYPE_CHECKING:
    from ifscale.config import RunConfig

PoolScorer = Callable[[np.ndarray], tuple[dict[str, Any], pd.DataFrame]]


def select_and_judge(
    cfg: RunConfig, prep: Any, score_pool: PoolScorer
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Selects training pairs by `cfg.select`, trains a fresh model on them for
    `select.budget_long` steps and reports BLEU after both budgets, with the share of each
    noise kind the selection kept.

    Args:
      cfg: the run's config.
      prep: the data and the scoring model trained on all of it (the run's
        `ifscale.run.context.Prepared`).
      score_pool: self-influence of the pairs at an index array (metrics, scores table).

    Returns:
      (metrics, the pool's scores with a "selected" column, or None when nothing was
      scored).
    """
    sel, data = cfg.select, prep.data
    n = data.n_train
    pool = np.arange(n)
    reasons = None
    if sel.method == "precleaning" or sel.after_precleaning:
        keep, reasons = pre_clean(data.train_pairs.source, data.train_pairs.target)
        pool = np.flatnonzero(keep)
    metrics: dict[str, Any] = {}
    scores = None
    start = time.perf_counter()
    if sel.method in ("random", "influence"):
        k = round(sel.fraction * n)
        check(
            1 <= k <= len(pool),
            "select.fraction",
            f"{sel.fraction} of {n} pairs is {k}, but {len(pool)} are available to select from",
        )
        if sel.method == "random":
            chosen = pool[random_selection(len(pool), seed=cfg.seed, count=k)]
        else:
            metrics, scores = score_pool(pool)
            values = scores["self_influence"].to_numpy()
            if sel.by_length:
                lengths = (data.target_train[pool] != PAD_ID).sum(axis=1)
                picked = lowest_scores_by_stratum(values, length_strata(lengths), k)
            else:
                picked = lowest_scores(values, count=k)
            chosen = pool[picked]
            scores["selected"] = np.isin(pool, chosen)
    else:  # all, or every pair pre-cleaning keeps
        chosen = pool
    t_select = time.perf_counter() - start

    selected = data.subset(chosen)
    judge = dataclasses.replace(cfg.train, steps=sel.budget_long, kept_checkpoints=1)
    model = prep.domain.build_model(cfg, data)
    key = selection_key(
        config_hash(prep.train_key),
        chosen,
        dataclasses.asdict(judge),
        (sel.budget_short, sel.budget_long),
    )
    trained, hit = ArrayStore(cfg.paths.cache_dir, "selected", SELECTED_VERSION).get_or_build(
        key,
        lambda: prep.domain.train(
            model,
            selected,
            judge,
            cfg.seed,
            progress=cfg.progress,
            evaluate_at=(sel.budget_short, sel.budget_long),
        ),
        lambda t: (t.to_arrays(), t.info),
        TrainedModel.from_arrays,
    )
    bleu = {e["step"]: e["bleu"] for e in trained.info["evaluations"]}
    kinds = sorted(set(data.noise_kind))
    metrics |= {
        "select": dataclasses.asdict(sel),
        "n_selected": len(chosen),
        "selected_percent": 100.0 * len(chosen) / n,
        "n_pool": len(pool),
        "t_select_s": t_select,
        "kept_percent_by_kind": {
            k: 100.0 * float(np.isin(np.flatnonzero(data.noise_kind == k), chosen).mean())
            for k in kinds
        },
        "selection_percent_by_kind": {
            k: 100.0 * float(np.mean(selected.noise_kind == k)) for k in kinds
        },
        # How many pairs pre-cleaning kept and why it dropped the others.
        "precleaning_reasons": (
            None if reasons is None else dict(Counter(r or "kept" for r in reasons))
        ),
        "bleu_short": bleu.get(sel.budget_short),
        "bleu_long": bleu.get(sel.budget_long),
        "budget_short": sel.budget_short,
        "budget_long": sel.budget_long,
        "selected_train_time_s": trained.info["train_time_s"],
        "selected_train_cache_hit": hit,
    }
    return metrics, scores
