"""Named reads of the warehouse: what the stages, the monitoring and the apps ask of it.

Every function takes an engine and bound values; none formats a value into SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flightdeck.core.warehouse.schema import (
    catalog,
    dataset_versions,
    fingerprints,
    monitoring_metrics,
    promotions,
    quarantine,
    retraining,
    scoring_runs,
    serving_requests,
    test_evidence,
)
from flightdeck.core.warehouse.store import fetch_all, fetch_first, fetch_scalar


# ---------------------------------------------------------------- data
def batch_summary(engine: Engine, spec_name: str) -> list[dict[str, Any]]:
    """Per source and status: batches, rows in, accepted and quarantined."""
    c = catalog.c
    return fetch_all(engine, sa.select(c.source, c.status, sa.func.count().label("batches"),
                                   sa.func.sum(c.rows_in).label("rows_in"),
                                   sa.func.sum(c.rows_accepted).label("rows_accepted"),
                                   sa.func.sum(c.rows_quarantined).label("rows_quarantined"))
                 .where(c.spec_name == spec_name).group_by(c.source, c.status).order_by(c.source, c.status))


def quarantine_by_reason(engine: Engine, spec_name: str) -> dict[str, int]:
    """Quarantined rows per reason over every batch of a spec."""
    q = quarantine.c
    rows = fetch_all(engine, sa.select(q.reason, sa.func.count().label("n")).where(q.spec_name == spec_name)
                 .group_by(q.reason).order_by(q.reason))
    return {r["reason"]: int(r["n"]) for r in rows}


def quarantined_rows(engine: Engine, spec_name: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` quarantined rows, by batch and row number."""
    q = quarantine.c
    return fetch_all(engine, sa.select(quarantine).where(q.spec_name == spec_name)
                 .order_by(q.batch_id, q.row_number).limit(limit))


def latest_dataset_version(engine: Engine, spec_name: str) -> dict[str, Any] | None:
    v = dataset_versions.c
    return fetch_first(engine, sa.select(dataset_versions).where(v.spec_name == spec_name)
                       .order_by(v.created_at.desc()))


def dataset_created_at(engine: Engine, spec_name: str, version_id: str) -> datetime | None:
    v = dataset_versions.c
    created: datetime | None = fetch_scalar(engine, sa.select(v.created_at).where(
        v.spec_name == spec_name, v.version_id == version_id))
    return created


def newest_curated_delivery(engine: Engine, spec_name: str, until: datetime) -> datetime | None:
    """When the newest curated batch received by ``until`` arrived."""
    c = catalog.c
    newest: datetime | None = fetch_scalar(engine, sa.select(sa.func.max(c.received_at)).where(
        c.spec_name == spec_name, c.status == "curated", c.received_at <= until))
    return newest


# ---------------------------------------------------------------- gates
def promotion_history(engine: Engine, spec_name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Promotions, rejections and rollbacks, newest first."""
    p = promotions.c
    query = sa.select(promotions).where(p.spec_name == spec_name).order_by(p.decided_at.desc())
    return fetch_all(engine, query.limit(limit) if limit else query)


def monitoring_evidence_of_other_versions(engine: Engine, model_name: str, version: str) -> list[dict[str, Any]]:
    """Monitoring evidence recorded against the model's other versions (the champion it watched)."""
    t = test_evidence.c
    return fetch_all(engine, sa.select(test_evidence).where(
        t.model_name == model_name, t.section == "monitor", t.model_version != version))


# ---------------------------------------------------------------- monitoring
def partition_figure_sources(engine: Engine, spec_name: str, decay_metric: str) -> list[dict[str, Any]]:
    """The stability and decay figures per partition, with the detail naming what they were computed from."""
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(m.check_name, m.partition_date, m.detail).where(
        m.spec_name == spec_name, m.window == "partition", m.subject == "",
        # decay has a mean_score figure too (without the fingerprint): pair each check with its own metric
        sa.or_(sa.and_(m.check_name == "stability", m.metric == "mean_score"),
               sa.and_(m.check_name == "decay", m.metric == decay_metric))))


def run_alerts(engine: Engine, spec_name: str, run_id: str) -> list[dict[str, Any]]:
    """The model-level figures of one monitoring run in ``alert`` status."""
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(monitoring_metrics).where(
        m.spec_name == spec_name, m.run_id == run_id, m.status == "alert", m.subject == ""))


def alert_figures(engine: Engine, spec_name: str, checks: Sequence[str]) -> list[dict[str, Any]]:
    """Every figure in ``alert`` status of the given checks, oldest first."""
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(m.check_name, m.partition_date, m.model_version, m.metric, m.subject, m.value,
                                   m.threshold, m.measured_at)
                 .where(m.spec_name == spec_name, m.status == "alert", m.check_name.in_(list(checks)))
                 .order_by(m.measured_at, m.check_name, m.metric, m.subject))


def figures_newest_first(engine: Engine, spec_name: str) -> list[dict[str, Any]]:
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(monitoring_metrics).where(m.spec_name == spec_name)
                 .order_by(m.partition_date.desc(), m.check_name, m.metric, m.subject))


def feature_psi(engine: Engine, spec_name: str) -> list[dict[str, Any]]:
    """The drift PSI of every feature and partition."""
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(m.partition_date, m.subject, m.value).where(
        m.spec_name == spec_name, m.check_name == "drift", m.metric == "psi"))


def last_retrain_request(engine: Engine, spec_name: str, other_than_run: str, up_to: str) -> str | None:
    """The data date of the newest retraining request up to ``up_to``, made by another run."""
    r = retraining.c
    as_of: str | None = fetch_scalar(engine, sa.select(r.as_of).where(r.spec_name == spec_name, r.action == "retrain",
                                                                 r.run_id != other_than_run, r.as_of <= up_to)
                                .order_by(r.as_of.desc()).limit(1))
    return as_of


def previous_fingerprint(engine: Engine, spec_name: str, kind: str, other_than_run: str) -> dict[str, Any] | None:
    """The newest fingerprint of ``kind`` (dependencies, config) recorded by another run."""
    f = fingerprints.c
    return fetch_first(engine, sa.select(f.digest, f.content, f.run_id)
                  .where(f.spec_name == spec_name, f.kind == kind, f.run_id != other_than_run)
                  .order_by(f.measured_at.desc()))


# ---------------------------------------------------------------- scoring runs
def published_run_times(engine: Engine, spec_name: str, versions: Sequence[str]) -> list[dict[str, Any]]:
    """(model_version, finished_at) of every published scoring run of these versions, oldest first."""
    s = scoring_runs.c
    return fetch_all(engine, sa.select(s.model_version, s.finished_at)
                 .where(s.spec_name == spec_name, s.status == "published", s.finished_at.is_not(None),
                        s.model_version.in_(list(versions)))
                 .order_by(s.finished_at))


# ---------------------------------------------------------------- online serving
def serving_requests_of(engine: Engine, spec_name: str, request_id: str | None = None,
                        limit: int = 1000) -> list[dict[str, Any]]:
    """Rows of ``fd_serving_requests`` of a spec (optionally one request), oldest first."""
    r = serving_requests.c
    query = sa.select(serving_requests).where(r.spec_name == spec_name)
    if request_id is not None:
        query = query.where(r.request_id == request_id)
    return fetch_all(engine, query.order_by(r.received_at, r.request_id, r.row_number).limit(limit))


def serving_log_window(engine: Engine, spec_name: str, since: datetime, until: datetime,
                       limit: int = 200_000) -> list[dict[str, Any]]:
    """Request-log rows of a spec received in ``[since, until)``, newest first, at most ``limit``."""
    r = serving_requests.c
    return fetch_all(engine, sa.select(r.request_id, r.row_number, r.endpoint, r.received_at, r.model_version,
                                       r.entity_key, r.request_row, r.feature_hash, r.score, r.latency_ms, r.status)
                     .where(r.spec_name == spec_name, r.received_at >= since, r.received_at < until)
                     .order_by(r.received_at.desc(), r.request_id, r.row_number).limit(limit))
