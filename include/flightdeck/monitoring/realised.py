"""Realised quality of a model in production, once the labels of its scored rows arrive.

:func:`realised_metrics` measures one set of (label, score) pairs, :func:`slice_metrics` the
same per value of slice columns, and :func:`calibration_error` is the one implementation of the
expected calibration error (it lives in ``training.evaluate``, beside the calibration table, so the
gates use the same one).

Conventions: a figure that is undefined is ``None``, never NaN or a misleading zero: no rows
(the caller reports "no labels"), ROC AUC on a single class, precision when nothing is
predicted positive, recall when nothing is positive. Nothing here touches Airflow or storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from flightdeck.training import evaluate
from flightdeck.training.evaluate import calibration_error as calibration_error  # one implementation, re-exported

LOG_LOSS_CLIP = 1e-15  # probabilities are clipped to [1e-15, 1 - 1e-15] in the log loss
METRIC_KEYS = ("rows", "positives", "base_rate", "mean_score", "prediction_bias", "precision", "recall", "f1",
               "roc_auc", "log_loss", "calibration_error")


def _labels_and_scores(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and scores as float64, or a ValueError saying how many rows are wrong."""
    labels = pd.Series(y, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)
    scores = pd.Series(p, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)
    if labels.shape != scores.shape:
        raise ValueError(f"length mismatch: {labels.size} labels, {scores.size} scores")
    nan_scores = int(np.isnan(scores).sum())
    if nan_scores:
        raise ValueError(f"{nan_scores} of {scores.size} labelled rows have a NaN score")
    nan_labels = int(np.isnan(labels).sum())
    if nan_labels:
        raise ValueError(f"{nan_labels} of {labels.size} rows have a NaN label")
    outside = int(((scores < 0) | (scores > 1)).sum())
    if outside:
        raise ValueError(f"{outside} of {scores.size} scores lie outside [0, 1]")
    not_binary = int((~np.isin(labels, (0.0, 1.0))).sum())
    if not_binary:
        raise ValueError(f"{not_binary} of {labels.size} labels are neither 0 nor 1")
    return labels.astype(np.int64), scores


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    rows = int(y.size)
    if rows == 0:
        return {key: (0 if key == "rows" else None) for key in METRIC_KEYS}
    positives = int(y.sum())
    predicted = (p >= threshold).astype(np.int64)
    tp = int((predicted & y).sum())
    fp, fn = int(predicted.sum()) - tp, positives - tp
    clipped = np.clip(p, LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    base_rate, mean_score = positives / rows, float(p.mean())
    return {
        "rows": rows,
        "positives": positives,
        "base_rate": base_rate,
        "mean_score": mean_score,
        "prediction_bias": mean_score - base_rate,
        "precision": float(skm.precision_score(y, predicted, zero_division=0)) if tp + fp else None,
        "recall": float(skm.recall_score(y, predicted, zero_division=0)) if positives else None,
        "f1": float(skm.f1_score(y, predicted, zero_division=0)) if tp + fp + fn else None,
        "roc_auc": float(skm.roc_auc_score(y, p)) if 0 < positives < rows else None,
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))),
        "calibration_error": calibration_error(y, p),
    }


def realised_metrics(y: Any, p: Any, threshold: float) -> dict[str, float | int | None]:
    """Realised quality of scores ``p`` against the labels ``y`` that arrived for them.

    Args:
        y: labels, 0 or 1.
        p: the scores the model served, probabilities of the positive class.
        threshold: rows with ``p >= threshold`` count as predicted positive.

    Returns:
        ``rows``, ``positives`` (ints); ``base_rate``, ``mean_score``, ``prediction_bias``
        (mean score - base rate: positive when the model over-predicts), ``precision``,
        ``recall``, ``f1`` at the threshold, ``roc_auc``, ``log_loss`` (probabilities
        clipped to [1e-15, 1 - 1e-15]) and ``calibration_error`` (floats). Zero rows: rows 0
        and every other figure None. None also for ROC AUC on a single class, precision when
        nothing is predicted positive, recall when no row is positive, F1 when both hold.

    Raises:
        ValueError: lengths differ, or some rows have a NaN score or label, a score outside
            [0, 1] or a label other than 0 and 1 (the message says how many rows).
    """
    labels, scores = _labels_and_scores(y, p)
    return _metrics(labels, scores, threshold)


def slice_metrics(frame: pd.DataFrame, label: str, score: str, slices: Sequence[str], threshold: float,
                  min_rows: int = 50) -> list[dict[str, Any]]:
    """:func:`realised_metrics` per value of each slice column.

    Returns:
        One dict per (column, value), columns in the order given, then most rows first:
        ``{"subject": "carrier=UA", "rows": n, "status": "ok", **realised_metrics}``. A value
        with fewer than ``min_rows`` rows has ``"status": "insufficient"`` and every figure but
        ``rows`` None. Missing values are the value ``<missing>``.

    Raises:
        KeyError: ``label``, ``score`` or a slice column is not in ``frame``.
        ValueError: as :func:`realised_metrics`, checked on the whole frame.
    """
    absent = [c for c in (label, score, *slices) if c not in frame.columns]
    if absent:
        raise KeyError(f"columns not in the frame: {absent}")
    y, p = _labels_and_scores(frame[label], frame[score])
    out = []
    for column in slices:
        keys = frame[column].astype(object).where(frame[column].notna(), evaluate.MISSING).astype(str).to_numpy()
        values, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        for i in sorted(range(values.size), key=lambda i: (-counts[i], values[i])):
            rows = int(counts[i])
            figures: dict[str, float | int | None]
            if rows < min_rows:
                status, figures = "insufficient", {key: None for key in METRIC_KEYS}
            else:
                status, figures = "ok", _metrics(y[inverse == i], p[inverse == i], threshold)
            out.append({"subject": f"{column}={values[i]}", "status": status, **figures, "rows": rows})
    return out
