"""The warehouse database: catalog, deliveries, quarantine, dataset versions and the gates' records.

SQLite by default, any SQLAlchemy URL (e.g. ``postgresql+psycopg://...``) otherwise.
Tables are created by ``flightdeck init`` (and brought up to date whenever a process first
opens the warehouse: :func:`migrate`); they only ever gain columns. Values always travel as
bound parameters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flightdeck.core import locks

log = logging.getLogger(__name__)

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


test_evidence = sa.Table(
    "fd_test_evidence", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True, comment="'' for evidence about a code version"),
    sa.Column("test_id", sa.String(16), primary_key=True, comment="ML Test Score id, e.g. data_1, infra_7"),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("section", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False, comment="automated | manual"),
    sa.Column("outcome", sa.String(16), nullable=False, comment="pass | fail | not_run | error"),
    sa.Column("metrics", sa.Text, comment="JSON"),
    sa.Column("threshold", sa.Text, comment="JSON"),
    sa.Column("artifact_uri", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("run_type", sa.String(32), comment="scheduled | asset_triggered | manual | backfill | ci | attestation"),
    sa.Column("code_version", sa.String(64)),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_fd_test_evidence_code", "model_name", "code_version", "test_id"),
)

gate_results = sa.Table(
    "fd_gate_results", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("gate", sa.String(32), primary_key=True),
    sa.Column("hard", sa.Boolean, nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("detail", sa.Text),
    sa.Column("figures", sa.Text, comment="JSON"),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
)

promotions = sa.Table(
    "fd_promotions", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True, comment="gate run id, or rollback-<timestamp>"),
    sa.Column("action", sa.String(16), primary_key=True, comment="promote | reject | rollback"),
    sa.Column("spec_name", sa.String(64), nullable=False),
    sa.Column("decided_by", sa.String(250), nullable=False, comment="dag_id/run_id, or the user"),
    sa.Column("previous_champion", sa.String(32)),
    sa.Column("ml_test_score", sa.Float),
    sa.Column("sections", sa.Text, comment="JSON: section -> score"),
    sa.Column("gates", sa.Text, comment="JSON: gate -> passed, value, threshold"),
    sa.Column("reasons", sa.Text),
    sa.Column("report_uri", sa.Text),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)

shadow_predictions = sa.Table(
    "fd_shadow_predictions", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("row_id", sa.BigInteger, primary_key=True, comment="position in the canary sample"),
    sa.Column("entity_key", sa.Text, nullable=False, comment="JSON of the spec's entity key"),
    sa.Column("score", sa.Float),
    sa.Column("champion_version", sa.String(32)),
    sa.Column("champion_score", sa.Float),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
)


monitoring_metrics = sa.Table(
    "fd_monitoring_metrics", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("check_name", sa.String(32), primary_key=True,
              comment="invariants | drift | score_drift | skew | stability | staleness | performance | "
                      "dependencies | decay"),
    sa.Column("metric", sa.String(64), primary_key=True, comment="e.g. psi, ks, roc_auc, rows_per_s"),
    sa.Column("subject", sa.String(250), primary_key=True, comment="feature, slice (column=value), or '' for all"),
    sa.Column("partition_date", sa.String(10), primary_key=True,
              comment="the scored partition, or the as-of date of a run-level check"),
    sa.Column("window", sa.String(16), primary_key=True, comment="partition | rolling | run"),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("status", sa.String(16), nullable=False, comment="ok | warn | alert | no_labels | insufficient | error"),
    sa.Column("rows", sa.BigInteger, comment="rows the figure is computed on"),
    sa.Column("model_name", sa.String(250)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("run_id", sa.String(250), nullable=False, comment="the monitoring run that measured it"),
    sa.Column("detail", sa.Text),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_fd_monitoring_metrics_run", "spec_name", "run_id"),
    sa.Index("ix_fd_monitoring_metrics_check", "spec_name", "check_name", "partition_date"),
)

label_orphans = sa.Table(
    "fd_label_orphans", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("partition_date", sa.String(10), primary_key=True),
    sa.Column("entity_key", sa.Text, primary_key=True, comment="JSON of the spec's entity key"),
    sa.Column("reason", sa.String(16), primary_key=True, comment="unknown_key | duplicate"),
    sa.Column("occurrences", sa.Integer, nullable=False, comment="times the key was delivered"),
    sa.Column("batch_ids", sa.Text, comment="JSON list of the labels batches that carried it"),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

retraining = sa.Table(
    "fd_retraining", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True, comment="the monitoring run that decided"),
    sa.Column("as_of", sa.String(10), nullable=False, comment="the data date the decision is about"),
    sa.Column("action", sa.String(16), nullable=False, comment="retrain | cooldown"),
    sa.Column("reasons", sa.Text, nullable=False, comment="JSON list of {check, metric, subject, value, threshold}"),
    sa.Column("model_version", sa.String(32), comment="the champion that was watched"),
    sa.Column("cooldown_until", sa.String(10)),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)

fingerprints = sa.Table(
    "fd_fingerprints", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("kind", sa.String(128), primary_key=True, comment="packages | schema:<source>"),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("content", sa.Text, nullable=False, comment="JSON: package -> version, or column -> type"),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
)

scoring_runs = sa.Table(
    "fd_scoring_runs", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True, comment="the scoring (Airflow) run id"),
    sa.Column("partition_date", sa.String(10), primary_key=True),
    sa.Column("predictions_table", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(250)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("status", sa.String(16), nullable=False, comment="running | published | failed | invalid"),
    sa.Column("rows", sa.BigInteger),
    sa.Column("unknown_categories", sa.Text, comment="JSON: feature -> values the model never saw"),
    sa.Column("input_uri", sa.Text),
    sa.Column("input_fingerprint", sa.String(128)),
    sa.Column("details", sa.Text, comment="JSON: threshold, prior, history, validation"),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Index("ix_fd_scoring_runs_partition", "spec_name", "partition_date"),
)


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
