"""Realised quality once labels arrive: the metrics against sklearn, the None conventions for
undefined figures, the calibration error shared with the gates and the per-slice minimum."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from flightdeck.monitoring import realised
from sklearn.metrics import f1_score, log_loss, precision_score, recall_score, roc_auc_score

KEYS = ["rows", "positives", "base_rate", "mean_score", "prediction_bias", "precision", "recall", "f1", "roc_auc",
        "log_loss", "calibration_error"]


def _labelled(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from slightly miscalibrated scores."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, size=n)
    y = (rng.uniform(size=n) < np.clip(p * 1.2, 0, 1)).astype(int)
    return y, p


# ---------------------------------------------------------------- realised_metrics
@pytest.mark.parametrize("threshold", [0.2, 0.3, 0.5])
def test_realised_metrics_agree_with_sklearn(threshold):
    y, p = _labelled()
    m = realised.realised_metrics(y, p, threshold)
    predicted = (p >= threshold).astype(int)
    assert list(m) == KEYS
    assert (m["rows"], m["positives"]) == (2000, int(y.sum()))
    assert type(m["rows"]) is int and type(m["positives"]) is int
    assert m["base_rate"] == pytest.approx(y.mean())
    assert m["mean_score"] == pytest.approx(p.mean())
    assert m["precision"] == pytest.approx(precision_score(y, predicted))
    assert m["recall"] == pytest.approx(recall_score(y, predicted))
    assert m["f1"] == pytest.approx(f1_score(y, predicted))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["calibration_error"] == pytest.approx(realised.calibration_error(y, p))


def test_realised_metrics_accept_pandas_series_and_lists():
    y, p = _labelled(300, seed=1)
    expected = realised.realised_metrics(y, p, 0.3)
    assert realised.realised_metrics(pd.Series(y, dtype="Int64"), pd.Series(p), 0.3) == expected
    assert realised.realised_metrics(y.tolist(), p.tolist(), 0.3) == expected


def test_log_loss_clips_probabilities_at_1e_15():
    """A certain, wrong score costs -ln(1e-15) = 34.54, not infinity: (34.54 + 0) / 2 rows."""
    m = realised.realised_metrics([1, 0], [0.0, 0.0], 0.5)
    assert m["log_loss"] == pytest.approx(-math.log(1e-15) / 2)


def test_zero_rows_give_rows_0_and_every_figure_none():
    """No labels yet: the caller reports "no labels", never a metric of zero."""
    assert realised.realised_metrics([], [], 0.5) == {key: (0 if key == "rows" else None) for key in KEYS}


@pytest.mark.parametrize(("label", "undefined"), [
    pytest.param(0, {"roc_auc", "recall"}, id="all-negative"),  # recall: no positive to find
    pytest.param(1, {"roc_auc"}, id="all-positive"),
])
def test_a_single_class_gives_roc_auc_none_not_nan(label, undefined):
    p = np.linspace(0.05, 0.95, 40)
    m = realised.realised_metrics(np.full(40, label), p, 0.5)
    assert {k for k, v in m.items() if v is None} == undefined
    assert m["base_rate"] == label and m["log_loss"] == pytest.approx(log_loss(np.full(40, label), p, labels=[0, 1]))


@pytest.mark.parametrize(("y", "undefined", "f1"), [
    pytest.param([0, 1, 0, 1], {"precision"}, 0.0, id="positives-missed"),  # F1 = 2TP/(2TP+FP+FN) = 0/2
    pytest.param([0, 0, 0, 0], {"precision", "recall", "f1", "roc_auc"}, None, id="nothing-to-find"),
])
def test_precision_is_none_when_nothing_is_predicted_positive(y, undefined, f1):
    m = realised.realised_metrics(y, [0.1, 0.2, 0.3, 0.4], threshold=0.5)
    assert {k for k, v in m.items() if v is None} == undefined
    assert m["f1"] == f1


@pytest.mark.parametrize(("y", "p", "bias"), [
    pytest.param([0, 0, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5 - 0.25, id="over-predicts"),
    pytest.param([1, 1, 0, 1], [0.2, 0.4, 0.1, 0.5], 0.3 - 0.75, id="under-predicts"),
    pytest.param([1, 0, 0, 1], [0.9, 0.1, 0.2, 0.8], 0.5 - 0.5, id="unbiased"),
])
def test_prediction_bias_is_mean_score_minus_base_rate(y, p, bias):
    m = realised.realised_metrics(y, p, 0.5)
    assert m["prediction_bias"] == pytest.approx(bias)
    assert np.sign(m["prediction_bias"]) == np.sign(bias)


@pytest.mark.parametrize(("y", "p", "message"), [
    pytest.param([0, 1, 1, 0, 1], [0.1, np.nan, 0.3, np.nan, 0.5], "2 of 5 labelled rows have a NaN score",
                 id="nan-score"),
    pytest.param([0, None, 1], [0.1, 0.2, 0.3], "1 of 3 rows have a NaN label", id="nan-label"),
    pytest.param([0, 1, 1], [0.1, 1.2, -0.1], "2 of 3 scores lie outside", id="score-out-of-range"),
    pytest.param([0, 2, 1], [0.1, 0.2, 0.3], "1 of 3 labels are neither 0 nor 1", id="label-not-binary"),
    pytest.param([0, 1], [0.1, 0.2, 0.3], "length mismatch", id="lengths-differ"),
])
def test_bad_input_raises_value_error_saying_how_many_rows(y, p, message):
    with pytest.raises(ValueError, match=message):
        realised.realised_metrics(y, p, 0.5)


# ---------------------------------------------------------------- calibration_error
def test_calibration_error_matches_a_hand_computed_value():
    """Quantile bins: 0.1 observed 0.3 (10 rows), 0.5 observed 0.5 (10), 0.9 observed 0.7 (20).

    ECE = 10/40 * 0.2 + 10/40 * 0 + 20/40 * 0.2 = 0.15.
    """
    p = np.array([0.1] * 10 + [0.5] * 10 + [0.9] * 20)
    y = np.array([1] * 3 + [0] * 7 + [1] * 5 + [0] * 5 + [1] * 14 + [0] * 6)
    assert realised.calibration_error(y, p, bins=4) == pytest.approx(0.15)
    assert realised.realised_metrics(y, p, 0.5)["calibration_error"] == pytest.approx(0.15)


def test_the_gates_use_the_same_calibration_error():
    from flightdeck.gates import checks

    assert checks.calibration_error is realised.calibration_error


# ---------------------------------------------------------------- slice_metrics
@pytest.fixture
def sliced() -> pd.DataFrame:
    """60 UA rows, 50 AA (exactly the minimum), 49 B6 (one short), 55 with no carrier; origin EWR/JFK."""
    y, p = _labelled(214, seed=2)
    carrier = ["UA"] * 60 + ["AA"] * 50 + ["B6"] * 49 + [None] * 55
    origin = ["EWR", "JFK"] * 107
    return pd.DataFrame({"delayed": y, "score": p, "carrier": carrier, "origin": origin})


def test_slice_metrics_judge_values_with_at_least_min_rows_and_mark_the_rest_insufficient(sliced):
    out = realised.slice_metrics(sliced, "delayed", "score", ["carrier", "origin"], threshold=0.3, min_rows=50)
    assert [(s["subject"], s["rows"], s["status"]) for s in out] == [
        ("carrier=UA", 60, "ok"), ("carrier=<missing>", 55, "ok"), ("carrier=AA", 50, "ok"),
        ("carrier=B6", 49, "insufficient"), ("origin=EWR", 107, "ok"), ("origin=JFK", 107, "ok")]
    by_subject = {s["subject"]: s for s in out}
    for subject, rows in {"carrier=UA": sliced["carrier"] == "UA", "carrier=<missing>": sliced["carrier"].isna(),
                          "origin=JFK": sliced["origin"] == "JFK"}.items():
        part = sliced[rows]
        assert by_subject[subject] == {"subject": subject, "status": "ok",
                                       **realised.realised_metrics(part["delayed"], part["score"], 0.3)}
    assert by_subject["carrier=B6"] == {"subject": "carrier=B6", "status": "insufficient", "rows": 49,
                                        **{k: None for k in KEYS if k != "rows"}}


def test_slice_metrics_with_min_rows_1_judge_every_value(sliced):
    out = realised.slice_metrics(sliced, "delayed", "score", ["carrier"], threshold=0.3, min_rows=1)
    assert {s["status"] for s in out} == {"ok"} and sum(s["rows"] for s in out) == len(sliced)


def test_slice_metrics_refuse_unknown_columns_and_nan_scores(sliced):
    with pytest.raises(KeyError, match="dest"):
        realised.slice_metrics(sliced, "delayed", "score", ["dest"], threshold=0.3)
    bad = sliced.assign(score=sliced["score"].where(sliced["carrier"] != "B6"))  # NaN only in an insufficient slice
    with pytest.raises(ValueError, match="49 of 214 labelled rows have a NaN score"):
        realised.slice_metrics(bad, "delayed", "score", ["carrier"], threshold=0.3)
