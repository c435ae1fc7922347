"""Model engineering: training-data checks, the soft-voting ensemble, reproducible model
selection and the packaged MLflow pyfunc (saved, loaded, same probabilities).

Small, seeded synthetic data; real scikit-learn / LightGBM / MLflow (SQLite tracking in tmp).
"""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
from flightdeck.training import features, train
from flightdeck.training.model import FlightDeckClassifier
from flightdeck.training.train import TrainingDataError

FEATURES = ("month", "distance", "hour", "carrier", "origin")


# ---------------------------------------------------------------- helpers
def small_spec(flights_spec, **training):
    """The flights spec cut down to synthetic columns and a tiny search (no joins, no history)."""
    cfg = flights_spec.training.model_copy(update={"candidates": ("dummy", "lightgbm"), "tuning_budget": 1,
                                                   "tune_top": 1, "cv_folds": 2, "joins": (), "history": (),
                                                   **training})
    return flights_spec.model_copy(update={"training": cfg, "features": FEATURES})


def make_data(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Schedule-like rows whose lateness depends on hour, carrier and distance (plus noise)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "month": rng.integers(1, 13, n),
        "distance": rng.uniform(100, 2500, n),
        "hour": rng.integers(5, 23, n),
        "carrier": rng.choice(["AA", "UA", "DL", "B6"], n),
        "origin": rng.choice(["EWR", "JFK", "LGA"], n),
    })
    logit = (0.35 * (frame["hour"] - 14) + np.where(frame["carrier"] == "UA", 1.5, 0.0)
             - 0.0008 * (frame["distance"] - 1300))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame, pd.Series(y, name="departed_late")


@pytest.fixture(scope="module")
def splits(flights_spec):
    """Model input for train (500 rows) and validation (150 rows), with the layout."""
    spec = small_spec(flights_spec)
    frame, y = make_data(650, seed=11)
    layout = features.feature_layout(spec, frame)
    X = features.select_features(frame, layout)
    return X.iloc[:500], y.iloc[:500], X.iloc[500:].reset_index(drop=True), y.iloc[500:].reset_index(drop=True), layout


def fit(family: str, spec, layout, X, y, params=None):
    pipe = features.build_estimator(family, spec, layout, params)
    return pipe.fit(X, y.to_numpy(), **features.fit_params(family, layout))


# ---------------------------------------------------------------- check_training_data
def test_good_training_data_passes():
    X = pd.DataFrame({"a": range(4)})
    assert train.check_training_data(X, pd.Series([0, 1, 0, 1]), "train", min_rows=4) is None


@pytest.mark.parametrize(("rows", "target", "min_rows", "message"), [
    (0, [], 1, "train split is empty"),
    (4, [1, 1, 1, 1], 1, "has a single class"),
    (4, [0, 1, np.nan, 1], 1, "1 rows with a missing target"),
    (4, [0, 1, 0, 1], 5, "fewer than training.min_train_rows=5"),
], ids=["empty", "single-class", "nan-target", "too-few-rows"])
def test_bad_training_data_raises_training_data_error(rows, target, min_rows, message):
    """Data no model should be trained on fails with a TrainingDataError saying why."""
    X = pd.DataFrame({"a": range(rows)})
    y = pd.Series(target, dtype="float64")
    with pytest.raises(TrainingDataError, match=message):
        train.check_training_data(X, y, "train", min_rows=min_rows)


def test_cross_validation_without_two_classes_in_any_fold_is_a_training_data_error(flights_spec, splits):
    """If no time-series fold sees both classes, CV fails clearly instead of scoring nonsense."""
    X, _, _, _, layout = splits
    y = np.r_[np.zeros(len(X) - 3, dtype=int), np.ones(3, dtype=int)]
    with pytest.raises(TrainingDataError, match="both classes"):
        train.cross_validate("dummy", {}, X, y, small_spec(flights_spec), layout)


# ---------------------------------------------------------------- ensemble
def test_soft_voting_ensemble_averages_member_probabilities(flights_spec, splits):
    """The ensemble's probabilities are the plain mean of its members' probabilities."""
    X, y, X_val, _, layout = splits
    spec = small_spec(flights_spec)
    members = [fit("logistic", spec, layout, X, y), fit("lightgbm", spec, layout, X, y, {"n_estimators": 30})]
    p1, p2 = (m.predict_proba(X_val) for m in members)
    assert not np.allclose(p1, p2)
    ensemble = train.SoftVotingEnsemble(members)
    proba = ensemble.predict_proba(X_val)
    np.testing.assert_allclose(proba, (p1 + p2) / 2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(train.positive_proba(ensemble, X_val), (p1[:, 1] + p2[:, 1]) / 2, atol=1e-15)
    assert np.allclose(proba.sum(axis=1), 1.0)


# ---------------------------------------------------------------- select_model
def test_select_model_is_reproducible(flights_spec, splits):
    """Same data, same spec: the same chosen model, bit-identical predictions and equal validation metrics."""
    X, y, X_val, y_val, layout = splits
    spec = small_spec(flights_spec, candidates=("dummy", "logistic", "lightgbm"))
    reported: list[str] = []
    first = train.select_model(X, y, X_val, y_val, spec, layout, lambda name, *_: reported.append(name))
    second = train.select_model(X, y, X_val, y_val, spec, layout)

    assert second.chosen_name == first.chosen_name
    assert second.prediction_fingerprint == first.prediction_fingerprint
    assert second.validation == first.validation
    assert second.params == first.params
    assert second.leaderboard == first.leaderboard
    assert first.prediction_fingerprint == train.prediction_fingerprint(train.positive_proba(first.model, X_val))
    # every candidate was reported, the dummy is never chosen and the ensemble was tried
    assert {"dummy-default", "logistic-default", "lightgbm-default", "ensemble",
            "dummy-final", "logistic-final", "lightgbm-final"} <= set(reported)
    assert any(name.endswith("-trial-0") for name in reported)
    assert first.chosen_name in {"logistic", "lightgbm", "ensemble"}
    assert first.validation["roc_auc"] > 0.7


def test_prediction_fingerprint_tells_different_predictions_apart():
    p = np.array([0.1, 0.7, 0.4])
    assert train.prediction_fingerprint(p) == train.prediction_fingerprint(p.copy())
    assert train.prediction_fingerprint(p) == train.prediction_fingerprint(p.tolist())
    assert train.prediction_fingerprint(p) != train.prediction_fingerprint(p + 1e-12)


# ---------------------------------------------------------------- packaged model
@pytest.fixture
def tracking(tmp_path):
    """A private SQLite tracking store and experiment; the previous tracking URI (or none) is restored afterwards."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")  # set_tracking_uri mirrors the URI into this variable
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = mlflow.MlflowClient().create_experiment("unit-train", artifact_location=(tmp_path / "art").as_uri())
    yield exp_id
    mlflow.set_tracking_uri(previous)


def test_saved_pyfunc_loads_and_returns_the_pipelines_probabilities(flights_spec, splits, tracking):
    """Logged and re-loaded through MLflow, the model scores exactly like the in-memory pipeline,
    returns probabilities (not labels) and does not depend on the input's column order."""
    X, y, X_val, _, layout = splits
    pipe = fit("lightgbm", small_spec(flights_spec), layout, X, y, {"n_estimators": 40})
    with mlflow.start_run(experiment_id=tracking):
        info = mlflow.pyfunc.log_model(name="model", python_model=FlightDeckClassifier(pipe, layout.to_dict()),
                                       input_example=X.head(5))
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    expected = pipe.predict_proba(X_val)[:, 1]
    got = np.asarray(loaded.predict(X_val))
    assert got.shape == (len(X_val),)
    assert np.array_equal(got, expected)
    assert np.all((got > 0) & (got < 1)) and not np.all(np.isin(got, [0, 1]))
    assert np.array_equal(np.asarray(loaded.predict(X_val[list(reversed(X_val.columns))])), expected)
