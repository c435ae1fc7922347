"""The warehouse on PostgreSQL: table creation, idempotent writes and the runner chain.

Needs ``FLIGHTDECK_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Without it the tests are skipped, except under CI (``CI`` set), where they fail.

Every test session works in its own, freshly created schema (through the connection's
``search_path``), which is dropped at the end, so the database is left as it was and
concurrent sessions never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flightdeck.core import lake, warehouse
from pg_support import postgres_url, private_schema

pytestmark = pytest.mark.postgres

FD_TABLES = {"fd_catalog", "fd_deliveries", "fd_quarantine", "fd_dataset_versions"}


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    url = postgres_url()
    if not url.startswith("postgresql"):
        pytest.fail(f"FLIGHTDECK_TEST_POSTGRES_URL must be a postgresql URL, got {url.split('://')[0]}://...")
    return url


@pytest.fixture(scope="session")
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A URL whose connections use a private schema created for this test session."""
    with private_schema(pg_base_url, "fd_test") as url:
        yield url


@pytest.fixture
def engine(pg_url: str) -> sa.Engine:
    return warehouse.connect(pg_url)


@pytest.fixture
def spec_name() -> str:
    """A spec name of its own for each test, so tests sharing the schema stay apart."""
    return f"t{uuid.uuid4().hex[:12]}"


def _schema_tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema()"
                )
            ).scalars()
        )


def _catalog_row(spec_name: str, batch_id: str, **overrides) -> dict:
    row = {
        "spec_name": spec_name,
        "batch_id": batch_id,
        "source": "schedule",
        "file_name": "flights_2013-05-01.csv",
        "source_uri": "/landing/flights/flights_2013-05-01.csv",
        "raw_uri": "/lake/raw/x.csv",
        "bytes": 123,
        "batch_date": "2013-05-01",
        "spec_version": "v1",
        "received_at": warehouse.now(),
        "dag_id": "flightdeck",
        "run_id": "run-1",
        "status": "received",
    }
    row.update(overrides)
    return row


def _quarantine_rows(spec_name: str, batch_id: str, n: int, run_id: str = "run-1") -> list[dict]:
    at = warehouse.now()
    return [
        {
            "spec_name": spec_name,
            "batch_id": batch_id,
            "row_number": i,
            "reason": "out_of_range",
            "column_name": "distance",
            "entity_key": f"k{i}",
            "value": str(i * 10_000),
            "payload": '{"distance": "huge"}',
            "run_id": run_id,
            "quarantined_at": at,
        }
        for i in range(1, n + 1)
    ]


def _count(engine: sa.Engine, table: sa.Table, spec_name: str, **where) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(table.c.spec_name == spec_name)
    for col, value in where.items():
        query = query.where(table.c[col] == value)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


# ---------------------------------------------------------------- warehouse
def test_connect_creates_the_tables(pg_url: str, engine: sa.Engine):
    assert engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_schema()")).scalar_one().startswith("fd_test_")
    assert FD_TABLES <= _schema_tables(engine)
    # creating again (a fresh, uncached engine) is a no-op, not an error
    again = warehouse.connect.__wrapped__(pg_url)
    try:
        assert FD_TABLES <= _schema_tables(again)
    finally:
        again.dispose()
    cols = {c["name"]: c for c in sa.inspect(engine).get_columns("fd_catalog")}
    assert (
        isinstance(cols["received_at"]["type"], sa.DateTime)
        and cols["received_at"]["type"].timezone
    )
    pk = sa.inspect(engine).get_pk_constraint("fd_quarantine")["constrained_columns"]
    assert set(pk) == {"spec_name", "batch_id", "row_number", "reason", "column_name"}


def test_upsert_batch_replaces_the_row(engine: sa.Engine, spec_name: str):
    warehouse.upsert_batch(engine, _catalog_row(spec_name, "a" * 64))
    warehouse.upsert_batch(engine, _catalog_row(spec_name, "b" * 64))
    replacement = _catalog_row(spec_name, "a" * 64, run_id="run-2", status="staged", rows_in=10, rows_accepted=9,
                               rows_quarantined=1)
    warehouse.upsert_batch(engine, replacement)
    assert _count(engine, warehouse.catalog, spec_name) == 2
    assert _count(engine, warehouse.catalog, spec_name, batch_id="a" * 64) == 1
    row = warehouse.get_batch(engine, spec_name, "a" * 64)
    assert (row["run_id"], row["status"], row["rows_in"], row["rows_quarantined"]) == (
        "run-2",
        "staged",
        10,
        1,
    )
    assert row["received_at"].tzinfo is not None
    # a re-run of the same upsert leaves one row with the same content
    warehouse.upsert_batch(engine, replacement)
    assert _count(engine, warehouse.catalog, spec_name) == 2
    assert [
        b["batch_id"][0] for b in warehouse.list_batches(engine, spec_name, run_id="run-2")
    ] == ["a"]

    warehouse.update_batch(engine, spec_name, "b" * 64, status="rejected", error="unreadable")
    assert warehouse.get_batch(engine, spec_name, "b" * 64)["status"] == "rejected"
    assert warehouse.get_batch(engine, spec_name, "a" * 64)["status"] == "staged"


def test_replace_quarantine_is_idempotent(engine: sa.Engine, spec_name: str):
    batch, other = "c" * 64, "d" * 64
    assert (
        warehouse.replace_quarantine(
            engine, spec_name, other, _quarantine_rows(spec_name, other, 2)
        )
        == 2
    )
    rows = _quarantine_rows(spec_name, batch, 7)
    assert warehouse.replace_quarantine(engine, spec_name, batch, rows, chunk=3) == 7
    assert warehouse.replace_quarantine(engine, spec_name, batch, rows, chunk=3) == 7
    assert _count(engine, warehouse.quarantine, spec_name, batch_id=batch) == 7
    assert warehouse.quarantine_counts(engine, spec_name, batch) == {"out_of_range": 7}

    # a smaller replacement shrinks it, an empty one clears it; the other batch is untouched
    assert warehouse.replace_quarantine(engine, spec_name, batch, iter(rows[:3])) == 3
    assert _count(engine, warehouse.quarantine, spec_name, batch_id=batch) == 3
    assert warehouse.replace_quarantine(engine, spec_name, batch, []) == 0
    assert _count(engine, warehouse.quarantine, spec_name, batch_id=batch) == 0
    assert _count(engine, warehouse.quarantine, spec_name, batch_id=other) == 2


def test_replace_quarantine_rolls_back_on_error(engine: sa.Engine, spec_name: str):
    batch = "e" * 64
    warehouse.replace_quarantine(engine, spec_name, batch, _quarantine_rows(spec_name, batch, 4))
    dup = _quarantine_rows(spec_name, batch, 2)
    with pytest.raises(sa.exc.IntegrityError):
        warehouse.replace_quarantine(
            engine, spec_name, batch, dup + dup[:1]
        )  # duplicate primary key
    assert _count(engine, warehouse.quarantine, spec_name, batch_id=batch) == 4


def test_record_dataset_version_replaces(engine: sa.Engine, spec_name: str):
    row = {
        "spec_name": spec_name,
        "version_id": "v" * 16,
        "run_id": "r1",
        "created_at": warehouse.now(),
        "manifest_uri": "/lake/m.json",
        "train_rows": 10,
        "validation_rows": 2,
        "test_rows": 2,
        "train_end": warehouse.now() - timedelta(days=2),
        "validation_end": warehouse.now(),
        "test_end": warehouse.now(),
    }
    warehouse.record_dataset_version(engine, row)
    warehouse.record_dataset_version(engine, {**row, "run_id": "r2"})
    assert _count(engine, warehouse.dataset_versions, spec_name) == 1
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(warehouse.dataset_versions.c.run_id).where(
                    warehouse.dataset_versions.c.spec_name == spec_name
                )
            ).scalar_one()
            == "r2"
        )


# ---------------------------------------------------------------- the runner chain
def _run_chain(ctx):
    from flightdeck.data import runners

    return {
        "ingest": runners.ingest_deliveries(ctx),
        "profile": runners.profile_batches(ctx),
        "validate": runners.validate_batches(ctx),
        "curate": runners.curate_batches(ctx),
        "split": runners.split_dataset(ctx),
    }


def _snapshot(engine: sa.Engine, spec: str) -> dict:
    with engine.connect() as conn:

        def rows(table, *order):
            return [
                dict(r)
                for r in conn.execute(
                    sa.select(table).where(table.c.spec_name == spec).order_by(*order)
                ).mappings()
            ]

        return {
            "catalog": rows(warehouse.catalog, warehouse.catalog.c.batch_id),
            "quarantine": rows(warehouse.quarantine, *warehouse.quarantine.primary_key.columns),
            "versions": rows(warehouse.dataset_versions, warehouse.dataset_versions.c.version_id),
            "deliveries": rows(warehouse.deliveries, warehouse.deliveries.c.id),
        }


def test_runner_chain_on_postgres(pg_url: str, flights_spec, tmp_path: Path):
    """Two days of flights from landing to published splits with the catalog in PostgreSQL.

    The spec is named ``flights`` (its expectation suites live in ``specs/flights/``); the
    session's private schema keeps its rows apart from anybody else's.
    """
    import io

    import pandas as pd
    from flightdeck.core.settings import Settings
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay, runners

    settings = Settings.from_env(
        {
            "FLIGHTDECK_HOME": str(tmp_path / "fd"),
            "FLIGHTDECK_PSEUDONYMISATION_KEY": "test-key-not-secret",
            "FLIGHTDECK_CHUNK_ROWS": "500",
            "FLIGHTDECK_WAREHOUSE_URL": pg_url,
        }
    )
    engine = warehouse.connect(settings.warehouse_url)
    assert engine.dialect.name == "postgresql"
    name = flights_spec.name
    assert _count(engine, warehouse.catalog, name) == 0, "the session schema starts empty"

    landing = open_store(settings.landing_uri)
    landed = replay.replay(flights_spec, landing, date(2013, 5, 1), date(2013, 5, 2))
    # two bad rows, quarantined (not staged): an unknown origin and an absurd distance
    key = f"{name}/flights_2013-05-02.csv"
    frame = pd.read_csv(io.BytesIO(landing.read_bytes(key)), dtype=str, keep_default_na=False)
    frame.loc[0, "origin"] = "BOS"
    frame.loc[1, "distance"] = "99999"
    landing.put_bytes(frame.to_csv(index=False).encode(), key)

    (tmp_path / "work").mkdir()
    ctx = runners.StageContext(flights_spec, settings, run_id="pg-run", workdir=tmp_path / "work")
    out = _run_chain(ctx)

    schedule_rows = sum(d.rows for d in landed if d.source == "schedule")
    assert out["ingest"]["claimed"] == out["ingest"]["batches"] == 4
    assert out["ingest"]["rows_in"] == 2 * schedule_rows
    assert out["ingest"]["rows_quarantined"] >= 2
    assert out["validate"]["validated"] == 4
    assert out["split"]["train_rows"] > out["split"]["validation_rows"] > 0

    snap = _snapshot(engine, name)
    assert len(snap["catalog"]) == 4
    assert {r["status"] for r in snap["catalog"]} == {"curated"}
    assert {r["run_id"] for r in snap["catalog"]} == {"pg-run"}
    assert all(
        r["validation_success"] is True and r["curated_at"] is not None for r in snap["catalog"]
    )
    for r in snap["catalog"]:
        assert r["rows_in"] == r["rows_accepted"] + r["rows_quarantined"]
        in_quarantine = {
            q["row_number"] for q in snap["quarantine"] if q["batch_id"] == r["batch_id"]
        }
        assert len(in_quarantine) == r["rows_quarantined"]
        staged = pd.read_parquet(
            Path(settings.lake_uri) / lake.staged(name, r["source"], r["batch_id"])
        )
        assert len(staged) == r["rows_accepted"]
        assert not set(in_quarantine) & set(staged["_row_number"])
    assert sum(r["rows_quarantined"] for r in snap["catalog"]) == out["ingest"]["rows_quarantined"]
    bad = next(r for r in snap["catalog"] if r["file_name"] == "flights_2013-05-02.csv")
    reasons = warehouse.quarantine_counts(engine, name, bad["batch_id"])
    assert reasons.get("unseen_category", 0) >= 1 and reasons.get("out_of_range", 0) >= 1, reasons
    assert [d["outcome"] for d in snap["deliveries"]] == ["new"] * 4
    assert len(snap["versions"]) == 1
    version = snap["versions"][0]
    assert version["version_id"] == out["split"]["version_id"]
    assert (version["train_rows"], version["validation_rows"], version["test_rows"]) == (
        out["split"]["train_rows"],
        out["split"]["validation_rows"],
        out["split"]["test_rows"],
    )
    assert version["train_end"] <= version["validation_end"] <= version["test_end"]
    assert version["train_end"].tzinfo is not None
    assert not list((Path(settings.landing_uri) / name).glob("*.csv")), "landing files archived"

    # re-running the same DAG run replaces its outputs: no duplicate rows anywhere
    again = _run_chain(ctx)
    assert again["ingest"]["claimed"] == 0 and again["ingest"]["batches"] == 4
    assert again["split"]["version_id"] == out["split"]["version_id"]
    snap2 = _snapshot(engine, name)
    assert len(snap2["catalog"]) == 4 and {r["status"] for r in snap2["catalog"]} == {"curated"}
    strip = ("quarantined_at",)
    assert [{k: v for k, v in q.items() if k not in strip} for q in snap2["quarantine"]] == [
        {k: v for k, v in q.items() if k not in strip} for q in snap["quarantine"]
    ]
    assert len(snap2["versions"]) == 1

    # the same files delivered again are recorded as duplicates, never ingested twice
    replay.replay(flights_spec, landing, date(2013, 5, 1), date(2013, 5, 1))
    dup_ctx = runners.StageContext(
        flights_spec, settings, run_id="pg-run-2", workdir=tmp_path / "work"
    )
    dup = runners.ingest_deliveries(dup_ctx)
    assert dup["claimed"] == 0 and dup["batches"] == 0
    assert sorted(dup["duplicates"]) == ["flights_2013-05-01.csv", "outcomes_2013-05-01.csv"]
    snap3 = _snapshot(engine, name)
    assert len(snap3["catalog"]) == 4
    assert [d["outcome"] for d in snap3["deliveries"]] == ["new"] * 4 + ["duplicate"] * 2
    assert len(snap3["quarantine"]) == len(snap["quarantine"])
