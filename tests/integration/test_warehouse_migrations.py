"""Opening a warehouse made by an earlier schema brings it up to date, keeping its rows.

Tables only ever gain columns, and ``create_all(checkfirst=True)`` never adds a column to a
table that exists: :func:`warehouse.migrate` does. Checked on SQLite and PostgreSQL against

- the schema of commit 8e7d993 (DDL generated from that commit, ``tests/fixtures/``), and
- the oldest conceivable schema: every table with only its required columns (primary key
  and NOT NULL), so every nullable column a later version adds is exercised.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flightdeck.core import warehouse
from flightdeck.serving import predictions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCHEMAS = (warehouse.metadata,)


def _fresh_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / f'wh-{uuid.uuid4().hex[:8]}.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a new SQLite file, or a new PostgreSQL schema (dropped after)."""
    if request.param == "sqlite":
        yield _fresh_sqlite(tmp_path)
        return
    base = os.environ.get("FLIGHTDECK_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("FLIGHTDECK_TEST_POSTGRES_URL is not set, and CI is set: PostgreSQL tests must run in CI")
        pytest.skip("FLIGHTDECK_TEST_POSTGRES_URL is not set")
    schema = f"fd_mig_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _raw_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _columns(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


def _expected() -> dict[str, set[str]]:
    return {t.name: {c.name for c in t.columns} for md in SCHEMAS for t in md.sorted_tables}


def _catalog_row(**extra: object) -> dict[str, object]:
    return {"spec_name": "flights", "batch_id": "b" * 64, "source": "schedule", "file_name": "f.csv",
            "source_uri": "/landing/f.csv", "raw_uri": "/raw/f.csv", "bytes": 10, "spec_version": "v1",
            "received_at": warehouse.now(), "status": "curated", **extra}


def _open(url: str) -> sa.Engine:
    """Open the warehouse as every process does (``connect``), plus the scoring runs table."""
    warehouse.connect.cache_clear()
    engine = warehouse.connect(url)
    predictions.list_runs(engine, "flights")
    return engine


def test_the_previous_commits_warehouse_opens_with_its_rows(empty_db: str):
    raw = _raw_engine(empty_db)
    dialect = raw.dialect.name
    lines = (FIXTURES / f"warehouse_8e7d993.{dialect}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    with raw.begin() as conn:
        for statement in filter(str.strip, ddl.split(";")):
            conn.exec_driver_sql(statement)
        conn.execute(warehouse.catalog.insert(), [_catalog_row(rows_in=5, rows_accepted=5, rows_quarantined=0)])
    engine = _open(empty_db)
    have = _columns(engine)
    for table, columns in _expected().items():
        assert columns <= have[table], f"{table} lacks {sorted(columns - have[table])}"
    row = warehouse.get_batch(engine, "flights", "b" * 64)
    assert row is not None and row["rows_in"] == 5 and row["status"] == "curated"
    engine.dispose()
    raw.dispose()


def test_a_warehouse_missing_later_columns_gains_every_one_of_them(empty_db: str):
    raw = _raw_engine(empty_db)
    old = sa.MetaData()
    for md in SCHEMAS:
        for table in md.sorted_tables:
            required = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                        for c in table.columns if c.primary_key or not c.nullable]
            sa.Table(table.name, old, *required)
    old.create_all(raw)
    with raw.begin() as conn:
        conn.execute(old.tables["fd_catalog"].insert(), [_catalog_row()])
    before = _columns(raw)
    missing = {t: cols - before.get(t, set()) for t, cols in _expected().items()}
    assert sum(map(len, missing.values())) > 50, "the old schema should lack many columns"

    engine = _open(empty_db)
    have = _columns(engine)
    for table, columns in _expected().items():
        assert columns <= have[table], f"{table} still lacks {sorted(columns - have[table])}"
    assert warehouse.migrate(engine) == [], "a second open changes nothing"
    # the added columns are usable and the old row is still there, with no value in them
    warehouse.update_batch(engine, "flights", "b" * 64, rows_in=7, error=None)
    row = warehouse.get_batch(engine, "flights", "b" * 64)
    assert row is not None and row["rows_in"] == 7 and row["curated_at"] is None
    index_names = {i["name"] for i in sa.inspect(engine).get_indexes("fd_catalog")}
    assert {"ix_fd_catalog_run", "ix_fd_catalog_status"} <= index_names
    engine.dispose()
    raw.dispose()
