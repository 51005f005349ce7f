"""The linear datamodeling score (LDS; Park et al., "TRAK", ICML 2023): how well summed
attributions predict retraining.

For a test example z, M training subsets S_1..S_M and an attribution τ(z) ∈ R^n (τ_i > 0:
training on x_i raises z's measured output), the prediction for subset j is
Σ_{i ∈ S_j} τ_i(z); the LDS of z is Spearman's rank correlation, over the M subsets, between
those predictions and the outputs of models retrained on each subset. The score of a method
is the mean over test examples (with a bootstrap interval over them).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[m] Spearman's ρ between row i of `a` and row i of `b` ([m, M] each): the Pearson
    correlation of their ranks (ties get their mean rank). NaN where a row is constant."""
    ra = rankdata(np.asarray(a, np.float64), axis=1)
    rb = rankdata(np.asarray(b, np.float64), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def subset_predictions(attributions: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """[m, M] Σ_{i ∈ S_j} τ_i(z) from attributions [m, n] and subset masks [M, n]."""
    return np.asarray(attributions, np.float64) @ np.asarray(masks, np.float64).T


def lds_interval(
    per_example: np.ndarray, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean ρ over the test examples, and the 2.5% and 97.5% quantiles of that mean over
    `resamples` bootstrap resamples of the examples); NaN examples (a constant row) are left
    out, as dattri does."""
    values = np.asarray(per_example, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if resamples == 0 or len(values) < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return mean, float(low), float(high)
