"""The scoring DAG with dag.test() on real flights, a real MLflow registry and a real SQLite warehouse.

A champion is prepared once per test session (:func:`prepared_home`): ten days of real
flights through the data stages, the schedules (no outcomes yet) of two more days, a
model trained and registered by the training runners (a spec copy with a small candidate
set, to keep it quick), and the ``champion`` alias set by hand (the gate DAG's job in
production). Each test works on its own copy of that home.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
OPEN = ["2013-04-11", "2013-04-12"]  # schedules curated, outcomes not delivered yet
PII_KEY = "scoring-key"


def prepared_home() -> Path:
    """A FlightDeck home with curated data and a registered champion, built once per session."""
    base = Path(os.environ["AIRFLOW_HOME"]).parent / "scoring-champion"
    home = base / "fd"
    if (base / "READY").exists():
        return home
    if base.exists():
        shutil.rmtree(base)
    specs = home / "specs"
    shutil.copytree(REPO / "include" / "specs", specs)
    raw = yaml.safe_load((specs / "flights.yaml").read_text())
    raw["training"].update(candidates=["dummy", "lightgbm"], tune_top=0, cv_folds=2)
    (specs / "flights.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env_for(home).items():
            mp.setenv(name, value)
        import mlflow
        from flightdeck.core.settings import Settings
        from flightdeck.core.spec import load_spec
        from flightdeck.core.storage import open_store
        from flightdeck.data import replay, runners
        from flightdeck.training import pipeline as training

        settings = Settings.from_env()
        spec = load_spec(specs / "flights.yaml")
        landing = open_store(settings.landing_uri)
        replay.replay(spec, landing, date(2013, 4, 1), date(2013, 4, 12))
        for day in OPEN:
            landing.delete(f"flights/outcomes_{day}.csv")
        ctx = runners.StageContext(spec, settings, run_id="data-run")
        for stage in (runners.ingest_deliveries, runners.profile_batches, runners.validate_batches,
                      runners.curate_batches, runners.split_dataset):
            stage(ctx)
        tctx = runners.StageContext(spec, settings, run_id="train-run", dag_id="flights_training")
        trained = training.train_model(tctx)
        (home / "trained.json").write_text(json.dumps(trained, default=str))  # what the train task pushes
        registered = training.register_model(tctx, trained)
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.MlflowClient().set_registered_model_alias(spec.registered_model_name, "champion",
                                                         registered["version"])
    (base / "READY").write_text("ok")
    return home


def env_for(home: Path) -> dict[str, str]:
    return {"FLIGHTDECK_HOME": str(home), "FLIGHTDECK_SPECS_DIR": str(home / "specs"),
            "FLIGHTDECK_PSEUDONYMISATION_KEY": PII_KEY}


def copy_home(dest: Path) -> Path:
    """A private copy of the prepared home (lake, warehouse, registry); artifacts stay shared, read-only."""
    src = prepared_home()
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("mlartifacts"))
    return dest


def use_copy_of_prepared_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the prepared home, made this test's FlightDeck home (environment variables)."""
    home = copy_home(tmp_path / "fd")
    for name, value in env_for(home).items():
        monkeypatch.setenv(name, value)
    return home


@pytest.fixture
def scoring_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_copy_of_prepared_home(tmp_path, monkeypatch)


@pytest.fixture
def scoring_dag(scoring_home, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    return bag.dags["flights_scoring"]


def _states(run) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ti in run.get_task_instances():
        out.setdefault(ti.task_id, []).append(ti.state)
    return out


def _ctx(run_id: str = "test-run"):
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.data.runners import StageContext

    settings = Settings.from_env()
    return StageContext(load_spec(settings.specs_dir / "flights.yaml"), settings, run_id=run_id)


def _curated(ctx, day: str) -> pd.DataFrame:
    from flightdeck.core import lake

    return pd.read_parquet(ctx.lake.path(lake.curated("flights", day)))


def _client(ctx):
    import mlflow

    mlflow.set_tracking_uri(ctx.settings.mlflow_tracking_uri)
    return mlflow.MlflowClient()


def _new_version(ctx, source: str | None = None) -> str:
    """Another registered version: the same packaged model (or a broken source)."""
    client = _client(ctx)
    name = ctx.spec.registered_model_name
    first = client.get_model_version(name, "1")
    mv = client.create_model_version(name, source=source or first.source, run_id=first.run_id,
                                     tags={k: v for k, v in first.tags.items()})
    return str(mv.version)


def _promote(ctx, version: str) -> None:
    client = _client(ctx)
    name = ctx.spec.registered_model_name
    current = client.get_model_version_by_alias(name, "champion").version
    client.set_registered_model_alias(name, "previous_champion", current)
    client.set_registered_model_alias(name, "champion", version)


def test_scoring_dag_publishes_open_partitions_rescores_on_new_champion_and_backfills(scoring_dag):
    from flightdeck.serving import predictions

    ctx = _ctx()
    run = scoring_dag.test()
    states = _states(run)
    assert run.state == "success", states
    assert states["score"] == ["success", "success"], "one mapped task per open partition"
    for day in OPEN:
        curated = _curated(ctx, day)
        published = predictions.count_partition(ctx.engine, ctx.spec, day)
        assert published == {"rows": len(curated), "versions": 1, "model_version": "1", "run_ids": 1,
                             "run_id": run.run_id}
        assert curated[ctx.spec.target.name].isna().all(), "open partitions have no outcomes yet"
    runs = {r["partition_date"]: r for r in predictions.list_runs(ctx.engine, "flights") if r["run_id"] == run.run_id}
    assert set(runs) == set(OPEN)
    assert all(r["status"] == "published" and r["model_version"] == "1" and r["finished_at"] for r in runs.values())
    assert predictions.count_partition(ctx.engine, ctx.spec, "2013-04-05")["rows"] == 0, "labelled: not open"

    # an application's lookup by key reads the current prediction
    row = predictions.lookup(ctx.engine, ctx.spec, partition=OPEN[0], limit=1)[0]
    key = {k: row[k] for k in ctx.spec.entity_key}
    found = predictions.lookup(ctx.engine, ctx.spec, key=key)
    assert len(found) == 1 and found[0]["score"] == pytest.approx(row["score"])
    assert found[0]["label"] == int(row["score"] >= ctx.spec.training.threshold)

    # nothing new to score: a run by hand scores nothing, touches nothing, and succeeds
    idle = scoring_dag.test()
    assert idle.state == "success", _states(idle)
    assert _states(idle)["score"] in (["skipped"], []), _states(idle)
    assert predictions.count_partition(ctx.engine, ctx.spec, OPEN[0])["run_id"] == run.run_id

    # re-running replaces, never duplicates
    again = scoring_dag.test(run_conf={"force": True})
    assert again.state == "success", _states(again)
    for day in OPEN:
        assert predictions.count_partition(ctx.engine, ctx.spec, day) == {
            "rows": len(_curated(ctx, day)), "versions": 1, "model_version": "1", "run_ids": 1,
            "run_id": again.run_id}

    # the gates promote a new champion: the open partitions are rescored with it
    version = _new_version(ctx)
    _promote(ctx, version)
    moved = scoring_dag.test()
    assert moved.state == "success", _states(moved)
    for day in OPEN:
        assert predictions.count_partition(ctx.engine, ctx.spec, day)["model_version"] == version

    # backfill over past (labelled) partitions works the same
    back = scoring_dag.test(run_conf={"partitions": "2013-04-03, 2013-04-04"})
    assert back.state == "success", _states(back)
    for day in ("2013-04-03", "2013-04-04"):
        assert predictions.count_partition(ctx.engine, ctx.spec, day)["rows"] == len(_curated(ctx, day))


def test_champion_that_cannot_be_loaded_fails_the_run_and_keeps_published_predictions(scoring_dag):
    from flightdeck.serving import predictions, scoring

    ctx = _ctx()
    first = scoring_dag.test()
    assert first.state == "success", _states(first)
    before = {day: predictions.count_partition(ctx.engine, ctx.spec, day) for day in OPEN}

    broken = _new_version(ctx, source=str(Path(ctx.settings.home) / "no-such-model"))
    _promote(ctx, broken)
    run = scoring_dag.test(run_conf={"force": True})
    assert run.state == "failed"
    assert _states(run)["champion"] == ["failed"]
    with pytest.raises(scoring.ChampionLoadError, match=f"version {broken}"):
        scoring.resolve_champion(ctx)
    with pytest.raises(scoring.ChampionLoadError, match=f"version {broken}"):
        scoring.score_partition(_ctx("manual-retry"), OPEN[0], broken)
    failed = [r for r in predictions.list_runs(ctx.engine, "flights", OPEN[0]) if r["run_id"] == "manual-retry"]
    assert failed[0]["status"] == "failed" and f"version {broken}" in failed[0]["error"]
    assert {day: predictions.count_partition(ctx.engine, ctx.spec, day) for day in OPEN} == before

    # a version the gates never promoted is refused even when named explicitly
    unpromoted = _new_version(ctx)
    with pytest.raises(scoring.ChampionLoadError, match="not promoted"):
        scoring.score_partition(ctx, OPEN[0], unpromoted)


def _write_partition(ctx, day: str, frame: pd.DataFrame) -> None:
    from flightdeck.core import lake

    path = ctx.lake.path(lake.curated("flights", day))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def test_bad_serving_batches(scoring_home):
    """Empty batch: empty partition published. Unknown categories: scored and counted. Missing
    column: fails naming it. Broken hard expectation: not scored. Nothing half-published."""
    from flightdeck.serving import predictions, scoring

    ctx = _ctx("bad-input")
    version = scoring.resolve_champion(ctx)["model_version"]
    model = scoring.load_model(ctx, version)
    day = _curated(ctx, OPEN[0])

    _write_partition(ctx, "2013-04-20", day.iloc[:0])
    empty = scoring.score_partition(ctx, "2013-04-20", version, model=model)
    assert empty["empty"] and empty["rows"] == 0
    assert predictions.list_runs(ctx.engine, "flights", "2013-04-20")[0]["status"] == "published"

    odd = day.copy()
    odd.loc[odd.index[:7], "carrier"] = "ZZ"
    odd.loc[odd.index[:3], "dest"] = "XXX"
    _write_partition(ctx, "2013-04-21", odd)
    unknown = scoring.score_partition(ctx, "2013-04-21", version, model=model)
    assert unknown["rows"] == len(odd)
    assert unknown["unknown_categories"] == {"carrier": 7, "dest": 3}
    rows = predictions.lookup(ctx.engine, ctx.spec, partition="2013-04-21", limit=100_000)
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)

    _write_partition(ctx, "2013-04-22", day.drop(columns=["distance"]))
    with pytest.raises(scoring.ScoringInputError, match="distance"):
        scoring.score_partition(ctx, "2013-04-22", version, model=model)
    assert predictions.count_partition(ctx.engine, ctx.spec, "2013-04-22")["rows"] == 0
    assert predictions.list_runs(ctx.engine, "flights", "2013-04-22")[0]["status"] == "invalid"

    bad = day.copy()
    bad.loc[bad.index[:5], "origin"] = "BOS"  # outside the declared allowed set: a hard expectation
    _write_partition(ctx, "2013-04-23", bad)
    with pytest.raises(scoring.ScoringInputError, match="failed validation"):
        scoring.score_partition(ctx, "2013-04-23", version, model=model)
    assert predictions.count_partition(ctx.engine, ctx.spec, "2013-04-23")["rows"] == 0

    with pytest.raises(scoring.ScoringInputError, match="no curated partition"):
        scoring.score_partition(ctx, "2013-05-30", version, model=model)


def test_serving_model_rebuilds_training_features_and_serves_applications(scoring_home):
    """The validation split scored through serving reproduces training's prediction fingerprint
    bit for bit; an application's in-process predictions equal the published ones."""
    from flightdeck.data.replay import load_replay_source
    from flightdeck.serving import predictions, scoring
    from flightdeck.serving.champion import load_serving_model
    from flightdeck.training import train

    ctx = _ctx("app")
    model = load_serving_model("flights", ctx.settings)
    assert model.version == "1" and model.model_uri == "models:/flightdeck-flights/1"
    validation = pd.read_parquet(ctx.lake.path(f"datasets/flights/{model.resolved.dataset_version}/validation.parquet"))
    proba = model.predict_matrix(model.feature_matrix(validation))
    assert train.prediction_fingerprint(proba) == model.resolved.tags["flightdeck.prediction_fingerprint"]

    scoring.score_partition(ctx, OPEN[0], model.version, model=model)
    delivered = load_replay_source(ctx.spec)
    rows = delivered[delivered["_local_date"] == date.fromisoformat(OPEN[0])]
    rows = rows[list(ctx.spec.features_source.columns)].head(50).reset_index(drop=True)
    rows.loc[3, "origin"] = "BOS"  # a row rule rejects it, as at ingestion
    scores = model.predict(rows)
    assert pd.isna(scores[3]) and not pd.isna(scores[:3]).any() and len(scores) == 50
    _, issues = model.score_delivered(rows)
    assert issues[["row_number", "reason", "column_name"]].values.tolist() == [[4, "unseen_category", "origin"]]
    for i in (0, 10, 49):
        key = {k: rows.loc[i, k] for k in ctx.spec.entity_key}
        published = predictions.lookup(ctx.engine, ctx.spec, key=key)
        assert published and published[0]["score"] == pytest.approx(scores[i], abs=1e-12)
    missing = rows.drop(columns=["dest"])
    with pytest.raises(scoring.ScoringInputError, match="dest"):
        model.predict(missing)


def test_serving_validation_reuses_the_evidence_of_the_same_input_and_validates_a_changed_one(scoring_home):
    """The data DAG validated the batches of an open partition: scoring reuses those reports (named in
    the kept evidence). A rewritten partition (new fingerprint) is validated again by GX, and that
    report is reused by the next scoring of the same input; a broken rewrite is refused."""
    import json

    from flightdeck.core import warehouse
    from flightdeck.serving import predictions, scoring

    ctx = _ctx("reuse")
    model = scoring.load_model(ctx)
    day = OPEN[0]
    first = scoring.score_partition(ctx, day, model.version, model=model)
    assert first["validation"]["reused"] is True and first["validation"]["reused_from"] == "data_dag"
    evidence = json.loads(Path(first["validation"]["report_uri"]).read_text())
    curated = warehouse.list_batches(ctx.engine, "flights", statuses=("curated",), source=ctx.spec.features_source_name)
    batches = [b for b in curated if b["batch_date"] == day]
    assert sorted(e["validation_uri"] for e in evidence["batches"]) == sorted(b["validation_uri"] for b in batches)
    assert evidence["input_fingerprint"] == scoring.curated_partitions(ctx)[day]
    runs = [r for r in predictions.list_runs(ctx.engine, "flights", day) if r["run_id"] == "reuse"]
    assert json.loads(runs[0]["details"])["validation"]["report_uri"] == first["validation"]["report_uri"]

    again = scoring.score_partition(ctx, day, model.version, model=model)
    assert again["validation"]["reused"] and again["validation"]["report_uri"] == first["validation"]["report_uri"]

    frame = _curated(ctx, day)
    _write_partition(ctx, day, frame.iloc[::-1])  # the same rows, another file: a new fingerprint
    changed = scoring.score_partition(ctx, day, model.version, model=model)
    assert changed["validation"]["reused"] is False and changed["validation"]["success"]
    report = json.loads(Path(changed["validation"]["report_uri"]).read_text())
    assert report["rows"] == len(frame) and report["gx_result"]["results"], "GX ran on the rewritten partition"
    assert changed["validation"]["report_uri"] != first["validation"]["report_uri"]
    rescored = scoring.score_partition(ctx, day, model.version, model=model)
    assert rescored["validation"] == {**changed["validation"], "reused": True, "reused_from": "serving"}

    bad = frame.copy()
    bad.loc[bad.index[:5], "origin"] = "BOS"  # outside the declared set: a hard expectation
    _write_partition(ctx, day, bad)
    with pytest.raises(scoring.ScoringInputError, match="failed validation"):
        scoring.score_partition(ctx, day, model.version, model=model)
    assert predictions.count_partition(ctx.engine, ctx.spec, day)["run_id"] == "reuse", "the last good set stays"
