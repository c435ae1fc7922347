"""Prediction tables in the warehouse: what applications query.

Per spec, one predictions table (``spec.predictions_table``, e.g. ``flights_predictions``)
with the entity key, the partition (the batch date), the score, the label at the spec's
threshold, the model name and version, the scoring run id, ``scored_at`` and a hash of the
feature row; indexes for lookup by key and by partition; a view ``<table>_current`` with
the current prediction per entity. One run table, ``fd_scoring_runs``, for all specs.

Publication is atomic per partition: in one transaction the partition's rows are deleted,
the new rows inserted (PostgreSQL: ``COPY``; SQLite: ``executemany``) and the run row
marked ``published``. Readers see the old complete set or the new one, never a mix; a
re-run replaces the partition; a writer killed half-way leaves the old set in place.
Table and column names come from the spec and are validated; values are always bound.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from flightdeck.core import warehouse
from flightdeck.core.schema import ARROW_TYPES
from flightdeck.core.spec import DatasetSpec, check_identifier

PARTITION = "partition_date"
RESULT_COLUMNS = ("score", "label", "model_name", "model_version", "run_id", "scored_at", "feature_hash")
RESERVED = (PARTITION, *RESULT_COLUMNS)
RUN_STATUSES = ("running", "published", "failed", "invalid")

_SQL_TYPES: dict[str, Any] = {
    "int": sa.BigInteger, "float": sa.Float, "category": sa.Text, "string": sa.Text,
    "timestamp": lambda: sa.DateTime(timezone=True), "bool": sa.Boolean,
}

# the scoring runs live with the other warehouse tables (one schema, migrated together)
runs_metadata = warehouse.metadata
scoring_runs = warehouse.scoring_runs


class PredictionLookupError(ValueError):
    """A lookup names an unknown key column or a malformed value."""


@dataclass(frozen=True)
class PredictionTable:
    """The SQLAlchemy description of one spec's predictions table and its current view."""

    spec_name: str
    name: str
    keys: tuple[str, ...]
    key_types: tuple[str, ...]
    table: sa.Table
    view: sa.Table

    @property
    def view_name(self) -> str:
        return self.view.name

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.table.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field(k, ARROW_TYPES[t]) for k, t in zip(self.keys, self.key_types, strict=True)]
        return pa.schema([*fields, pa.field(PARTITION, pa.string()), pa.field("score", pa.float64()),
                          pa.field("label", pa.int8()), pa.field("model_name", pa.string()),
                          pa.field("model_version", pa.string()), pa.field("run_id", pa.string()),
                          pa.field("scored_at", pa.timestamp("us", tz="UTC")),
                          pa.field("feature_hash", pa.int64())])


_TABLES: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], PredictionTable] = {}


def prediction_table(spec: DatasetSpec) -> PredictionTable:
    """The predictions table of ``spec`` (names validated; the key typed as the spec declares)."""
    name = check_identifier(spec.predictions_table, "predictions table")
    view = check_identifier(f"{name}_current", "predictions view")
    keys = tuple(check_identifier(k, "entity_key column") for k in spec.entity_key)
    clash = sorted(set(keys) & set(RESERVED))
    if clash:
        raise ValueError(f"spec {spec.name!r}: entity_key columns {clash} clash with the predictions table's "
                         f"own columns {list(RESERVED)}")
    types = tuple(spec.column_type(k) or "string" for k in keys)
    cache_key = (spec.name, name, keys, types)
    if cache_key in _TABLES:
        return _TABLES[cache_key]

    def columns() -> list[sa.Column[Any]]:
        return [*(sa.Column(k, _SQL_TYPES[t](), nullable=False) for k, t in zip(keys, types, strict=True)),
                sa.Column(PARTITION, sa.String(10), nullable=False),
                sa.Column("score", sa.Float, nullable=False, comment="probability of the positive class"),
                sa.Column("label", sa.SmallInteger, nullable=False, comment="1 if score >= the spec's threshold"),
                sa.Column("model_name", sa.String(250), nullable=False),
                sa.Column("model_version", sa.String(32), nullable=False),
                sa.Column("run_id", sa.String(250), nullable=False),
                sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("feature_hash", sa.BigInteger, nullable=False, comment="hash of the model's input row")]

    md = sa.MetaData()
    table = sa.Table(name, md, *columns(),
                     sa.Index(f"ux_{name}_partition_key", PARTITION, *keys, unique=True),
                     sa.Index(f"ix_{name}_key", *keys))
    view_table = sa.Table(view, sa.MetaData(), *columns())
    out = PredictionTable(spec.name, name, keys, types, table, view_table)
    _TABLES[cache_key] = out
    return out


_ENSURED: set[tuple[str, str]] = set()


def ensure_tables(engine: Engine, spec: DatasetSpec) -> PredictionTable:
    """Create the run table, the spec's predictions table, its indexes and view if missing."""
    pt = prediction_table(spec)
    marker = (engine.url.render_as_string(hide_password=True), pt.name)
    if marker in _ENSURED:
        return pt
    q = engine.dialect.identifier_preparer.quote
    keys = ", ".join(q(k) for k in pt.keys)
    cols = ", ".join(q(c) for c in pt.columns)
    select = (f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {keys} "
              f"ORDER BY {PARTITION} DESC, scored_at DESC) AS rn FROM {q(pt.name)}) ranked WHERE rn = 1")
    for attempt in range(3):  # parallel scoring tasks may race to create the same objects
        try:
            warehouse.migrate(engine, pt.table.metadata)
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"CREATE OR REPLACE VIEW {q(pt.view_name)} AS {select}")
                else:
                    conn.exec_driver_sql(f"CREATE VIEW IF NOT EXISTS {q(pt.view_name)} AS {select}")
            break
        except sa.exc.DBAPIError:  # e.g. a duplicate type or "tuple concurrently updated": look again
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
    _ENSURED.add(marker)
    return pt


# ---------------------------------------------------------------- rows
def prediction_rows(pt: PredictionTable, keys: Mapping[str, Any] | pd.DataFrame, score: Any, label: Any,
                    feature_hash: Any, *, partition: str, model_name: str, model_version: str, run_id: str,
                    scored_at: datetime) -> pa.Table:
    """One Arrow table of finished prediction rows in the table's column order."""
    n = len(score)
    schema = pt.arrow_schema
    arrays: list[pa.Array] = []
    for k in pt.keys:
        arrays.append(pa.array(keys[k], type=schema.field(k).type, from_pandas=True))
    arrays += [pa.repeat(pa.scalar(partition, pa.string()), n),
               pa.array(score, type=pa.float64()), pa.array(label, type=pa.int8()),
               pa.repeat(pa.scalar(model_name, pa.string()), n),
               pa.repeat(pa.scalar(str(model_version), pa.string()), n),
               pa.repeat(pa.scalar(run_id, pa.string()), n),
               pa.repeat(pa.scalar(scored_at, pa.timestamp("us", tz="UTC")), n),
               pa.array(feature_hash, type=pa.int64())]
    return pa.Table.from_arrays(arrays, schema=schema)


def _sqlite_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Row tuples for ``executemany``; a constant column (run id, version, scored_at) is one repeated object."""
    n = table.num_rows
    columns: list[list[Any]] = []
    for col in table.columns:
        text_like = pa.types.is_string(col.type) or pa.types.is_timestamp(col.type)
        constant = n > 1 and text_like and col.null_count == 0 and pc.count_distinct(col).as_py() == 1
        if pa.types.is_timestamp(col.type):  # SQLAlchemy's SQLite DateTime text format
            col = pc.strftime(col.slice(0, 1) if constant else col, format="%Y-%m-%d %H:%M:%S")
        if constant:
            columns.append([col[0].as_py()] * n)
        elif col.null_count:
            columns.append(col.to_pylist())
        else:  # through numpy: several times faster than Arrow scalars
            columns.append(col.to_numpy().tolist() if isinstance(col, pa.Array)
                           else col.combine_chunks().to_numpy(zero_copy_only=False).tolist())
    return list(zip(*columns, strict=True))


def _csv_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def _check_batch(pt: PredictionTable, batch: pa.Table | pa.RecordBatch) -> pa.Table:
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    if table.column_names != pt.columns:
        raise ValueError(f"prediction rows have columns {table.column_names}, expected {pt.columns}")
    return table


def publish_partition(engine: Engine, spec: DatasetSpec, partition: str, batches: Iterable[pa.Table | pa.RecordBatch],
                      run: Mapping[str, Any]) -> int:
    """Atomically replace one partition's predictions and mark the run row published.

    ``batches`` are Arrow tables in the table's column order (see :func:`prediction_rows`),
    streamed: memory stays flat however many rows there are. Returns the rows published.
    """
    pt = ensure_tables(engine, spec)
    check_partition(partition)
    rows = 0
    q = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # one writer per partition at a time; others wait, then replace in turn
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"{pt.name}/{partition}"})
        conn.execute(pt.table.delete().where(pt.table.c[PARTITION] == partition))
        if engine.dialect.name == "postgresql":
            cols = ", ".join(q(c) for c in pt.columns)
            driver = conn.connection.driver_connection
            assert driver is not None, "a PostgreSQL connection has its psycopg connection"
            with driver.cursor() as cursor, \
                    cursor.copy(f"COPY {q(pt.name)} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                for batch in batches:
                    table = _check_batch(pt, batch)
                    if table.num_rows:
                        copy.write(_csv_bytes(table))
                        rows += table.num_rows
        else:
            marks = ", ".join("?" for _ in pt.columns)
            sql = f"INSERT INTO {q(pt.name)} ({', '.join(q(c) for c in pt.columns)}) VALUES ({marks})"
            for batch in batches:
                table = _check_batch(pt, batch)
                if table.num_rows:
                    conn.exec_driver_sql(sql, _sqlite_rows(table))
                    rows += table.num_rows
        _write_run(conn, {**run, "spec_name": spec.name, PARTITION: partition, "predictions_table": pt.name,
                          "status": "published", "rows": rows})
    return rows


# ---------------------------------------------------------------- runs
def _write_run(conn: Connection, row: Mapping[str, Any]) -> None:
    row = {k: (json.dumps(v, default=str, sort_keys=True) if isinstance(v, dict | list) else v)
           for k, v in row.items() if k in scoring_runs.c}
    conn.execute(scoring_runs.delete().where(
        scoring_runs.c.spec_name == row["spec_name"], scoring_runs.c.run_id == row["run_id"],
        scoring_runs.c[PARTITION] == row[PARTITION]))
    conn.execute(scoring_runs.insert(), [row])


def record_run(engine: Engine, spec: DatasetSpec, row: Mapping[str, Any]) -> None:
    """Insert or replace the run row of (spec, run id, partition), e.g. ``running`` or ``failed``."""
    pt = ensure_tables(engine, spec)
    with engine.begin() as conn:
        _write_run(conn, {**row, "spec_name": spec.name, "predictions_table": pt.name})


def list_runs(engine: Engine, spec_name: str, partition: str | None = None) -> list[dict[str, Any]]:
    """Run rows of a spec (optionally one partition), newest first."""
    runs_metadata.create_all(engine, checkfirst=True)
    query = sa.select(scoring_runs).where(scoring_runs.c.spec_name == spec_name)
    if partition is not None:
        query = query.where(scoring_runs.c[PARTITION] == partition)
    query = query.order_by(scoring_runs.c.started_at.desc())
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def latest_published(engine: Engine, spec_name: str) -> dict[str, dict[str, Any]]:
    """Partition -> the run row that published what is there now."""
    out: dict[str, dict[str, Any]] = {}
    for row in list_runs(engine, spec_name):
        if row["status"] == "published":
            current = out.get(row[PARTITION])
            if current is None or (row["finished_at"] or row["started_at"]) > (
                    current["finished_at"] or current["started_at"]):
                out[row[PARTITION]] = row
    return out


# ---------------------------------------------------------------- lookup
def partition_rows(engine: Engine, spec: DatasetSpec, partition: str) -> pd.DataFrame:
    """The published predictions of one partition: the entity key, score, label, version, feature hash."""
    pt = ensure_tables(engine, spec)
    t = pt.table
    cols = [t.c[k] for k in pt.keys] + [t.c.score, t.c.label, t.c.model_version, t.c.feature_hash]
    with engine.connect() as conn:  # columnar build: much faster than rows -> DataFrame
        frame = pd.read_sql_query(sa.select(*cols).where(t.c[PARTITION] == partition), conn)
    return frame.reindex(columns=[*pt.keys, "score", "label", "model_version", "feature_hash"])


def partition_scores(engine: Engine, spec: DatasetSpec, partition: str) -> np.ndarray:
    """Only the published scores of one partition."""
    t = ensure_tables(engine, spec).table
    with engine.connect() as conn:
        frame = pd.read_sql_query(sa.select(t.c.score).where(t.c[PARTITION] == partition), conn)
    return frame["score"].to_numpy(dtype="float64")


def partition_sample(engine: Engine, spec: DatasetSpec, partition: str, rows: int) -> pd.DataFrame:
    """A deterministic sample of published rows (key, score, feature hash): the ``rows`` lowest feature hashes.

    The hash of the feature row is as good as random with respect to the rows, and the
    database picks the sample, so a 1M-row partition is never fetched for it.
    """
    pt = ensure_tables(engine, spec)
    t = pt.table
    query = (sa.select(*[t.c[k] for k in pt.keys], t.c.score, t.c.feature_hash)
             .where(t.c[PARTITION] == partition).order_by(t.c.feature_hash).limit(rows))
    with engine.connect() as conn:
        return pd.read_sql_query(query, conn)


def riskiest(engine: Engine, spec: DatasetSpec, partition: str, limit: int = 20) -> list[dict[str, Any]]:
    """The ``limit`` highest scores of one partition (the README's query)."""
    pt = ensure_tables(engine, spec)
    t = pt.table
    query = (sa.select(t).where(t.c[PARTITION] == check_partition(partition))
             .order_by(t.c.score.desc(), *(t.c[k] for k in pt.keys)).limit(int(limit)))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def check_partition(partition: str) -> str:
    """A partition is a YYYY-MM-DD date."""
    try:
        date.fromisoformat(partition)
    except (TypeError, ValueError):
        raise PredictionLookupError(f"partition {partition!r} is not a YYYY-MM-DD date") from None
    if len(partition) != 10:
        raise PredictionLookupError(f"partition {partition!r} is not a YYYY-MM-DD date")
    return partition


def _typed(value: Any, kind: str, column: str) -> Any:
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return str(value).lower() in ("1", "true", "t", "yes")
        if kind == "timestamp":
            import pandas as pd

            ts = pd.Timestamp(value)
            return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()
    except (TypeError, ValueError):
        raise PredictionLookupError(f"key column {column!r} is {kind}; {value!r} is not") from None
    return str(value)


def parse_key_args(spec: DatasetSpec, pairs: Sequence[str]) -> dict[str, str]:
    """``["carrier=UA", "flight=1545"]`` -> a dict; every name must be an entity-key column."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise PredictionLookupError(f"--key {pair!r}: expected column=value")
        out[name.strip()] = value
    return out


def lookup(engine: Engine, spec: DatasetSpec, key: Mapping[str, Any] | None = None, partition: str | None = None,
           limit: int = 100) -> list[dict[str, Any]]:
    """Predictions by (part of) the entity key and/or a partition.

    By key alone: the current prediction per entity (the view). With a partition: the rows
    of that partition. Unknown key columns raise; values are bound parameters.
    """
    pt = ensure_tables(engine, spec)
    key = dict(key or {})
    unknown = sorted(set(key) - set(pt.keys))
    if unknown:
        raise PredictionLookupError(f"unknown key column(s) {unknown}; the entity key of {spec.name!r} is "
                                    f"{list(pt.keys)}")
    if not key and partition is None:
        raise PredictionLookupError("give a key (column=value) or a partition (YYYY-MM-DD)")
    source = pt.view if partition is None else pt.table
    query = sa.select(source)
    for name, value in key.items():
        query = query.where(source.c[name] == _typed(value, pt.key_types[pt.keys.index(name)], name))
    if partition is not None:
        query = query.where(source.c[PARTITION] == check_partition(partition))
    query = query.order_by(source.c[PARTITION], *(source.c[k] for k in pt.keys)).limit(int(limit))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def count_partition(engine: Engine, spec: DatasetSpec, partition: str) -> dict[str, Any]:
    """Rows, distinct model versions and run ids of one published partition."""
    pt = ensure_tables(engine, spec)
    t = pt.table
    query = (sa.select(sa.func.count(), sa.func.count(sa.distinct(t.c.model_version)),
                       sa.func.min(t.c.model_version), sa.func.count(sa.distinct(t.c.run_id)), sa.func.min(t.c.run_id))
             .where(t.c[PARTITION] == check_partition(partition)))
    with engine.connect() as conn:
        n, versions, version, runs, run_id = conn.execute(query).one()
    return {"rows": int(n), "versions": int(versions), "model_version": version, "run_ids": int(runs),
            "run_id": run_id}


def example_sql(spec: DatasetSpec) -> dict[str, str]:
    """The SQL an application runs (named parameters; the driver binds them)."""
    pt = prediction_table(spec)
    where = " AND ".join(f"{k} = :{k}" for k in pt.keys)
    return {
        "by_key": f"SELECT score, label, model_version, scored_at FROM {pt.view_name} WHERE {where}",
        "by_partition": f"SELECT * FROM {pt.name} WHERE {PARTITION} = :day ORDER BY score DESC",
    }



def rows_for_keys(engine: Engine, spec: DatasetSpec, keys: Sequence[Mapping[str, Any]],
                  chunk: int = 500) -> pd.DataFrame:
    """Every published row (any partition) of the given entities: key, partition, score, version, feature hash.

    ``keys`` are entity keys as JSON gives them (e.g. from the request log); each value is typed
    as the spec declares and bound, ``chunk`` entities per query.

    Raises:
        PredictionLookupError: a key lacks a column of the entity key, or a value has the wrong type.
    """
    pt = ensure_tables(engine, spec)
    t = pt.table
    typed = []
    for key in keys:
        missing = [k for k in pt.keys if k not in key]
        if missing:
            raise PredictionLookupError(f"entity key {dict(key)} lacks {missing}; the key of {spec.name!r} is "
                                        f"{list(pt.keys)}")
        typed.append(tuple(_typed(key[k], kind, k) for k, kind in zip(pt.keys, pt.key_types, strict=True)))
    unique = list(dict.fromkeys(typed))
    columns = [*(t.c[k] for k in pt.keys), t.c[PARTITION], t.c.score, t.c.model_version, t.c.feature_hash]
    rows: list[Any] = []
    with engine.connect() as conn:
        for start in range(0, len(unique), chunk):
            query = sa.select(*columns).where(sa.tuple_(*(t.c[k] for k in pt.keys)).in_(unique[start:start + chunk]))
            rows += conn.execute(query).fetchall()
    return pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in columns])
