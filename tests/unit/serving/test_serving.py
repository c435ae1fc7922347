"""The model as a dependency: resolving promoted versions in a real MLflow registry, and a
ServingModel around a real fitted Pipeline on real flights rows (features built by the
training code, scores, labels, feature hashes, unknown categories, bad input)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flightdeck.core.settings import Settings
from flightdeck.core.spec import ServingSpec, load_spec
from flightdeck.core.warehouse import now
from flightdeck.data import ingest, wrangle
from flightdeck.data.replay import load_replay_source
from flightdeck.serving import champion as serving
from flightdeck.serving import scoring
from flightdeck.training import features
from flightdeck.training.model import FlightDeckClassifier

FLIGHTS_SPEC = Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml"
KEY = "serving-unit-key"


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLIGHTS_SPEC)


@pytest.fixture(scope="module")
def delivered(spec) -> pd.DataFrame:
    """Three days of real flights as the replay delivers them (text columns)."""
    frame = load_replay_source(spec)
    return frame[(frame["_local_date"] >= date(2013, 4, 1)) & (frame["_local_date"] <= date(2013, 4, 3))]


def curate(spec, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows through ingestion and wrangling exactly as the data DAG does it."""
    rules = ingest.RowRules(batch_id="b", batch_date=None, received_at=now())
    feats = ingest.parse_rows(rows[list(spec.features_source.columns)], spec, spec.features_source, rules, 1, KEY)
    labels_source = spec.labels_source
    lab_rules = ingest.RowRules(batch_id="l", batch_date=None, received_at=now())
    labels = ingest.parse_rows(rows[list(labels_source.columns)], spec, labels_source, lab_rules, 1, KEY)
    return wrangle.wrangle_frame(feats.accepted.drop(columns=["_batch_id", "_row_number"]),
                                 labels.accepted.drop(columns=["_batch_id", "_row_number"]), spec)


@pytest.fixture(scope="module")
def model(spec, delivered) -> serving.ServingModel:
    """A LightGBM pipeline fitted like training does, wrapped as the packaged model, served."""
    curated = curate(spec, delivered)
    labelled = curated[curated[spec.target.name].notna()].reset_index(drop=True)
    params = wrangle.fit_wrangle(labelled, spec)
    train = wrangle.apply_wrangle(labelled, spec, params)
    references = features.load_references(spec, KEY)
    prior = float(train[spec.target.name].astype("float64").mean())
    frame = features.build_feature_frame(train, spec, references, train, prior)
    layout = features.feature_layout(spec, frame)
    pipeline = features.build_estimator("lightgbm", spec, layout, {"n_estimators": 30})
    pipeline.fit(features.select_features(frame, layout), frame[spec.target.name].astype(int),
                 **features.fit_params("lightgbm", layout))
    resolved = serving.ResolvedModel(name=spec.registered_model_name, version="7", alias="champion", run_id=None,
                                     dataset_version="unit")
    return serving.ServingModel(spec, resolved, FlightDeckClassifier(pipeline, layout.to_dict()), params, references,
                                train, prior, pii_key=KEY)


@pytest.fixture(scope="module")
def curated(spec, delivered) -> pd.DataFrame:
    return curate(spec, delivered).reset_index(drop=True)


def test_scores_are_the_packaged_models_probabilities_with_labels_and_hashes(model, curated, spec):
    scored = model.score_curated(curated)
    frame = scored.frame
    assert list(frame.columns) == [*spec.entity_key, "score", "label", "feature_hash"]
    assert len(frame) == len(curated) and scored.unknown_categories == {}
    X = model.feature_matrix(curated)
    # the pyfunc's own predict (what mlflow.pyfunc.load_model(...).predict runs) gives the same numbers
    np.testing.assert_array_equal(frame["score"].to_numpy(), model.python_model.predict(None, X))
    assert ((frame["score"] >= 0.5).astype("int8") == frame["label"]).all()
    assert frame["feature_hash"].nunique() > 0.9 * len(frame)
    assert model.version == "7" and model.model_uri == "models:/flightdeck-flights/7"


def test_the_feature_hash_follows_the_model_input_only(model, curated):
    base = model.score_curated(curated.head(20)).frame["feature_hash"]
    not_a_feature = curated.head(20).assign(minute=59)
    assert (model.score_curated(not_a_feature).frame["feature_hash"] == base).all()
    changed = curated.head(20).assign(distance=curated["distance"].head(20) + 100)
    assert (model.score_curated(changed).frame["feature_hash"] != base).all()


def test_the_serving_threshold_overrides_the_training_threshold(model, curated, spec):
    low = serving.ServingModel(spec.model_copy(update={"serving": ServingSpec(threshold=0.05)}), model.resolved,
                               model.python_model, model.wrangle_params, model.references, model.history,
                               model.prior, KEY)
    frame = low.score_curated(curated).frame
    assert low.threshold == 0.05
    assert ((frame["score"] >= 0.05).astype("int8") == frame["label"]).all()
    assert frame["label"].sum() > model.score_curated(curated).frame["label"].sum()


def test_unknown_categories_score_in_the_unknown_bucket_and_are_counted(model, curated):
    odd = curated.head(30).copy()
    odd.loc[odd.index[:4], "carrier"] = "ZZ"
    odd.loc[odd.index[:2], "dest"] = "NOWHERE"
    scored = model.score_curated(odd)
    assert scored.unknown_categories == {"carrier": 4, "dest": 2}
    assert scored.frame["score"].between(0, 1).all()


def test_a_missing_column_is_named_and_an_empty_batch_scores_empty(model, curated):
    with pytest.raises(serving.ScoringInputError, match="'dest'"):
        model.score_curated(curated.drop(columns=["dest"]))
    empty = model.score_curated(curated.iloc[:0])
    assert empty.frame.empty and list(empty.frame.columns)[-3:] == ["score", "label", "feature_hash"]


def test_applications_predict_on_delivered_rows_with_the_ingestion_row_rules(model, delivered, curated, spec):
    rows = delivered[list(spec.features_source.columns)].head(40).reset_index(drop=True)
    rows.loc[5, "origin"] = "BOS"   # outside the allowed set: quarantined at ingestion, not scored here
    rows.loc[7, "distance"] = "far"  # unparseable
    scores = model.predict(rows)
    assert np.isnan(scores[[5, 7]]).all() and not np.isnan(np.delete(scores, [5, 7])).any()
    expected = model.score_curated(curated.head(40)).frame["score"].to_numpy()
    np.testing.assert_allclose(np.delete(scores, [5, 7]), np.delete(expected, [5, 7]), rtol=0, atol=1e-12)
    _, issues = model.score_delivered(rows)
    assert issues[["row_number", "reason", "column_name"]].values.tolist() == [
        [6, "unseen_category", "origin"], [8, "unparseable", "distance"]]
    with pytest.raises(serving.ScoringInputError, match="sched_arr_time"):
        model.predict(rows.drop(columns=["sched_arr_time"]))


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real (empty) MLflow registry in a private home."""
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", KEY)
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings


def test_only_promoted_versions_are_resolved_and_a_broken_champion_is_named(registry, spec, tmp_path):
    import mlflow

    with pytest.raises(serving.NoChampionError, match="no @champion"):
        serving.resolve_model(spec, registry)
    mlflow.set_tracking_uri(registry.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    name = spec.registered_model_name
    client.create_registered_model(name)
    source = (tmp_path / "gone").as_uri()
    version = str(client.create_model_version(name, source=source, tags={"flightdeck.data_snapshot": "x"}).version)
    with pytest.raises(serving.NoChampionError):
        serving.resolve_model(spec, registry)
    with pytest.raises(serving.ChampionLoadError, match=f"version {version} .*not promoted"):
        serving.resolve_model(spec, registry, version=version)
    with pytest.raises(serving.ChampionLoadError, match="version 99"):
        serving.resolve_model(spec, registry, version="99")
    client.set_registered_model_alias(name, "champion", version)
    resolved = serving.resolve_model(spec, registry)
    assert (resolved.version, resolved.alias, resolved.model_uri) == (version, "champion", f"models:/{name}/{version}")
    with pytest.raises(serving.ChampionLoadError, match=f"cannot load {name} version {version}"):
        serving.load_serving_model(spec, registry)


def test_horizon_and_restricted_wrangling_parameters():
    assert scoring.horizon_end("P1D", date(2013, 4, 10)) == date(2013, 4, 11)
    assert scoring.horizon_end("PT6H", date(2013, 4, 10)) == date(2013, 4, 10)
    params = {"fill": {"tailnum": "unknown", "distance": 1.0}, "cap": {"distance": [1, 2]}}
    assert serving.restrict_params(params, ["origin", "distance"]) == {"fill": {"distance": 1.0},
                                                                       "cap": {"distance": [1, 2]}}


@pytest.mark.parametrize(("waiting_with", "champion", "moved"), [
    ("3", "3", False), ("3", "4", True), ("3", None, False), ("10", "10", False), ("2", "10", True),
])
def test_a_waiting_scoring_run_stands_down_only_when_the_champion_moved(waiting_with, champion, moved):
    assert scoring.champion_moved(waiting_with, champion) is moved
