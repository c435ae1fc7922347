"""The gates' statistics: ROC AUC, population stability, and the paired bootstrap confidence
interval of a challenger's difference to the champion.
"""

from __future__ import annotations

import numpy as np

from flightdeck.data import drift
from flightdeck.training import train


def auc_score(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of scores ``p`` for labels ``y``; NaN when ``y`` holds a single class."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")


def population_stability(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` (about 0.1: a small shift, above 0.25: a large one).

    Continuous values use the reference's quantile bins; a reference with at most ``bins``
    distinct values is compared value by value (quantile edges would merge its values into
    one bin and hide any shift). Empty bins are clipped to 1e-6. NaN values form a bin of
    their own. The implementation is :func:`flightdeck.data.drift.psi`.
    """
    return drift.psi(reference, current, bins=bins)


def bootstrap_difference(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, metric: str,
                         samples: int, confidence: float, seed: int) -> dict[str, float]:
    """Paired bootstrap of (challenger - champion) on the same rows; positive means the challenger is better."""
    sign = -1.0 if metric == "log_loss" else 1.0

    def value(idx: np.ndarray) -> float:
        yy = y[idx]
        if metric == "log_loss":
            return train.score(yy, challenger[idx])["log_loss"] - train.score(yy, champion[idx])["log_loss"]
        return auc_score(yy, challenger[idx]) - auc_score(yy, champion[idx])

    rng = np.random.default_rng(seed)
    n = y.size
    diffs = np.array([value(rng.integers(0, n, n)) for _ in range(samples)], dtype=np.float64)
    diffs = sign * diffs[np.isfinite(diffs)]
    if diffs.size == 0:  # e.g. a one-class test split: no interval, so no evidence of non-regression
        return {"difference": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "samples": 0.0}
    alpha = (1 - confidence) / 2
    return {"difference": sign * value(np.arange(n)), "ci_low": float(np.quantile(diffs, alpha)),
            "ci_high": float(np.quantile(diffs, 1 - alpha)), "samples": float(diffs.size)}

