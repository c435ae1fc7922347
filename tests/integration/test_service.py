"""The model as a service: a real uvicorn server on a loopback port, a real MLflow registry and SQLite warehouse.

Each test serves the scoring DAG's prepared home (curated data and a registered champion,
:func:`test_scoring_dag.prepared_home`) from its own copy, and talks HTTP to it with httpx.
Online scores must equal what precompute scoring publishes for the same rows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from test_scoring_dag import OPEN, use_copy_of_prepared_home

pytestmark = pytest.mark.slow

DAY = OPEN[0]


@contextmanager
def serving(spec_name: str = "flights", refresh_seconds: float = 30.0) -> Iterator[tuple[str, Any]]:
    """``create_app`` run by a real uvicorn server in a thread on a free loopback port: (base URL, app)."""
    import uvicorn
    from flightdeck.core.settings import Settings
    from flightdeck.serving.service import create_app

    app = create_app(Settings.from_env(), spec_name, refresh_seconds=refresh_seconds)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start within 120 s"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_copy_of_prepared_home(tmp_path, monkeypatch)


def _ctx(run_id: str = "precompute"):
    from flightdeck.core.context import StageContext
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import spec_named

    settings = Settings.from_env()
    return StageContext(spec_named(settings.specs_dir, "flights"), settings, run_id=run_id)


def _curated_rows(ctx, day: str) -> list[dict[str, Any]]:
    """The curated partition's rows without the label, as JSON objects (timestamps in ISO 8601)."""
    from flightdeck.core import lake

    frame = lake.read_parquet(ctx.lake, lake.curated(ctx.name, day), ctx.workdir)
    frame = frame.drop(columns=[ctx.spec.target.name])
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="us"))


def _published(ctx, day: str) -> dict[tuple[Any, ...], float]:
    """Entity key -> the score precompute published for ``day``."""
    from flightdeck.serving import predictions

    rows = predictions.lookup(ctx.engine, ctx.spec, partition=day, limit=100_000)
    return {tuple(r[k] for k in ctx.spec.entity_key): r["score"] for r in rows}


def _key(ctx, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ctx.spec.entity_key)


def _client(ctx):
    import mlflow

    mlflow.set_tracking_uri(ctx.settings.mlflow_tracking_uri)
    return mlflow.MlflowClient()


def test_online_scores_equal_the_published_ones_and_every_row_is_logged(home):
    from flightdeck.core import warehouse
    from flightdeck.serving import predictions, scoring

    ctx = _ctx()
    manifest = scoring.score_partition(ctx, DAY)
    version = manifest["model_version"]
    published = _published(ctx, DAY)
    rows = _curated_rows(ctx, DAY)
    assert len(rows) == manifest["rows"] == len(published) > 100
    with serving() as (url, _app), httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").json() == {"status": "ok"}
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["model_version"] == version
        about = http.get("/version").json()
        assert (about["spec"], about["model_version"], about["model_uri"]) == (
            "flights", version, f"models:/flightdeck-flights/{version}")

        # one row, with the client's request id
        one = http.post("/predict", json=rows[0], headers={"X-Request-ID": "req-single-1"})
        assert one.status_code == 200, one.text
        body = one.json()
        assert one.headers["X-Request-ID"] == "req-single-1" == body["request_id"]
        assert body["model_version"] == version
        found = predictions.lookup(ctx.engine, ctx.spec, key={k: rows[0][k] for k in ctx.spec.entity_key})[0]
        assert body["score"] == pytest.approx(found["score"], abs=1e-9)
        assert body["label"] == found["label"] == int(body["score"] >= 0.5)
        assert body["key"] == {k: rows[0][k] for k in ctx.spec.entity_key}

        # a batch of 100 rows, request id generated
        batch = rows[1:101]
        many = http.post("/predict", json=batch)
        assert many.status_code == 200, many.text
        answers = many.json()
        assert len(answers) == len(batch)
        generated = answers[0]["request_id"]
        assert generated and many.headers["X-Request-ID"] == generated
        for row, answer in zip(batch, answers, strict=True):
            assert answer["key"] == {k: row[k] for k in ctx.spec.entity_key}, "answers keep the input order"
            assert answer["score"] == pytest.approx(published[_key(ctx, row)], abs=1e-9)
            assert (answer["model_version"], answer["request_id"]) == (version, generated)

        # MLflow's scoring protocol, both forms, over the whole partition
        columns = list(rows[0])
        split = http.post("/invocations", json={"dataframe_split": {
            "columns": columns, "data": [[r[c] for c in columns] for r in rows]}})
        assert split.status_code == 200, split.text
        expected = [published[_key(ctx, r)] for r in rows]
        assert list(split.json()) == ["predictions"]
        assert split.json()["predictions"] == pytest.approx(expected, abs=1e-9)
        records = http.post("/invocations", json={"dataframe_records": rows[:10]}, headers={"X-Request-ID": "inv-2"})
        assert records.status_code == 200
        assert records.json()["predictions"] == pytest.approx(expected[:10], abs=1e-9)

    log_rows = warehouse.queries.serving_requests_of(ctx.engine, "flights", limit=100_000)
    by_request: dict[str, list[dict[str, Any]]] = {}
    for r in log_rows:
        by_request.setdefault(r["request_id"], []).append(r)
    assert len(by_request["req-single-1"]) == 1 and len(by_request[generated]) == 100
    assert len(by_request["inv-2"]) == 10 and sum(len(v) for v in by_request.values()) == 1 + 100 + len(rows) + 10
    for r in log_rows:
        assert (r["status"], r["model_version"], r["spec_name"]) == ("ok", version, "flights")
        assert r["latency_ms"] > 0 and len(r["input_hash"]) == 64 and r["score"] is not None
    first = by_request["req-single-1"][0]
    assert json.loads(first["entity_key"]) == {k: rows[0][k] for k in ctx.spec.entity_key}
    assert first["score"] == pytest.approx(body["score"], abs=1e-12)
    assert [r["row_number"] for r in by_request[generated]] == list(range(1, 101))


def test_bad_rows_get_a_422_naming_the_field_and_the_expected_type(home):
    from flightdeck.core import warehouse

    ctx = _ctx()
    row = _curated_rows(ctx, DAY)[0]
    with serving() as (url, _app), httpx.Client(base_url=url, timeout=60) as http:
        missing = http.post("/predict", json={k: v for k, v in row.items() if k != "carrier"},
                            headers={"X-Request-ID": "bad-1"})
        assert missing.status_code == 422
        (error,) = missing.json()["detail"]
        assert error["loc"] == ["body", 0, "carrier"] and "missing required column" in error["msg"]
        assert "expected a string" in error["msg"]

        wrong = http.post("/predict", json=[row, {**row, "flight": "UA1545", "time_hour": "next tuesday"}])
        assert wrong.status_code == 422
        detail = {tuple(e["loc"]): e["msg"] for e in wrong.json()["detail"]}
        assert detail[("body", 1, "flight")] == "expected an integer, got 'UA1545'"
        assert "unparseable 'next tuesday'" in detail[("body", 1, "time_hour")]
        assert len(detail) == 2, "the good row has no error"

        mlflow_form = http.post("/invocations", json={"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}})
        assert mlflow_form.status_code == 422
        assert mlflow_form.json()["detail"][0]["loc"] == ["body", "dataframe_split.data.0"]
        assert mlflow_form.json()["error_code"] == "BAD_REQUEST"

        not_json = http.post("/predict", content=b"{nope", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 422
    logged = warehouse.queries.serving_requests_of(ctx.engine, "flights", request_id="bad-1")
    assert [(r["row_number"], r["status"]) for r in logged] == [(0, "invalid")]
    assert "carrier" in logged[0]["error"]


def test_without_a_champion_it_is_alive_but_not_ready(tmp_path, monkeypatch):
    from flightdeck.core.settings import REPO_ROOT

    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("FLIGHTDECK_SPECS_DIR", str(REPO_ROOT / "include" / "specs"))
    with serving() as (url, _app), httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").status_code == 200
        ready = http.get("/ready")
        assert ready.status_code == 503 and "no @champion version" in ready.json()["detail"]
        predict = http.post("/predict", json={"year": 2013})
        assert predict.status_code == 503
        assert "no champion loaded for spec 'flights'" in predict.json()["detail"]
        assert http.post("/invocations", json={"dataframe_records": [{}]}).status_code == 503
        assert http.get("/version").json()["model_version"] is None


def test_a_moved_champion_is_swapped_in_while_requests_keep_succeeding(home):
    ctx = _ctx()
    client = _client(ctx)
    name = ctx.spec.registered_model_name
    first = client.get_model_version_by_alias(name, "champion")
    rows = _curated_rows(ctx, DAY)[:20]
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def keep_asking(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set() and len(results) < 5000:
                response = http.post("/predict", json=rows)
                results.append((response.status_code,
                                response.json()[0]["model_version"] if response.status_code == 200 else response.text))

    with serving(refresh_seconds=0.2) as (url, app):
        worker = threading.Thread(target=keep_asking, args=(url,), daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while len(results) < 3:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.05)
        # another version of the same packaged model, promoted as the gates would
        second = client.create_model_version(name, source=first.source, run_id=first.run_id,
                                             tags=dict(first.tags)).version
        client.set_registered_model_alias(name, "previous_champion", first.version)
        client.set_registered_model_alias(name, "champion", second)
        while not results or results[-1][1] != str(second):
            assert time.monotonic() < deadline, f"still serving {results[-1:]} 60 s after the move"
            assert worker.is_alive()
            time.sleep(0.05)
        seen = len(results)
        while len(results) < seen + 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop.set()
        worker.join(timeout=60)
        ready = httpx.get(f"{url}/ready").json()
    assert ready["model_version"] == str(second) == app.state.slot.model.version
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:3]
    versions = [v for _, v in results]
    assert set(versions) == {str(first.version), str(second)}
    switched = versions.index(str(second))
    assert all(v == str(first.version) for v in versions[:switched])
    assert all(v == str(second) for v in versions[switched:]), "once swapped, the new version serves every request"
    assert pd.Series(versions).nunique() == 2


def test_a_champion_that_cannot_be_loaded_leaves_the_loaded_one_serving(home):
    ctx = _ctx()
    client = _client(ctx)
    name = ctx.spec.registered_model_name
    first = client.get_model_version_by_alias(name, "champion")
    row = _curated_rows(ctx, DAY)[0]
    with serving(refresh_seconds=0.2) as (url, app), httpx.Client(base_url=url, timeout=60) as http:
        broken = client.create_model_version(name, source=str(Path(ctx.settings.home) / "no-such-model"),
                                             run_id=first.run_id, tags=dict(first.tags)).version
        client.set_registered_model_alias(name, "champion", broken)
        deadline = time.monotonic() + 60
        while f"version {broken}" not in (http.get("/version").json()["last_error"] or ""):
            assert time.monotonic() < deadline, "the broken champion was never tried"
            time.sleep(0.1)
        answer = http.post("/predict", json=row)
        assert answer.status_code == 200 and answer.json()["model_version"] == str(first.version)
        assert http.get("/ready").json()["model_version"] == str(first.version)
        client.set_registered_model_alias(name, "champion", first.version)  # the rollback
        while http.get("/version").json()["last_error"] is not None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert app.state.slot.model.version == str(first.version)
