"""Evaluation of binary classifiers: headline metrics, per-slice metrics, a calibration
table and the plot/CSV/JSON artifacts a training run or a monitoring check writes out.

Everything works on a label array (0/1) and a positive-class probability array of the
same length; nothing here fits or loads a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from flightdeck.core.values import jsonable

MISSING = "<missing>"
TOP_FEATURES = 25
SLICE_COLUMNS = ["slice_column", "slice_value", "n", "positive_rate", "mean_prediction", "roc_auc", "log_loss"]
CALIBRATION_COLUMNS = ["bin", "mean_prediction", "observed_rate", "n"]
_EPS = float(np.finfo(np.float64).eps)  # the clip sklearn.metrics.log_loss uses for float64


def _check_inputs(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and probabilities as float64, or a ValueError saying what is wrong."""
    y = np.asarray(y_true)
    try:
        p = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"proba must be numeric probabilities: {exc}") from exc
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and proba must be 1-D (got shapes {y.shape} and {p.shape}); "
                         "pass the positive-class column, e.g. predict_proba(X)[:, 1]")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"length mismatch: y_true has {y.shape[0]} rows, proba has {p.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("empty input: y_true and proba have no rows")
    if np.isnan(p).any():
        raise ValueError(f"proba contains {int(np.isnan(p).sum())} NaN value(s)")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"proba must lie in [0, 1] (got min {p.min():g}, max {p.max():g})")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise ValueError(f"y_true must be numeric 0/1 labels (got dtype {y.dtype})")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        shown = ", ".join(str(v) for v in pd.unique(y[bad])[:5])
        raise ValueError(f"y_true labels must be 0 or 1; found {int(bad.sum())} other value(s): {shown}")
    return y.astype(np.int64), p


def _row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row binary cross-entropy, clipped like sklearn's log_loss."""
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return -(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Headline metrics of positive-class probabilities against 0/1 labels.

    Args:
        y_true: labels, 0 or 1.
        proba: predicted probability of the positive class, same length.
        threshold: rows with ``proba >= threshold`` count as predicted positive.

    Returns:
        Plain floats; ``roc_auc`` and ``pr_auc`` are NaN when ``y_true`` has one class.

    Raises:
        ValueError: on empty input, a length mismatch, NaN or out-of-range
            probabilities, or labels other than 0 and 1.
    """
    y, p = _check_inputs(y_true, proba)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (got {threshold})")
    pred = (p >= threshold).astype(np.int64)
    two_classes = np.unique(y).size == 2
    return {
        "n": float(y.size),
        "positive_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
        "roc_auc": float(skm.roc_auc_score(y, p)) if two_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if two_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(np.mean((p - y) ** 2)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, labels=[0, 1], zero_division=0)),
        "recall": float(skm.recall_score(y, pred, labels=[0, 1], zero_division=0)),
        "f1": float(skm.f1_score(y, pred, labels=[0, 1], zero_division=0)),
    }


def _slice_keys(series: pd.Series) -> pd.Series:
    """Slice values as strings, missing values as ``MISSING``."""
    keys = series.astype(object).where(series.notna(), MISSING).astype(str)
    return keys.reset_index(drop=True)


def slice_metrics(frame: pd.DataFrame, y_true: Any, proba: Any, slice_columns: list[str],
                  min_rows: int = 50) -> pd.DataFrame:
    """Metrics per value of each slice column, for slices with at least ``min_rows`` rows.

    ``y_true`` and ``proba`` line up with ``frame`` by position, not by index. AUC comes
    from within-slice ranks (Mann-Whitney), so every column is one groupby pass.

    Returns:
        One row per (slice_column, slice_value) with the columns in ``SLICE_COLUMNS``,
        sorted by slice_column, then n descending; ``roc_auc`` is NaN for a one-class slice.
    """
    y, p = _check_inputs(y_true, proba)
    if len(frame) != y.size:
        raise ValueError(f"length mismatch: frame has {len(frame)} rows, y_true and proba have {y.size}")
    missing = [c for c in slice_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"slice columns not in frame: {missing}")
    if min_rows < 1:
        raise ValueError(f"min_rows must be at least 1 (got {min_rows})")

    parts = []
    for column in slice_columns:
        work = pd.DataFrame({"key": _slice_keys(frame[column]), "y": y, "p": p, "ll": _row_log_loss(y, p)})
        work["pos_rank"] = work.groupby("key")["p"].rank(method="average") * work["y"]
        g = work.groupby("key", sort=False).agg(n=("y", "size"), n_pos=("y", "sum"), mean_prediction=("p", "mean"),
                                                 log_loss=("ll", "mean"), rank_sum=("pos_rank", "sum"))
        g = g[g["n"] >= min_rows]
        n_neg = g["n"] - g["n_pos"]
        auc = (g["rank_sum"] - g["n_pos"] * (g["n_pos"] + 1) / 2) / (g["n_pos"] * n_neg)
        parts.append(pd.DataFrame({
            "slice_column": column, "slice_value": g.index.astype(str), "n": g["n"].astype(np.int64).to_numpy(),
            "positive_rate": (g["n_pos"] / g["n"]).to_numpy(dtype=np.float64),
            "mean_prediction": g["mean_prediction"].to_numpy(dtype=np.float64),
            "roc_auc": auc.where((g["n_pos"] > 0) & (n_neg > 0)).to_numpy(dtype=np.float64),
            "log_loss": g["log_loss"].to_numpy(dtype=np.float64),
        }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c.startswith("slice") else np.float64)
                             for c in SLICE_COLUMNS})
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["slice_column", "n", "slice_value"], ascending=[True, False, True],
                           kind="stable", ignore_index=True)[SLICE_COLUMNS]


def calibration_table(y_true: Any, proba: Any, bins: int = 10, strategy: str = "quantile") -> pd.DataFrame:
    """Mean prediction against observed positive rate per probability bin.

    Args:
        bins: number of bins asked for; quantile bins that coincide (ties) are merged.
        strategy: ``"quantile"`` (about equal counts) or ``"uniform"`` (equal widths on [0, 1]).

    Returns:
        Columns ``bin`` (0-based), ``mean_prediction``, ``observed_rate``, ``n``; empty
        bins are left out, so ``n`` always sums to the number of rows.
    """
    y, p = _check_inputs(y_true, proba)
    if bins < 1:
        raise ValueError(f"bins must be at least 1 (got {bins})")
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    elif strategy == "uniform":
        edges = np.linspace(0, 1, bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform' (got {strategy!r})")
    # Inner edges only: values equal to an edge go to the upper bin, the maximum stays in the last.
    index = np.searchsorted(edges[1:-1], p, side="right")
    table = (pd.DataFrame({"bin": index, "p": p, "y": y})
             .groupby("bin", sort=True)
             .agg(mean_prediction=("p", "mean"), observed_rate=("y", "mean"), n=("y", "size"))
             .reset_index())
    table["bin"] = table["bin"].astype(np.int64)
    table["n"] = table["n"].astype(np.int64)
    return table[CALIBRATION_COLUMNS]


def write_evaluation_artifacts(out_dir: Path, y_true: Any, proba: Any, frame: pd.DataFrame, slice_columns: list[str],
                               feature_importance: dict[str, float] | None, title: str,
                               threshold: float = 0.5) -> dict[str, Path]:
    """Write the evaluation plots, tables and metrics of one model into ``out_dir``.

    Files: confusion_matrix.png, roc_curve.png, pr_curve.png, calibration.png,
    slice_metrics.csv, calibration.csv, metrics.json (``classification_metrics``, NaN as
    null) and, when ``feature_importance`` is given, feature_importance.csv (all features,
    largest absolute importance first) and feature_importance.png (top 25).

    Returns:
        File name (e.g. ``"roc_curve.png"``) -> path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = _check_inputs(y_true, proba)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def save(fig: Any, name: str) -> None:
        path = out_dir / f"{name}.png"
        try:
            fig.tight_layout()
            fig.savefig(path, dpi=100)
        finally:
            plt.close(fig)
        paths[path.name] = path

    metrics = classification_metrics(y, p, threshold)
    two_classes = np.unique(y).size == 2

    # Confusion matrix at the threshold.
    cm = skm.confusion_matrix(y, (p >= threshold).astype(np.int64), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], ["0", "1"])
    ax.set_yticks([0, 1], ["0", "1"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"{title}\nconfusion matrix (threshold {threshold:g})")
    save(fig, "confusion_matrix")

    # ROC curve.
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    if two_classes:
        fpr, tpr, _ = skm.roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"AUC {metrics['roc_auc']:.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "undefined: one class only", ha="center", va="center")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title}\nROC curve")
    save(fig, "roc_curve")

    # Precision-recall curve.
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.axhline(metrics["positive_rate"], linestyle="--", color="grey", linewidth=1)
    if two_classes:
        precision, recall, _ = skm.precision_recall_curve(y, p)
        ax.step(recall, precision, where="post", label=f"AP {metrics['pr_auc']:.3f}")
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "undefined: one class only", ha="center", va="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{title}\nprecision-recall curve")
    save(fig, "pr_curve")

    # Calibration (reliability) diagram.
    calibration = calibration_table(y, p)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.plot(calibration["mean_prediction"], calibration["observed_rate"], marker="o")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_title(f"{title}\ncalibration (quantile bins)")
    save(fig, "calibration")

    paths["slice_metrics.csv"] = out_dir / "slice_metrics.csv"
    slice_metrics(frame, y, p, slice_columns).to_csv(paths["slice_metrics.csv"], index=False)
    paths["calibration.csv"] = out_dir / "calibration.csv"
    calibration.to_csv(paths["calibration.csv"], index=False)
    paths["metrics.json"] = out_dir / "metrics.json"
    paths["metrics.json"].write_text(json.dumps(jsonable(metrics), indent=2, allow_nan=False) + "\n")

    if feature_importance is not None:
        importance = pd.DataFrame({"feature": list(feature_importance),
                                   "importance": np.asarray(list(feature_importance.values()), dtype=np.float64)})
        importance = (importance.assign(_abs=importance["importance"].abs())
                      .sort_values(["_abs", "feature"], ascending=[False, True], kind="stable")
                      .drop(columns="_abs").reset_index(drop=True))
        paths["feature_importance.csv"] = out_dir / "feature_importance.csv"
        importance.to_csv(paths["feature_importance.csv"], index=False)
        top = importance.head(TOP_FEATURES).iloc[::-1]
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(top) + 1.2)))
        ax.barh(top["feature"].astype(str), top["importance"])
        ax.set_xlabel("importance")
        ax.set_title(f"{title}\nfeature importance (top {min(TOP_FEATURES, len(importance))})")
        save(fig, "feature_importance")
    return paths


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over quantile bins: sum of n_b/N * |mean prediction - observed rate|.

    The bins are those of :func:`calibration_table` (quantile edges of
    ``p``, coinciding edges merged).
    """
    table = calibration_table(y, p, bins=bins)
    return float((table["n"] / table["n"].sum() * (table["mean_prediction"] - table["observed_rate"]).abs()).sum())
