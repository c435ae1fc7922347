"""Feature engineering: the feature layout, model input selection, the per-family
estimator pipelines (fit, learn, overfit), unseen categories at scoring time and the
leakage-safe historical target rates.

All data here is small, synthetic and seeded; models are real scikit-learn / LightGBM.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flightdeck.core.spec import HistorySpec
from flightdeck.training import features
from flightdeck.training.features import FeatureError
from sklearn.metrics import log_loss, roc_auc_score

FEATURES = ("month", "distance", "hour", "carrier", "origin")
FAMILIES = ("dummy", "logistic", "random_forest", "lightgbm")
T0 = pd.Timestamp("2013-03-01 12:00", tz="UTC")


# ---------------------------------------------------------------- helpers
def small_spec(flights_spec, features_: tuple[str, ...] = FEATURES, **training):
    """The flights spec cut down to synthetic columns: no joins, no history unless given."""
    cfg = flights_spec.training.model_copy(update={"candidates": ("dummy", "lightgbm"), "tuning_budget": 1,
                                                   "tune_top": 1, "cv_folds": 2, "joins": (), "history": (),
                                                   **training})
    return flights_spec.model_copy(update={"training": cfg, "features": features_})


def make_data(n: int, seed: int, carriers=("AA", "UA", "DL", "B6")) -> tuple[pd.DataFrame, pd.Series]:
    """Schedule-like rows whose lateness depends on hour, carrier and distance (plus noise)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "month": rng.integers(1, 13, n),
        "distance": rng.uniform(100, 2500, n),
        "hour": rng.integers(5, 23, n),
        "carrier": rng.choice(list(carriers), n),
        "origin": rng.choice(["EWR", "JFK", "LGA"], n),
    })
    logit = (0.35 * (frame["hour"] - 14) + np.where(frame["carrier"] == "UA", 1.5, 0.0)
             - 0.0008 * (frame["distance"] - 1300))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame, pd.Series(y, name="departed_late")


def fitted(family: str, spec, X: pd.DataFrame, y: pd.Series, params: dict | None = None):
    layout = features.feature_layout(spec, X)
    pipe = features.build_estimator(family, spec, layout, params)
    pipe.fit(features.select_features(X, layout), y.to_numpy(), **features.fit_params(family, layout))
    return pipe, layout


@pytest.fixture(scope="module")
def data():
    return make_data(400, seed=1)


# ---------------------------------------------------------------- layout and model input
def test_layout_takes_types_from_spec_and_infers_unknown_columns_from_dtype(flights_spec):
    """Delivered columns use the spec's type; joined/history names fall back to the frame's dtype."""
    spec = small_spec(flights_spec, ("month", "carrier", "distance", "gate", "origin", "load", "hour"))
    frame = pd.DataFrame({"month": [1], "carrier": ["AA"], "distance": [1.0], "gate": ["B7"],
                          "origin": ["JFK"], "load": [0.5], "hour": [5]})
    layout = features.feature_layout(spec, frame)
    assert layout.numeric == ("month", "distance", "load", "hour")
    assert layout.categorical == ("carrier", "gate", "origin")
    assert layout.columns == ["month", "distance", "load", "hour", "carrier", "gate", "origin"]
    assert layout.to_dict() == {"numeric": ["month", "distance", "load", "hour"],
                                "categorical": ["carrier", "gate", "origin"]}


def test_select_features_orders_columns_and_types_them(flights_spec):
    """Model input: layout order, numerics as float64 (text coerced to NaN), categories as text."""
    layout = features.FeatureLayout(("month", "distance"), ("carrier", "flight"))
    frame = pd.DataFrame({"carrier": ["AA", "UA"], "extra": [1, 2], "flight": [101, 7],
                          "distance": ["12.5", "oops"], "month": [3, 4]})
    X = features.select_features(frame, layout)
    assert list(X.columns) == ["month", "distance", "carrier", "flight"]
    assert X["month"].dtype == np.float64 and X["distance"].dtype == np.float64
    assert X["distance"].iloc[0] == 12.5 and np.isnan(X["distance"].iloc[1])
    assert X["carrier"].tolist() == ["AA", "UA"]
    assert X["flight"].tolist() == ["101", "7"]


def test_missing_category_stays_missing_and_is_not_counted_as_unseen(flights_spec, data):
    """None/NaN in a categorical feature reaches the encoders as missing, not as the category 'nan'."""
    layout = features.FeatureLayout(("month",), ("carrier",))
    frame = pd.DataFrame({"month": [1, 2], "carrier": pd.Series(["AA", None], dtype=object)})
    X = features.select_features(frame, layout)
    assert X["carrier"].iloc[0] == "AA"
    assert pd.isna(X["carrier"].iloc[1])
    X_train, y = data
    pipe, layout = fitted("lightgbm", small_spec(flights_spec), X_train, y, {"n_estimators": 1})
    new = X_train.head(3).astype({"origin": object})
    new.loc[new.index[0], "origin"] = None
    assert features.count_unseen_categories(pipe, features.select_features(new, layout), layout)["origin"] == 0


def test_select_features_names_the_missing_column(flights_spec):
    """A feature column absent from the data raises FeatureError naming it."""
    frame, _ = make_data(10, seed=0)
    layout = features.feature_layout(small_spec(flights_spec), frame)
    with pytest.raises(FeatureError, match="origin"):
        features.select_features(frame.drop(columns="origin"), layout)


# ---------------------------------------------------------------- model families
def test_lightgbm_with_one_boosting_round_fits_and_predicts(flights_spec, data):
    """n_estimators=1 is honoured: exactly one tree, valid and non-constant probabilities."""
    X, y = data
    pipe, layout = fitted("lightgbm", small_spec(flights_spec), X, y, {"n_estimators": 1})
    model = pipe.named_steps["model"]
    assert model.booster_.num_trees() == 1
    proba = pipe.predict_proba(features.select_features(X, layout))
    assert proba.shape == (len(X), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.unique(proba[:, 1]).size > 1


def test_lightgbm_training_log_loss_decreases_with_boosting_rounds(flights_spec, data):
    """Training log loss after 1 < 10 < 50 rounds goes strictly down (the booster learns)."""
    X, y = data
    pipe, layout = fitted("lightgbm", small_spec(flights_spec), X, y, {"n_estimators": 50})
    Xt = pipe.named_steps["features"].transform(features.select_features(X, layout))
    model = pipe.named_steps["model"]
    losses = [log_loss(y, model.predict_proba(Xt, num_iteration=k)[:, 1]) for k in (1, 10, 50)]
    assert losses[0] > losses[1] > losses[2], losses


@pytest.mark.parametrize(("family", "params"), [
    ("lightgbm", {"min_child_samples": 1, "n_estimators": 200}),
    ("random_forest", {"min_samples_leaf": 1}),
])
def test_tiny_learnable_dataset_can_be_overfitted(flights_spec, family, params):
    """With leaf-size limits lifted, 40 rows with a clean signal are separated perfectly (train AUC 1)."""
    X, _ = make_data(40, seed=3)
    y = pd.Series((X["distance"] > 1300).astype(int), name="departed_late")
    assert 5 <= y.sum() <= 35
    pipe, layout = fitted(family, small_spec(flights_spec), X, y, params)
    proba = pipe.predict_proba(features.select_features(X, layout))[:, 1]
    assert roc_auc_score(y, proba) == 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fits_and_returns_probabilities(flights_spec, data, family):
    """Each candidate family trains on the spec's layout and scores probabilities in [0, 1]."""
    X, y = data
    pipe, layout = fitted(family, small_spec(flights_spec), X, y)
    proba = pipe.predict_proba(features.select_features(X.head(50), layout))
    assert proba.shape == (50, 2)
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
    assert np.allclose(proba.sum(axis=1), 1.0)
    if family == "dummy":
        assert np.allclose(proba[:, 1], y.mean())
    else:
        assert roc_auc_score(y, pipe.predict_proba(features.select_features(X, layout))[:, 1]) > 0.7


def test_model_matrix_columns_follow_the_layout_order(flights_spec, data):
    """Column i of the transformed matrix is layout.columns[i] (distance logged, the rest passed through)."""
    X, y = data
    pipe, layout = fitted("lightgbm", small_spec(flights_spec), X, y, {"n_estimators": 1})
    assert flights_spec.training.transforms == {"distance": "log1p"}
    Xt = pipe.named_steps["features"].transform(features.select_features(X, layout))
    expected = {"month": X["month"], "distance": np.log1p(X["distance"]), "hour": X["hour"]}
    for i, name in enumerate(layout.numeric):
        np.testing.assert_allclose(Xt[:, i], expected[name], err_msg=name)


def test_unknown_family_is_rejected(flights_spec, data):
    X, _ = data
    spec = small_spec(flights_spec)
    with pytest.raises(ValueError, match="xgboost"):
        features.build_estimator("xgboost", spec, features.feature_layout(spec, X))


def test_fit_params_give_lightgbm_the_categorical_column_indices(flights_spec, data):
    """Categoricals come after the numerics; only LightGBM gets their indices, and uses them natively."""
    X, y = data
    spec = small_spec(flights_spec)
    layout = features.feature_layout(spec, X)
    assert layout.numeric == ("month", "distance", "hour") and layout.categorical == ("carrier", "origin")
    assert features.fit_params("lightgbm", layout) == {"model__categorical_feature": [3, 4]}
    for family in ("dummy", "logistic", "random_forest"):
        assert features.fit_params(family, layout) == {}
    assert features.fit_params("lightgbm", features.FeatureLayout(("a", "b"), ())) == {}

    pipe, _ = fitted("lightgbm", spec, X, y, {"n_estimators": 5})
    infos = pipe.named_steps["model"].booster_.dump_model()["feature_infos"]
    kinds = ["categorical" if infos[name]["values"] else "numeric" for name in infos]
    assert kinds == ["numeric"] * 3 + ["categorical"] * 2


# ---------------------------------------------------------------- unseen categories
@pytest.mark.parametrize("family", ["lightgbm", "logistic", "random_forest"])
def test_unseen_category_scores_without_error_and_is_counted(flights_spec, data, family):
    """A carrier never seen in training scores like any other row and is counted as unseen (missing is not)."""
    X, y = data
    pipe, layout = fitted(family, small_spec(flights_spec), X, y)
    new = X.head(6).copy()
    new["carrier"] = ["ZZ", "ZZ", "QQ", "AA", "UA", "DL"]
    Xn = features.select_features(new, layout)
    proba = pipe.predict_proba(Xn)[:, 1]
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
    assert features.count_unseen_categories(pipe, Xn, layout) == {"carrier": 3, "origin": 0}
    assert features.count_unseen_categories(pipe, features.select_features(X, layout), layout) == {
        "carrier": 0, "origin": 0}
    assert features.known_categories(pipe, layout)["carrier"] == {"AA", "UA", "DL", "B6"}


# ---------------------------------------------------------------- history features
def history_spec(flights_spec, *history: HistorySpec):
    return small_spec(flights_spec, ("carrier", "origin", "dest"), history=history)


def ts(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def frame_at(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    out["time_hour"] = pd.to_datetime(out["time_hour"], utc=True).astype("datetime64[us, UTC]")
    return out


def test_history_rate_only_sees_outcomes_known_before_the_row(flights_spec):
    """An outcome at t is known at t + label_delay (P1D): hidden at t+12h and t+24h, seen at t+25h."""
    assert flights_spec.label_delay == "P1D"
    spec = history_spec(flights_spec, HistorySpec(name="carrier_rate", by=("carrier",), smoothing=1.0))
    history = frame_at([{"carrier": "AA", "time_hour": ts(0), "departed_late": 1}])
    frame = frame_at([{"carrier": "AA", "time_hour": ts(25)},
                      {"carrier": "AA", "time_hour": ts(12)},
                      {"carrier": "AA", "time_hour": ts(24)},
                      {"carrier": "AA", "time_hour": ts(0)}])
    out = features.add_history_features(frame, history, spec, prior=0.2)
    # one positive outcome, smoothing 1 towards 0.2: (1 + 1 * 0.2) / (1 + 1)
    assert out["carrier_rate"].tolist() == pytest.approx([0.6, 0.2, 0.2, 0.2])
    assert out["time_hour"].tolist() == frame["time_hour"].tolist()  # row order kept
    assert "carrier_rate" not in frame.columns  # input not modified


def test_history_rate_with_flights_spec_smoothing_and_several_outcomes(flights_spec):
    """The flights spec's history (smoothing 50): counts only known outcomes and ignores unlabelled ones."""
    spec = history_spec(flights_spec, *flights_spec.training.history[1:2])
    assert spec.training.history[0].name == "carrier_late_rate" and spec.training.history[0].smoothing == 50
    history = frame_at([{"carrier": "AA", "time_hour": ts(0), "departed_late": 1},
                        {"carrier": "AA", "time_hour": ts(1), "departed_late": 1},
                        {"carrier": "AA", "time_hour": ts(2), "departed_late": 0},
                        {"carrier": "AA", "time_hour": ts(3), "departed_late": None},
                        {"carrier": "AA", "time_hour": ts(40), "departed_late": 1}])
    frame = frame_at([{"carrier": "AA", "time_hour": ts(30)}, {"carrier": "AA", "time_hour": ts(25.5)}])
    out = features.add_history_features(frame, history, spec, prior=0.1)
    expected_30 = (2 + 50 * 0.1) / (3 + 50)  # t0, t1, t2 known (at 24h, 25h, 26h); t3 unlabelled; t40 not yet
    expected_25_5 = (2 + 50 * 0.1) / (2 + 50)  # t0, t1 known; t2 becomes known only at 26h
    assert out["carrier_late_rate"].tolist() == pytest.approx([expected_30, expected_25_5])


def test_rows_without_history_get_the_prior(flights_spec):
    """No outcome of the group known yet (or no history at all): the rate is the prior."""
    spec = history_spec(flights_spec, HistorySpec(name="carrier_rate", by=("carrier",), smoothing=5.0))
    history = frame_at([{"carrier": "AA", "time_hour": ts(0), "departed_late": 1}])
    frame = frame_at([{"carrier": "B6", "time_hour": ts(100)}, {"carrier": "AA", "time_hour": ts(-5)}])
    out = features.add_history_features(frame, history, spec, prior=0.3)
    assert out["carrier_rate"].tolist() == pytest.approx([0.3, 0.3])
    empty = features.add_history_features(frame, history.iloc[0:0], spec, prior=0.3)
    assert empty["carrier_rate"].tolist() == pytest.approx([0.3, 0.3])


def test_history_groups_by_the_by_columns_and_keeps_groups_separate(flights_spec):
    """Each group sees only its own outcomes; multi-column keys do not run together ("A","BC" vs "AB","C")."""
    spec = history_spec(flights_spec,
                        HistorySpec(name="carrier_rate", by=("carrier",), smoothing=1.0),
                        HistorySpec(name="route_rate", by=("origin", "dest"), smoothing=1.0))
    history = frame_at([{"carrier": "AA", "origin": "A", "dest": "BC", "time_hour": ts(0), "departed_late": 1},
                        {"carrier": "AA", "origin": "A", "dest": "BC", "time_hour": ts(1), "departed_late": 1},
                        {"carrier": "UA", "origin": "AB", "dest": "C", "time_hour": ts(0), "departed_late": 0},
                        {"carrier": "UA", "origin": "A", "dest": "C", "time_hour": ts(0), "departed_late": 0}])
    frame = frame_at([{"carrier": "AA", "origin": "AB", "dest": "C", "time_hour": ts(48)},
                      {"carrier": "UA", "origin": "A", "dest": "BC", "time_hour": ts(48)},
                      {"carrier": "DL", "origin": "A", "dest": "C", "time_hour": ts(48)}])
    out = features.add_history_features(frame, history, spec, prior=0.5)
    assert out["carrier_rate"].tolist() == pytest.approx([(2 + 0.5) / 3, (0 + 0.5) / 3, 0.5])
    assert out["route_rate"].tolist() == pytest.approx([(0 + 0.5) / 2, (2 + 0.5) / 3, (0 + 0.5) / 2])


def test_no_history_in_spec_leaves_frame_unchanged(flights_spec):
    spec = history_spec(flights_spec)
    frame = frame_at([{"carrier": "AA", "time_hour": ts(0)}])
    out = features.add_history_features(frame, frame.assign(departed_late=1), spec, prior=0.5)
    pd.testing.assert_frame_equal(out, frame)


def test_history_rates_land_on_the_right_rows_with_a_non_default_index(flights_spec):
    """The rate belongs to the row it was computed for, whatever the frame's index labels are."""
    spec = history_spec(flights_spec, HistorySpec(name="carrier_rate", by=("carrier",), smoothing=1.0))
    history = frame_at([{"carrier": "AA", "time_hour": ts(0), "departed_late": 1}])
    frame = frame_at([{"carrier": "AA", "time_hour": ts(25)}, {"carrier": "UA", "time_hour": ts(25)}])
    frame.index = [10, 11]
    out = features.add_history_features(frame, history, spec, prior=0.2)
    assert list(out.index) == [10, 11]
    assert out["carrier_rate"].tolist() == pytest.approx([0.6, 0.2])
