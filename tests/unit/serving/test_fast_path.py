"""The compiled fast path keeps every prediction and every feature hash as they were.

Real flights rows (ingested and wrangled like the data DAG does), real fitted Pipelines of
each family, scoring rows with missing numeric values, missing and never-seen categories.
The reference is the Pipeline's own ``predict_proba`` on ``select_features`` output and the
feature hash computed the old way (``hash_pandas_object`` of the object-typed matrix).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flightdeck.core.spec import load_spec
from flightdeck.data import wrangle
from flightdeck.data.replay import load_replay_source
from flightdeck.serving import champion as serving
from flightdeck.training import features, train
from flightdeck.training.compiled import CompiledEnsemble, CompiledLightGBM, compile_pipeline
from flightdeck.training.model import FlightDeckClassifier

from tests.unit.serving.test_serving import KEY, curate

FLIGHTS_SPEC = Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLIGHTS_SPEC)


@pytest.fixture(scope="module")
def training(spec):
    """Four days of real flights, curated; a few categorical values missing so the encoders learn a NaN."""
    frame = load_replay_source(spec)
    rows = frame[(frame["_local_date"] >= date(2013, 5, 1)) & (frame["_local_date"] <= date(2013, 5, 4))]
    curated = curate(spec, rows)
    labelled = curated[curated[spec.target.name].notna()].reset_index(drop=True)
    params = wrangle.fit_wrangle(labelled, spec)
    train_rows = wrangle.apply_wrangle(labelled, spec, params)
    train_rows.loc[train_rows.index[:40], "carrier"] = None
    references = features.load_references(spec, KEY)
    prior = float(train_rows[spec.target.name].astype("float64").mean())
    frame = features.build_feature_frame(train_rows, spec, references, train_rows, prior)
    layout = features.feature_layout(spec, frame)
    return {"params": params, "rows": train_rows, "references": references, "prior": prior, "frame": frame,
            "layout": layout, "X": features.select_features(frame, layout),
            "y": frame[spec.target.name].astype(int)}


def fitted(family: str, spec, training, trees: int = 40):
    pipeline = features.build_estimator(family, spec, training["layout"],
                                        {"n_estimators": trees} if family in ("lightgbm", "random_forest") else {})
    return pipeline.fit(training["X"], training["y"], **features.fit_params(family, training["layout"]))


@pytest.fixture(scope="module")
def scoring_rows(spec) -> pd.DataFrame:
    """Other days' curated rows with NaNs, unknown categories and missing categories injected."""
    frame = load_replay_source(spec)
    days = (frame["_local_date"] >= date(2013, 6, 10)) & (frame["_local_date"] <= date(2013, 6, 11))
    rows = curate(spec, frame[days])
    rows = rows.reset_index(drop=True)
    rows.loc[rows.index[:25], "carrier"] = "ZZ"
    rows.loc[rows.index[25:40], "dest"] = "XXX"
    rows.loc[rows.index[40:60], "origin"] = None
    rows.loc[rows.index[60:90], "distance"] = np.nan
    rows.loc[rows.index[90:99], "sched_dep_time"] = np.nan
    return rows


def serving_model(spec, training, pipeline) -> serving.ServingModel:
    resolved = serving.ResolvedModel(name=spec.registered_model_name, version="3", alias="champion", run_id=None,
                                     dataset_version="unit")
    return serving.ServingModel(spec, resolved, FlightDeckClassifier(pipeline, training["layout"].to_dict()),
                                training["params"], training["references"], training["rows"], training["prior"],
                                pii_key=KEY)


def old_history_features(frame: pd.DataFrame, history: pd.DataFrame, spec, prior: float) -> pd.DataFrame:
    """add_history_features as it was before the history tables (text group keys on every row, per call)."""
    delay = pd.Timedelta(spec.label_delay_timedelta)
    target, ts = spec.target.name, spec.event_time
    out = frame.copy()
    out["_order"] = np.arange(len(out))
    left = out.sort_values(ts, kind="stable")
    labelled = history[history[target].notna()]
    for h in spec.training.history:
        keys = list(h.by)
        hist = labelled[[*keys, ts, target]].copy()
        hist["_known_at"] = hist[ts] + delay
        hist = hist.sort_values("_known_at", kind="stable")
        grouped = hist.groupby(keys, sort=False, dropna=False)[target]
        hist["_n"] = grouped.cumcount() + 1
        hist["_pos"] = grouped.cumsum().astype("float64")
        hist["_group"] = features._group_key(hist, keys)
        right = hist[["_group", "_known_at", "_n", "_pos"]]
        probe = left[[ts, "_order"]].assign(_group=features._group_key(left, keys))
        merged = pd.merge_asof(probe, right, left_on=ts, right_on="_known_at", by="_group",
                               allow_exact_matches=False, direction="backward")
        n = merged["_n"].fillna(0).to_numpy(dtype="float64")
        pos = merged["_pos"].fillna(0).to_numpy(dtype="float64")
        rates = np.empty(len(out), dtype="float64")
        rates[merged["_order"].to_numpy()] = (pos + h.smoothing * prior) / (n + h.smoothing)
        out[h.name] = rates
    return out.drop(columns="_order")


def reference(model: serving.ServingModel, pipeline, curated: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Scores and feature hashes exactly as serving computed them before the fast path (module docstring)."""
    frame = wrangle.apply_wrangle(curated.reset_index(drop=True), model.spec, model.wrangle_params)
    frame = old_history_features(features.apply_joins(frame, model.spec, model.references), model.history,
                                 model.spec, model.prior)
    X = features.select_features(frame, model.layout)
    score = np.asarray(pipeline.predict_proba(X))[:, 1]
    return score, pd.util.hash_pandas_object(X, index=False).to_numpy().view(np.int64)


def unseen(model: serving.ServingModel, pipeline, curated: pd.DataFrame) -> dict[str, int]:
    """Never-seen categories counted the old way (``isin`` the first member's encoder categories)."""
    first = pipeline.members[0] if hasattr(pipeline, "members") else pipeline
    X = model.feature_matrix(curated)
    counts = features.count_unseen_categories(first, X, model.layout)
    return {c: n for c, n in counts.items() if n}


MEMBERS = {"lightgbm": ["lightgbm"], "ensemble": ["lightgbm", "lightgbm"], "mixed": ["lightgbm", "logistic"]}


@pytest.mark.parametrize("name", list(MEMBERS))
def test_fast_path_scores_and_hashes_equal_the_pipelines(name, spec, training, scoring_rows):
    members = [fitted(f, spec, training, trees=40 - 15 * i) for i, f in enumerate(MEMBERS[name])]
    pipeline = members[0] if len(members) == 1 else train.SoftVotingEnsemble(members)
    model = serving_model(spec, training, pipeline)
    assert isinstance(model.compiled, CompiledLightGBM if name == "lightgbm" else CompiledEnsemble)

    scored = model.score_curated(scoring_rows)
    expected, hashes = reference(model, pipeline, scoring_rows)
    score = scored.frame["score"].to_numpy()
    assert np.abs(score - expected).max() <= 1e-12
    assert np.array_equal(score, expected)  # same float64 matrix, same booster: bit-identical
    assert np.array_equal(scored.frame["feature_hash"].to_numpy(), hashes)
    assert scored.unknown_categories == unseen(model, pipeline, scoring_rows)
    assert scored.unknown_categories["carrier"] == 25 and scored.unknown_categories["dest"] >= 15
    # the packaged pyfunc's own predict takes the fast path too, and agrees
    X = model.feature_matrix(scoring_rows)
    assert np.array_equal(model.python_model.predict(None, X), expected)
    assert np.array_equal(model.predict_matrix(X), expected)


@pytest.mark.parametrize("family", ["logistic", "random_forest", "dummy"])
def test_families_without_a_fast_path_keep_the_pipeline(family, spec, training, scoring_rows):
    pipeline = fitted(family, spec, training)
    assert compile_pipeline(pipeline) is None
    model = serving_model(spec, training, pipeline)
    assert model.compiled is None
    scored = model.score_curated(scoring_rows)
    expected, hashes = reference(model, pipeline, scoring_rows)
    # a random forest sums its trees in threads: equal to the last bits only up to the summation order
    assert np.abs(scored.frame["score"].to_numpy() - expected).max() <= 1e-12
    assert np.array_equal(scored.frame["feature_hash"].to_numpy(), hashes)


def test_learned_missing_category_and_infinite_input(spec, training, scoring_rows):
    """The carrier encoder learned a NaN category (sorted last): codes are unchanged; infinity is refused."""
    pipeline = fitted("lightgbm", spec, training)
    encoder = pipeline.named_steps["features"].named_transformers_["cat"]
    assert isinstance(encoder.categories_[0][-1], float) and np.isnan(encoder.categories_[0][-1])
    compiled = compile_pipeline(pipeline)
    assert isinstance(compiled, CompiledLightGBM)
    X = features.select_features(features.build_feature_frame(
        wrangle.apply_wrangle(scoring_rows, spec, training["params"]), spec, training["references"],
        training["rows"], training["prior"]), training["layout"])
    assert np.array_equal(compiled.matrix(X), pipeline.named_steps["features"].transform(X))
    bad = X.copy()
    bad.loc[bad.index[0], "distance"] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        pipeline.predict_proba(bad)
    with pytest.raises(ValueError, match="infinity"):
        compiled.predict(bad)


def test_categorical_feature_block_has_the_same_values_and_hashes(spec, training, scoring_rows):
    """select_features_categorical: the texts of select_features, as Categorical, hashing the same."""
    frame = features.build_feature_frame(wrangle.apply_wrangle(scoring_rows, spec, training["params"]), spec,
                                         training["references"], training["rows"], training["prior"])
    layout = training["layout"]
    frame["flag"] = pd.array([True, False, None] * (len(frame) // 3) + [True] * (len(frame) % 3), dtype="boolean")
    wide = features.FeatureLayout(layout.numeric, (*layout.categorical, "flag"))
    plain, block = features.select_features(frame, wide), features.select_features_categorical(frame, wide)
    for c in wide.categorical:
        assert isinstance(block[c].dtype, pd.CategoricalDtype)
        assert block[c].astype(object).where(block[c].notna(), None).tolist() == \
            plain[c].where(plain[c].notna(), None).tolist()
    assert np.array_equal(pd.util.hash_pandas_object(block, index=False),
                          pd.util.hash_pandas_object(plain, index=False))


def test_history_rates_equal_the_text_keyed_merge(spec, training, scoring_rows):
    """Prepared history tables + integer group ids give the old rates bit for bit (unseen and missing keys too)."""
    frame = features.apply_joins(wrangle.apply_wrangle(scoring_rows, spec, training["params"]), spec,
                                 training["references"])
    frame.loc[frame.index[:30], "origin"] = None
    history = training["rows"]
    old = old_history_features(frame, history, spec, training["prior"])
    tables = features.history_tables(history, spec)
    for new in (features.add_history_features(frame, history, spec, training["prior"], tables),
                features.add_history_features(frame, history, spec, training["prior"])):
        names = [h.name for h in spec.training.history]
        assert np.array_equal(new[names].to_numpy(), old[names].to_numpy())
    empty = features.add_history_features(frame.iloc[:0], history, spec, training["prior"], tables)
    assert len(empty) == 0 and all(h.name in empty for h in spec.training.history)
