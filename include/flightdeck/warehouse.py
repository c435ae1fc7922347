"""The warehouse database: catalog, deliveries, quarantine and dataset versions.

SQLite by default, any SQLAlchemy URL (e.g. ``postgresql+psycopg://...``) otherwise.
Tables are created with ``CREATE TABLE IF NOT EXISTS`` on first use and only ever gain
columns. Values always travel as bound parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

catalog = sa.Table(
    "fd_catalog", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True, comment="sha256 of the delivered file"),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("file_name", sa.String(512), nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("raw_uri", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("batch_date", sa.String(10)),
    sa.Column("spec_version", sa.String(32), nullable=False),
    sa.Column("schema_json", sa.Text),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True)),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("rows_in", sa.BigInteger),
    sa.Column("rows_accepted", sa.BigInteger),
    sa.Column("rows_quarantined", sa.BigInteger),
    sa.Column("staged_uri", sa.Text),
    sa.Column("profile_uri", sa.Text),
    sa.Column("validation_uri", sa.Text),
    sa.Column("validation_success", sa.Boolean),
    sa.Column("curated_at", sa.DateTime(timezone=True)),
    sa.Index("ix_fd_catalog_run", "spec_name", "run_id"),
    sa.Index("ix_fd_catalog_status", "spec_name", "status"),
)

deliveries = sa.Table(
    "fd_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("spec_name", sa.String(64), nullable=False),
    sa.Column("file_name", sa.String(512), nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("outcome", sa.String(16), nullable=False, comment="new | duplicate"),
    sa.Index("ix_fd_deliveries_sha", "spec_name", "sha256"),
)

quarantine = sa.Table(
    "fd_quarantine", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("row_number", sa.BigInteger, primary_key=True, comment="1-based data row in the file"),
    sa.Column("reason", sa.String(32), primary_key=True),
    sa.Column("column_name", sa.String(512), primary_key=True, comment="column, or the key columns joined by ','"),
    sa.Column("entity_key", sa.Text),
    sa.Column("value", sa.Text),
    sa.Column("payload", sa.Text, comment="the row as delivered, JSON, PII pseudonymised"),
    sa.Column("run_id", sa.String(250)),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
)

dataset_versions = sa.Table(
    "fd_dataset_versions", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.String(64), primary_key=True, comment="hash of the split contents"),
    sa.Column("run_id", sa.String(250)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("manifest_uri", sa.Text, nullable=False),
    sa.Column("train_rows", sa.BigInteger),
    sa.Column("validation_rows", sa.BigInteger),
    sa.Column("test_rows", sa.BigInteger),
    sa.Column("train_end", sa.DateTime(timezone=True)),
    sa.Column("validation_end", sa.DateTime(timezone=True)),
    sa.Column("test_end", sa.DateTime(timezone=True)),
)


def now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=8)
def connect(url: str) -> Engine:
    """Return an engine for ``url`` with the FlightDeck tables created."""
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
    metadata.create_all(engine, checkfirst=True)
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


def to_json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
