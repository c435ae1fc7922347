"""ONNX packaging on small real fitted pipelines: the whole LightGBM pipeline (log1p, median
imputation, ordinal categories with unknown/missing -> -1, native categorical splits) reproduces
the Pipeline's probabilities to 1e-5 on rows with NaNs, negatives and unseen categories; a
tampered graph or a limit below the real difference fails parity; the families that do not
convert say which and why.

Data is synthetic and seeded; models are real scikit-learn / LightGBM; scoring is real onnxruntime.
A soft-voting ensemble converts when every member does.
"""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from flightdeck.training import features, packaging
from flightdeck.training.train import SoftVotingEnsemble
from onnx import numpy_helper

LIMIT = 1e-5


def small_spec(flights_spec, **training):
    cfg = flights_spec.training.model_copy(update={"joins": (), "history": (), "transforms": {"distance": "log1p"},
                                                   **training})
    return flights_spec.model_copy(update={"training": cfg,
                                           "features": ("month", "distance", "hour", "carrier", "origin")})


def make_rows(n: int, seed: int, carriers=("AA", "UA", "DL", "B6"), origins=("EWR", "JFK", "LGA"),
              missing: float = 0.1) -> tuple[pd.DataFrame, np.ndarray]:
    """Schedule-like rows with missing distances and categories; lateness depends on all features."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"month": rng.integers(1, 13, n).astype(float), "distance": rng.uniform(100, 2500, n),
                          "hour": rng.integers(5, 23, n).astype(float), "carrier": rng.choice(list(carriers), n),
                          "origin": rng.choice(list(origins), n)})
    logit = (0.35 * (frame["hour"] - 14) + np.where(frame["carrier"] == "UA", 1.5, 0.0)
             + np.where(frame["origin"] == "EWR", 0.7, 0.0) - 0.0008 * (frame["distance"] - 1300))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["distance"] = frame["distance"].where(rng.uniform(size=n) > missing)
    frame["carrier"] = frame["carrier"].where(rng.uniform(size=n) > missing)
    frame["origin"] = frame["origin"].where(rng.uniform(size=n) > missing)
    return frame, y


def fitted(family: str, spec, X: pd.DataFrame, y: np.ndarray, params: dict | None = None):
    layout = features.feature_layout(spec, X)
    pipe = features.build_estimator(family, spec, layout, params)
    pipe.fit(features.select_features(X, layout), y, **features.fit_params(family, layout))
    return pipe, layout


@pytest.fixture(scope="module")
def spec(flights_spec):
    return small_spec(flights_spec)


@pytest.fixture(scope="module")
def train_rows():
    return make_rows(3000, seed=1)


@pytest.fixture(scope="module")
def scoring_rows() -> pd.DataFrame:
    """Rows the model has not seen: unseen carrier ZZ and origin XXX, NaNs, negative distances."""
    X, _ = make_rows(4000, seed=2, carriers=("AA", "UA", "ZZ", "DL"), origins=("EWR", "XXX", "LGA"))
    X.loc[X.index % 17 == 0, "distance"] = -25.0
    return X


@pytest.fixture(scope="module")
def lightgbm(spec, train_rows):
    X, y = train_rows
    return fitted("lightgbm", spec, X, y, {"n_estimators": 120})


def native(pipe, X: pd.DataFrame, layout) -> np.ndarray:
    return np.asarray(pipe.predict_proba(features.select_features(X, layout)))[:, 1]


# ---------------------------------------------------------------- whole-pipeline parity
def test_the_whole_lightgbm_pipeline_converts_with_parity_on_nans_negatives_and_unseen_categories(
        lightgbm, scoring_rows):
    pipe, layout = lightgbm
    X = features.select_features(scoring_rows, layout)
    unseen = features.count_unseen_categories(pipe, X, layout)
    assert unseen["carrier"] > 0 and unseen["origin"] > 0  # the rows do exercise unknown -> -1
    assert X["distance"].isna().any() and (X["distance"] < 0).any() and X["carrier"].isna().any()
    splits = pipe.named_steps["model"].booster_.trees_to_dataframe()["decision_type"]
    assert (splits == "==").any(), "the booster must use native categorical splits for this test to mean anything"

    model = packaging.export_onnx(pipe, layout, scoring_rows.head(5))
    assert isinstance(model, bytes)
    graph = onnx.load_from_string(model).graph
    assert [i.name for i in graph.input] == ["numeric", "categorical"]  # the WHOLE pipeline, not the matrix
    assert {"LabelEncoder", "Log", "TreeEnsemble"} <= {n.op_type for n in graph.node}

    parity = packaging.measure_parity(model, scoring_rows, layout, native(pipe, scoring_rows, layout), LIMIT)
    assert parity.rows == len(scoring_rows)
    assert parity.passed and parity.max_abs_diff <= 1e-12  # float64 splits and leaves: measured ~2e-16


def test_onnx_scores_match_the_pipeline_row_by_row_on_missing_and_unknown_only_rows(lightgbm):
    pipe, layout = lightgbm
    rows = pd.DataFrame({"month": [np.nan, 3.0, 7.0], "distance": [np.nan, -1.0, 0.0], "hour": [np.nan, 9.0, 22.0],
                         "carrier": [None, "ZZ", "UA"], "origin": [None, None, "EWR"]})
    model = packaging.export_onnx(pipe, layout)
    assert isinstance(model, bytes)
    got = packaging.predict_onnx(packaging.session_for(model), features.select_features(rows, layout), layout)
    np.testing.assert_allclose(got, native(pipe, rows, layout), rtol=0, atol=LIMIT)


def test_a_random_forest_pipeline_converts_with_parity(spec, train_rows, scoring_rows):
    X, y = train_rows
    pipe, layout = fitted("random_forest", spec, X, y, {"n_estimators": 20})
    model = packaging.export_onnx(pipe, layout, scoring_rows.head(5))
    assert isinstance(model, bytes)
    parity = packaging.measure_parity(model, scoring_rows, layout, native(pipe, scoring_rows, layout), LIMIT)
    assert parity.passed and parity.max_abs_diff <= 1e-12, parity  # inputs rounded to float32 like sklearn


def test_a_soft_voting_ensemble_of_convertible_members_converts_with_parity(spec, train_rows, scoring_rows, lightgbm):
    X, y = train_rows
    forest, layout = fitted("random_forest", spec, X, y, {"n_estimators": 20})
    ensemble = SoftVotingEnsemble([lightgbm[0], forest])
    model = packaging.export_onnx(ensemble, layout, scoring_rows.head(5))
    assert isinstance(model, bytes)
    reference = np.asarray(ensemble.predict_proba(features.select_features(scoring_rows, layout)))[:, 1]
    parity = packaging.measure_parity(model, scoring_rows, layout, reference, LIMIT)
    assert parity.passed and parity.max_abs_diff <= 1e-12, parity
    assert [n.op_type for n in onnx.load_from_string(model).graph.node].count("TreeEnsemble") == 2


def test_a_numeric_only_layout_converts(spec, train_rows, scoring_rows):
    X, y = train_rows
    numeric_spec = spec.model_copy(update={"features": ("month", "distance", "hour")})
    pipe, layout = fitted("lightgbm", numeric_spec, X[["month", "distance", "hour"]], y, {"n_estimators": 40})
    assert layout.categorical == ()
    model = packaging.export_onnx(pipe, layout)
    assert isinstance(model, bytes)
    assert [i.name for i in onnx.load_from_string(model).graph.input] == ["numeric"]
    assert packaging.measure_parity(model, scoring_rows, layout, native(pipe, scoring_rows, layout), LIMIT).passed


# ---------------------------------------------------------------- failing parity is refused
def _tampered(model: bytes, initializer: str, change) -> bytes:
    proto = onnx.load_from_string(model)
    for i, init in enumerate(proto.graph.initializer):
        if init.name == initializer:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init)),
                                                                         initializer))
            return proto.SerializeToString()
    raise AssertionError(f"no initializer {initializer!r}")


def test_a_tampered_graph_fails_parity(lightgbm, scoring_rows):
    pipe, layout = lightgbm
    model = packaging.export_onnx(pipe, layout)
    assert isinstance(model, bytes)
    broken = _tampered(model, "fd_medians", lambda m: m + 500.0)  # imputes missing values wrongly
    parity = packaging.measure_parity(broken, scoring_rows, layout, native(pipe, scoring_rows, layout), LIMIT)
    assert not parity.passed and parity.max_abs_diff > 1e-3


def test_a_limit_below_the_real_difference_fails_parity(lightgbm, scoring_rows):
    pipe, layout = lightgbm
    model = packaging.export_onnx(pipe, layout)
    assert isinstance(model, bytes)
    reference = np.round(native(pipe, scoring_rows, layout), 6)  # a model that rounds its scores
    measured = packaging.measure_parity(model, scoring_rows, layout, reference, LIMIT)
    assert measured.passed and 1e-7 < measured.max_abs_diff <= 5e-7
    assert not packaging.measure_parity(model, scoring_rows, layout, reference, measured.max_abs_diff / 2).passed


def test_nan_scores_count_as_failing_parity(lightgbm, scoring_rows):
    pipe, layout = lightgbm
    model = packaging.export_onnx(pipe, layout)
    assert isinstance(model, bytes)
    reference = native(pipe, scoring_rows, layout)
    reference[3] = np.nan
    parity = packaging.measure_parity(model, scoring_rows, layout, reference, LIMIT)
    assert parity.max_abs_diff == float("inf") and not parity.passed


def test_parity_on_mismatched_rows_names_both_counts(lightgbm, scoring_rows):
    pipe, layout = lightgbm
    model = packaging.export_onnx(pipe, layout)
    assert isinstance(model, bytes)
    with pytest.raises(ValueError, match="4000 rows of features but 3 reference"):
        packaging.measure_parity(model, scoring_rows, layout, np.zeros(3), LIMIT)


# ---------------------------------------------------------------- families that do not convert
@pytest.mark.parametrize(("family", "words"), [("dummy", "constant prior"), ("logistic", "one-hot encoder"),
                                               ("ensemble", "logistic: LogisticRegression")])
def test_a_family_that_does_not_convert_says_which_and_why(spec, train_rows, family, words):
    X, y = train_rows
    if family == "ensemble":
        members = [fitted(f, spec, X, y)[0] for f in ("lightgbm", "logistic")]
        pipe, layout = SoftVotingEnsemble(members), features.feature_layout(spec, X)
    else:
        pipe, layout = fitted(family, spec, X, y)
    out = packaging.export_onnx(pipe, layout, X.head(5))
    assert isinstance(out, packaging.Unsupported)
    assert out.family == family and words in out.reason


def test_a_category_equal_to_the_missing_marker_is_refused_by_name(spec, train_rows):
    X, y = train_rows
    X = X.assign(carrier=X["carrier"].where(X.index % 50 != 0, packaging.MISSING_CATEGORY))
    pipe, layout = fitted("lightgbm", spec, X, y, {"n_estimators": 10})
    with pytest.raises(ValueError, match="categorical feature 'carrier' has a category equal to the missing marker"):
        packaging.export_onnx(pipe, layout)
