"""Binary-classifier evaluation: headline metrics on hand-checkable examples, input
checks, per-slice metrics, calibration bins and the artifact files."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from flightdeck.training import evaluate
from sklearn.metrics import log_loss, roc_auc_score

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {"n", "positive_rate", "mean_prediction", "roc_auc", "pr_auc", "log_loss", "brier",
               "accuracy", "precision", "recall", "f1"}


def _noisy(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities that rank better than chance but not perfectly."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    proba = np.clip(0.3 * y + rng.uniform(0, 0.7, size=n), 0, 1)
    return y, proba


# ---------------------------------------------------------------- classification_metrics
def test_perfect_ranking_gives_auc_one_and_hand_checked_losses():
    """Positives all above negatives: AUC and AP are 1; log loss and Brier match by hand."""
    m = evaluate.classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert set(m) == METRIC_KEYS
    assert all(type(v) is float for v in m.values())
    assert m["n"] == 4.0
    assert m["positive_rate"] == 0.5
    assert m["mean_prediction"] == pytest.approx(0.5)
    assert m["roc_auc"] == 1.0
    assert m["pr_auc"] == 1.0
    assert m["log_loss"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.8)) / 4)
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert m["accuracy"] == m["precision"] == m["recall"] == m["f1"] == 1.0


def test_constant_prediction_gives_auc_half():
    """A constant 0.5 ranks nothing: AUC 0.5, AP equals the base rate, log loss ln 2."""
    y = np.array([0, 1, 0, 0, 1, 0, 0, 1])
    m = evaluate.classification_metrics(y, np.full(8, 0.5))
    assert m["roc_auc"] == 0.5
    assert m["pr_auc"] == pytest.approx(3 / 8)
    assert m["log_loss"] == pytest.approx(math.log(2))
    assert m["brier"] == pytest.approx(0.25)
    # 0.5 >= threshold 0.5, so every row is predicted positive.
    assert m["recall"] == 1.0
    assert m["precision"] == pytest.approx(3 / 8)
    assert m["accuracy"] == pytest.approx(3 / 8)


def test_threshold_decides_the_confusion_counts():
    """One each of TP, FP, FN, TN at 0.5; at 0.95 nothing is positive and precision is 0, not an error."""
    y, p = np.array([0, 1, 1, 0]), np.array([0.6, 0.4, 0.9, 0.2])
    m = evaluate.classification_metrics(y, p, threshold=0.5)
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5, 0.5)
    high = evaluate.classification_metrics(y, p, threshold=0.95)
    assert (high["accuracy"], high["precision"], high["recall"], high["f1"]) == (0.5, 0.0, 0.0, 0.0)


def test_accepts_bool_labels_and_lists():
    m = evaluate.classification_metrics([False, True, True], [0.2, 0.7, 0.9])
    assert m["roc_auc"] == 1.0 and m["n"] == 3.0


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_auc_but_finite_log_loss(label):
    y = np.full(6, label)
    p = np.array([0.1, 0.3, 0.5, 0.6, 0.8, 0.95])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = evaluate.classification_metrics(y, p)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 0
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]))
    assert m["positive_rate"] == float(label)
    assert all(math.isfinite(v) for k, v in m.items() if k not in {"roc_auc", "pr_auc"})


@pytest.mark.parametrize(("y", "p", "message"), [
    ([0, 1, 1], [0.2, 0.8], "length mismatch"),
    ([], [], "empty input"),
    ([0, 1, 1], [0.2, float("nan"), 0.7], "NaN"),
    ([0, 2, 1], [0.2, 0.5, 0.7], "labels must be 0 or 1"),
    ([0, -1, 1], [0.2, 0.5, 0.7], "labels must be 0 or 1"),
    ([0.0, float("nan"), 1.0], [0.2, 0.5, 0.7], "labels must be 0 or 1"),
    (["no", "yes", "yes"], [0.2, 0.5, 0.7], "numeric 0/1 labels"),
    ([0, 1, 1], [0.2, 1.5, 0.7], r"\[0, 1\]"),
    ([0, 1], [[0.8, 0.2], [0.3, 0.7]], "1-D"),
])
def test_bad_input_raises_a_clear_value_error(y, p, message):
    with pytest.raises(ValueError, match=message):
        evaluate.classification_metrics(np.asarray(y), np.asarray(p))


# ---------------------------------------------------------------- slice_metrics
def _sliced_frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Carrier AA 120 rows, UA 60, B6 20; origin JFK/LGA; one-class slice for 'mono'."""
    y, p = _noisy(200, seed=11)
    frame = pd.DataFrame({
        "carrier": ["AA"] * 120 + ["UA"] * 60 + ["B6"] * 20,
        "origin": np.where(np.arange(200) % 2 == 0, "JFK", "LGA"),
        "hour": np.where(np.arange(200) < 150, 7, 19),
    }, index=np.random.default_rng(3).permutation(200) + 1000)  # y/p align by position, not index
    return frame, y, p


def test_slice_metrics_drops_small_slices_and_sorts():
    frame, y, p = _sliced_frame()
    out = evaluate.slice_metrics(frame, y, p, ["origin", "carrier"], min_rows=50)
    assert list(out.columns) == evaluate.SLICE_COLUMNS
    assert list(zip(out["slice_column"], out["slice_value"], out["n"], strict=True)) == [
        ("carrier", "AA", 120), ("carrier", "UA", 60), ("origin", "JFK", 100), ("origin", "LGA", 100)]
    assert "B6" not in set(out["slice_value"])
    # Numeric slice values come back as strings; min_rows is inclusive (hour 19 has exactly 50 rows).
    assert evaluate.slice_metrics(frame, y, p, ["hour"], min_rows=50)["slice_value"].tolist() == ["7", "19"]
    assert evaluate.slice_metrics(frame, y, p, ["hour"], min_rows=51)["slice_value"].tolist() == ["7"]


def test_slice_metrics_match_sklearn_per_slice():
    frame, y, p = _sliced_frame()
    out = evaluate.slice_metrics(frame, y, p, ["carrier"], min_rows=10).set_index("slice_value")
    for carrier in ["AA", "UA", "B6"]:
        mask = (frame["carrier"] == carrier).to_numpy()
        row = out.loc[carrier]
        assert row["n"] == mask.sum()
        assert row["positive_rate"] == pytest.approx(y[mask].mean())
        assert row["mean_prediction"] == pytest.approx(p[mask].mean())
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y[mask], p[mask]))
        assert row["log_loss"] == pytest.approx(log_loss(y[mask], p[mask], labels=[0, 1]))


def test_slice_auc_by_hand_with_ties_and_one_class_slice():
    """Slice a: one misordered pair out of four, plus a tie worth half -> AUC 0.625; slice b has no positives."""
    frame = pd.DataFrame({"s": ["a"] * 4 + ["b"] * 3 + [None]})
    y = np.array([0, 0, 1, 1, 0, 0, 0, 1])
    p = np.array([0.2, 0.6, 0.6, 0.4, 0.1, 0.2, 0.3, 0.9])
    out = evaluate.slice_metrics(frame, y, p, ["s"], min_rows=1).set_index("slice_value")
    assert out.loc["a", "roc_auc"] == pytest.approx(0.625)
    assert math.isnan(out.loc["b", "roc_auc"])
    assert math.isfinite(out.loc["b", "log_loss"])
    assert out.loc[evaluate.MISSING, "n"] == 1


def test_slice_metrics_input_checks_and_empty_result():
    frame, y, p = _sliced_frame()
    with pytest.raises(ValueError, match="not in frame"):
        evaluate.slice_metrics(frame, y, p, ["tailnum"])
    with pytest.raises(ValueError, match="length mismatch"):
        evaluate.slice_metrics(frame.iloc[:10], y, p, ["carrier"])
    empty = evaluate.slice_metrics(frame, y, p, ["carrier"], min_rows=1000)
    assert empty.empty and list(empty.columns) == evaluate.SLICE_COLUMNS
    assert list(evaluate.slice_metrics(frame, y, p, []).columns) == evaluate.SLICE_COLUMNS


# ---------------------------------------------------------------- calibration_table
@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_calibration_bins_count_sums_to_n(strategy):
    y, p = _noisy(500, seed=5)
    table = evaluate.calibration_table(y, p, bins=10, strategy=strategy)
    assert list(table.columns) == evaluate.CALIBRATION_COLUMNS
    assert table["n"].sum() == 500
    assert (table["n"] > 0).all()
    assert table["bin"].is_monotonic_increasing
    assert table["mean_prediction"].is_monotonic_increasing
    assert table["observed_rate"].between(0, 1).all()
    if strategy == "quantile":
        assert len(table) == 10 and table["n"].between(45, 55).all()


def test_calibration_observed_rate_by_hand_and_ties_merge():
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    table = evaluate.calibration_table(y, p, bins=4)
    assert table["n"].tolist() == [3, 3]
    assert table["observed_rate"].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert table["mean_prediction"].tolist() == pytest.approx([0.1, 0.9])
    constant = evaluate.calibration_table(y, np.full(6, 0.4), bins=10)
    assert constant["n"].tolist() == [6]
    with pytest.raises(ValueError, match="strategy"):
        evaluate.calibration_table(y, p, strategy="kmeans")


# ---------------------------------------------------------------- write_evaluation_artifacts
def test_write_evaluation_artifacts_writes_every_file(tmp_path):
    frame, y, p = _sliced_frame()
    importance = {f"feature_{i:02d}": float(i % 7) - 2.5 for i in range(30)}
    out_dir = tmp_path / "eval" / "run1"
    paths = evaluate.write_evaluation_artifacts(out_dir, y, p, frame, ["carrier", "origin"], importance,
                                                title="delay model", threshold=0.4)
    expected = {"confusion_matrix.png", "roc_curve.png", "pr_curve.png", "calibration.png", "slice_metrics.csv",
                "calibration.csv", "metrics.json", "feature_importance.csv", "feature_importance.png"}
    assert set(paths) == expected
    assert {f.name for f in out_dir.iterdir()} == expected
    for name, path in paths.items():
        assert path.parent == out_dir and path.name == name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE

    assert json.loads(paths["metrics.json"].read_text()) == evaluate.classification_metrics(y, p, threshold=0.4)
    slices = pd.read_csv(paths["slice_metrics.csv"], dtype={"slice_value": str})
    pd.testing.assert_frame_equal(slices, evaluate.slice_metrics(frame, y, p, ["carrier", "origin"]),
                                  check_dtype=False)
    assert pd.read_csv(paths["calibration.csv"])["n"].sum() == len(y)
    fi = pd.read_csv(paths["feature_importance.csv"])
    assert len(fi) == 30
    assert fi["importance"].abs().is_monotonic_decreasing


def test_write_evaluation_artifacts_without_importance_and_single_class(tmp_path):
    """No importance -> no importance files; one class -> plots still drawn, NaN AUC stored as null."""
    frame = pd.DataFrame({"carrier": ["AA", "UA"] * 30})
    y, p = np.zeros(60, dtype=int), np.linspace(0.05, 0.6, 60)
    paths = evaluate.write_evaluation_artifacts(tmp_path, y, p, frame, ["carrier"], None, title="one class")
    assert not any(name.startswith("feature_importance") for name in paths)
    assert len(paths) == 7 and all(path.exists() for path in paths.values())
    stored = json.loads(paths["metrics.json"].read_text())
    assert stored["roc_auc"] is None and stored["pr_auc"] is None
    assert stored["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]))
