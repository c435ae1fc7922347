"""Opening the warehouse (:func:`connect`, :func:`migrate`) and writing and reading its rows."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flightdeck.core import locks
from flightdeck.core.warehouse.schema import (
    catalog,
    dataset_versions,
    deliveries,
    metadata,
    quarantine,
    serving_requests,
)

log = logging.getLogger(__name__)

def now() -> datetime:
    return datetime.now(UTC)


def migrate(engine: Engine, schema: sa.MetaData = metadata) -> list[str]:
    """Bring the tables of ``schema`` up to date: create missing tables, add missing columns and indexes.

    A table made by an earlier FlightDeck lacks the columns added since; ``create_all`` never
    adds them, so each is added here (nullable: existing rows have no value). One process at a
    time (the store lock), so processes opening a fresh warehouse together never race.

    Returns:
        what was added, e.g. ``["fd_catalog.curated_at"]`` (empty when up to date).
    """
    added: list[str] = []
    with locks.store_lock(engine.url.render_as_string(hide_password=False), locks.WAREHOUSE):
        schema.create_all(engine, checkfirst=True)
        inspector = sa.inspect(engine)
        q = engine.dialect.identifier_preparer.quote
        for table in schema.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            missing = [c for c in table.columns if c.name not in have]
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            with engine.begin() as conn:
                for column in missing:
                    ddl = column.type.compile(dialect=engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {q(table.name)} ADD COLUMN {q(column.name)} {ddl}")
                    added.append(f"{table.name}.{column.name}")
                for index in table.indexes:
                    if index.name not in indexes:
                        index.create(conn)
                        added.append(f"{table.name}:{index.name}")
    if added:
        log.info("warehouse %s upgraded: added %s", engine.url.render_as_string(hide_password=True), added)
    return added


@lru_cache(maxsize=8)
def connect(url: str) -> Engine:
    """Return an engine for ``url`` with the FlightDeck tables up to date (:func:`migrate`, once per process)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    migrate(engine)
    return engine


def get_batch(engine: Engine, spec_name: str, batch_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(catalog).where(
            catalog.c.spec_name == spec_name, catalog.c.batch_id == batch_id)).mappings().first()
    return dict(row) if row else None


def list_batches(engine: Engine, spec_name: str, *, run_id: str | None = None,
                 statuses: Sequence[str] | None = None, source: str | None = None) -> list[dict[str, Any]]:
    """Catalog rows of a spec, optionally of one run, status set or source, oldest first."""
    query = sa.select(catalog).where(catalog.c.spec_name == spec_name)
    if run_id is not None:
        query = query.where(catalog.c.run_id == run_id)
    if statuses is not None:
        query = query.where(catalog.c.status.in_(list(statuses)))
    if source is not None:
        query = query.where(catalog.c.source == source)
    query = query.order_by(catalog.c.batch_date, catalog.c.received_at, catalog.c.batch_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def upsert_batch(engine: Engine, row: Mapping[str, Any]) -> None:
    """Insert or replace the catalog row of one batch."""
    with engine.begin() as conn:
        conn.execute(catalog.delete().where(
            catalog.c.spec_name == row["spec_name"], catalog.c.batch_id == row["batch_id"]))
        conn.execute(catalog.insert(), [dict(row)])


def update_batch(engine: Engine, spec_name: str, batch_id: str, **fields: Any) -> None:
    with engine.begin() as conn:
        conn.execute(catalog.update().where(
            catalog.c.spec_name == spec_name, catalog.c.batch_id == batch_id).values(**fields))


def record_delivery(engine: Engine, row: Mapping[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(deliveries.insert(), [dict(row)])


def replace_quarantine(engine: Engine, spec_name: str, batch_id: str,
                       rows: Iterable[Mapping[str, Any]], chunk: int = 5000) -> int:
    """Replace the quarantined rows of one batch in one transaction; return the count."""
    count = 0
    with engine.begin() as conn:
        conn.execute(quarantine.delete().where(
            quarantine.c.spec_name == spec_name, quarantine.c.batch_id == batch_id))
        buf: list[dict[str, Any]] = []
        for row in rows:
            buf.append(dict(row))
            if len(buf) >= chunk:
                conn.execute(quarantine.insert(), buf)
                count += len(buf)
                buf = []
        if buf:
            conn.execute(quarantine.insert(), buf)
            count += len(buf)
    return count


def quarantine_counts(engine: Engine, spec_name: str, batch_id: str) -> dict[str, int]:
    """Quarantined rows per reason for one batch."""
    q = (sa.select(quarantine.c.reason, sa.func.count(sa.distinct(quarantine.c.row_number)))
         .where(quarantine.c.spec_name == spec_name, quarantine.c.batch_id == batch_id)
         .group_by(quarantine.c.reason))
    with engine.connect() as conn:
        return {r: int(n) for r, n in conn.execute(q)}


def record_dataset_version(engine: Engine, row: Mapping[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(dataset_versions.delete().where(
            dataset_versions.c.spec_name == row["spec_name"],
            dataset_versions.c.version_id == row["version_id"]))
        conn.execute(dataset_versions.insert(), [dict(row)])


def record_serving_requests(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Append the log rows of one online request (one per scored row) to ``fd_serving_requests``."""
    if not rows:
        return 0
    with engine.begin() as conn:
        conn.execute(serving_requests.insert(), [dict(r) for r in rows])
    return len(rows)


def record_serving_requests_once(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Like :func:`record_serving_requests`, but a row whose (request_id, row_number) is logged already is skipped.

    For the queue worker, whose delivery is at least once: a redelivered request logs nothing twice.

    Returns:
        how many rows were new.
    """
    if not rows:
        return 0
    given: dict[tuple[str, int], dict[str, Any]] = {}
    columns = [c.name for c in serving_requests.columns]
    for r in rows:  # a key given twice: its first row; every row with every column (one statement for all)
        given.setdefault((r["request_id"], r["row_number"]), {name: r.get(name) for name in columns})
    ids = sorted({request_id for request_id, _ in given})
    c = serving_requests.c
    with engine.begin() as conn:
        have = set(conn.execute(sa.select(c.request_id, c.row_number).where(c.request_id.in_(ids))).tuples())
        fresh = [r for key, r in given.items() if key not in have]
        if fresh:
            conn.execute(_insert_skipping_logged(engine, serving_requests), fresh)
    return len(fresh)


def _insert_skipping_logged(engine: Engine, table: sa.Table) -> Any:
    """An INSERT that skips rows whose primary key exists (a concurrent writer's), on SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    return table.insert()  # other databases: the read above already left out what is logged


def to_json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def replace_rows(engine: Engine, table: sa.Table, where: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace the rows matching ``where`` (column -> value) by ``rows``, in one transaction."""
    with engine.begin() as conn:
        conn.execute(table.delete().where(*(table.c[k] == v for k, v in where.items())))
        if rows:
            conn.execute(table.insert(), [dict(r) for r in rows])


def select_rows(engine: Engine, table: sa.Table, where: Mapping[str, Any],
                order_by: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of ``table`` matching ``where`` (column -> value), as dicts."""
    query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
    query = query.order_by(*(table.c[c] for c in order_by))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def fetch_all(engine: Engine, query: sa.Select[Any]) -> list[dict[str, Any]]:
    """Every row of ``query`` as a dict."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def fetch_first(engine: Engine, query: sa.Select[Any]) -> dict[str, Any] | None:
    rows = fetch_all(engine, query.limit(1))
    return rows[0] if rows else None


def fetch_scalar(engine: Engine, query: sa.Select[Any]) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar()


# ---------------------------------------------------------------- PostgreSQL databases (deployment)
_DATABASE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _server(url: str) -> Engine:
    return sa.create_engine(sa.engine.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def _database_name(name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_DATABASE_NAME.pattern}")
    return name


def create_databases(url: str, names: Sequence[str]) -> list[str]:
    """Create the PostgreSQL databases of ``names`` that do not exist yet on ``url``'s server; those created."""
    engine, created = _server(url), []
    try:
        with engine.connect() as conn:
            for name in map(_database_name, names):
                if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')  # a validated identifier: DDL takes no binds
                    created.append(name)
    finally:
        engine.dispose()
    return created


def drop_databases(url: str, names: Sequence[str]) -> None:
    """Drop the databases of ``names`` on ``url``'s server, closing their connections."""
    engine = _server(url)
    try:
        with engine.connect() as conn:
            for name in map(_database_name, names):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()
