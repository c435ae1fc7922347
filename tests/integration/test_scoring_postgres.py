"""Prediction tables and scoring on a real PostgreSQL server: COPY publication, atomicity, lookups.

Needs ``FLIGHTDECK_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Without it the tests are skipped, except under CI (``CI`` set), where they fail. Every
session works in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from flightdeck.core import warehouse
from flightdeck.serving import predictions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pg_support import postgres_url, private_schema  # noqa: E402
from test_scoring_dag import OPEN, copy_home, env_for  # noqa: E402
from unit.serving import test_predictions as shared  # noqa: E402  (row builders and the killed writer, shared with SQLite)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with private_schema(postgres_url(), "fd_scoring") as url:
        yield url


@pytest.fixture
def engine(pg_url: str):
    engine = warehouse.connect(pg_url)
    predictions.ensure_tables(engine, shared.load_spec(shared.FLIGHTS_SPEC))
    with engine.begin() as conn:  # tests share the session's schema: start each from empty tables
        conn.exec_driver_sql("TRUNCATE flights_predictions, fd_scoring_runs")
    return engine


@pytest.fixture(scope="module")
def spec():
    return shared.load_spec(shared.FLIGHTS_SPEC)


def test_copy_publication_replaces_partitions_and_binds_values(engine, spec):
    assert engine.dialect.name == "postgresql"
    assert shared.publish(engine, spec, shared.make_rows(spec, 1000)) == 1000
    assert shared.publish(engine, spec, shared.make_rows(spec, 50, partition="2013-04-12"), "2013-04-12") == 50
    again = shared.make_rows(spec, 700, version="2", run_id="run-2")
    assert shared.publish(engine, spec, again, run_id="run-2") == 700
    assert shared.publish(engine, spec, again, run_id="run-2") == 700  # a re-run never duplicates
    assert predictions.count_partition(engine, spec, "2013-04-11") == {
        "rows": 700, "versions": 1, "model_version": "2", "run_ids": 1, "run_id": "run-2"}
    assert predictions.count_partition(engine, spec, "2013-04-12")["rows"] == 50
    row = predictions.lookup(engine, spec, partition="2013-04-11", limit=1)[0]
    key = {k: row[k] for k in spec.entity_key}
    assert predictions.lookup(engine, spec, key=key)[0]["score"] == pytest.approx(row["score"])
    assert predictions.lookup(engine, spec, key={"carrier": "UA' OR '1'='1"}) == []
    assert row["scored_at"].tzinfo is not None
    # an empty batch publishes an empty partition
    assert shared.publish(engine, spec, shared.make_rows(spec, 0, run_id="run-3"), run_id="run-3") == 0
    assert predictions.count_partition(engine, spec, "2013-04-11")["rows"] == 0
    runs = predictions.list_runs(engine, "flights", "2013-04-11")
    assert [(r["run_id"], r["rows"], r["status"]) for r in runs][0] == ("run-3", 0, "published")


def test_readers_see_the_old_or_the_new_complete_partition_on_postgres(engine, spec):
    small, large = shared.make_rows(spec, 2000), shared.make_rows(spec, 6000, version="2", run_id="run-2")
    seen = shared.partition_states_seen_while_republishing(engine, spec, small, large, rounds=10)
    assert seen <= {(2000, 1), (6000, 1)} and seen, seen


def test_a_copy_killed_mid_write_leaves_the_published_state_and_the_retry_completes(engine, spec, pg_url, tmp_path):
    shared.publish(engine, spec, shared.make_rows(spec, 300))
    new = shared.make_rows(spec, 4000, version="2", run_id="run-2", first_flight=5000)
    shared.kill_mid_write(pg_url, shared.FLIGHTS_SPEC, new, tmp_path)
    assert predictions.count_partition(engine, spec, "2013-04-11") == {
        "rows": 300, "versions": 1, "model_version": "1", "run_ids": 1, "run_id": "run-1"}
    assert shared.publish(engine, spec, new, run_id="run-2") == 4000  # the retry
    assert predictions.count_partition(engine, spec, "2013-04-11") == {
        "rows": 4000, "versions": 1, "model_version": "2", "run_ids": 1, "run_id": "run-2"}


@pytest.mark.slow
def test_scoring_runner_publishes_into_postgres(engine, pg_url, tmp_path, monkeypatch):
    """The champion scores real curated partitions into PostgreSQL; a re-run replaces them."""
    from flightdeck.core import lake
    from flightdeck.core.context import StageContext
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.serving import scoring

    home = copy_home(tmp_path / "fd")
    for name, value in env_for(home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLIGHTDECK_WAREHOUSE_URL", pg_url)
    settings = Settings.from_env()
    ctx = StageContext(load_spec(settings.specs_dir / "flights.yaml"), settings, run_id="pg-run")
    model = scoring.load_model(ctx)
    parts = scoring.partitions_to_score(ctx, model.version, OPEN)
    for _ in range(2):
        for day in parts:
            manifest = scoring.score_partition(ctx, day, model.version, model=model)
            curated = pd.read_parquet(ctx.lake.path(lake.curated("flights", day)))
            assert manifest["rows"] == len(curated)
            assert predictions.count_partition(ctx.engine, ctx.spec, day) == {
                "rows": len(curated), "versions": 1, "model_version": model.version, "run_ids": 1,
                "run_id": "pg-run"}
    published = predictions.latest_published(ctx.engine, "flights")
    assert sorted(published) == OPEN and all(r["status"] == "published" for r in published.values())
