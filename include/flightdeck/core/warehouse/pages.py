"""The reads behind the FlightDeck pages of the Airflow UI (:mod:`flightdeck.apps.ui`), newest first.

Each returns plain rows; the page's view model shapes them. Values are bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flightdeck.core.warehouse.schema import (
    catalog,
    dataset_versions,
    gate_results,
    monitoring_metrics,
    promotions,
    quarantine,
    retraining,
    scoring_runs,
)
from flightdeck.core.warehouse.store import fetch_all


# ---------------------------------------------------------------- models
def newest_gate_run(engine: Engine, model_name: str, version: str) -> str | None:
    """The run id of the newest gate run of ``version``."""
    g = gate_results.c
    rows = fetch_all(engine, sa.select(g.run_id, sa.func.max(g.checked_at).label("at"))
                 .where(g.model_name == model_name, g.model_version == version)
                 .group_by(g.run_id).order_by(sa.desc("at")).limit(1))
    return str(rows[0]["run_id"]) if rows else None


def gate_rows(engine: Engine, model_name: str, version: str, run_id: str) -> list[dict[str, Any]]:
    g = gate_results.c
    return fetch_all(engine, sa.select(gate_results).where(g.model_name == model_name, g.model_version == version,
                                                       g.run_id == run_id).order_by(g.gate))


def promotion_rows(engine: Engine, spec_name: str, limit: int) -> list[dict[str, Any]]:
    p = promotions.c
    return fetch_all(engine, sa.select(promotions).where(p.spec_name == spec_name).order_by(p.decided_at.desc())
                 .limit(limit))


def report_uri(engine: Engine, model_name: str, version: str) -> str | None:
    """The newest gate report of ``version`` (``fd_promotions.report_uri``)."""
    p = promotions.c
    rows = fetch_all(engine, sa.select(p.report_uri).where(p.model_name == model_name, p.model_version == version,
                                                       p.report_uri.is_not(None))
                 .order_by(p.decided_at.desc()).limit(1))
    return rows[0]["report_uri"] if rows else None


def report_uri_of_run(engine: Engine, model_name: str, version: str, run_id: str) -> str | None:
    """The gate report of one decision (``fd_promotions`` row of that gate run)."""
    p = promotions.c
    rows = fetch_all(engine, sa.select(p.report_uri).where(p.model_name == model_name, p.model_version == version,
                                                       p.run_id == run_id).limit(1))
    return rows[0]["report_uri"] if rows else None


# ---------------------------------------------------------------- data
def catalog_counts(engine: Engine, spec_name: str) -> dict[str, int]:
    c = catalog.c
    rows = fetch_all(engine, sa.select(c.status, sa.func.count().label("n")).where(c.spec_name == spec_name)
                 .group_by(c.status).order_by(c.status))
    return {r["status"]: int(r["n"]) for r in rows}


def recent_batches(engine: Engine, spec_name: str, limit: int) -> list[dict[str, Any]]:
    """The newest catalog rows (by batch date, then arrival)."""
    c = catalog.c
    return fetch_all(engine, sa.select(c.batch_id, c.source, c.file_name, c.batch_date, c.status, c.rows_in,
                                   c.rows_accepted, c.rows_quarantined, c.validation_success, c.received_at,
                                   c.profile_uri, c.validation_uri, c.error)
                 .where(c.spec_name == spec_name)
                 .order_by(c.batch_date.desc(), c.received_at.desc()).limit(limit))


def quarantine_reasons(engine: Engine, spec_name: str) -> list[dict[str, Any]]:
    """Quarantined rows and batches per reason, most rows first."""
    q = quarantine.c
    return fetch_all(engine, sa.select(q.reason, sa.func.count().label("rows"),
                                   sa.func.count(sa.distinct(q.batch_id)).label("batches"))
                 .where(q.spec_name == spec_name).group_by(q.reason).order_by(sa.desc("rows"), q.reason))


def quarantine_samples(engine: Engine, spec_name: str, reasons: Sequence[str],
                       per_reason: int) -> dict[str, list[dict[str, Any]]]:
    """A few quarantined rows of each reason, as delivered (PII pseudonymised)."""
    q = quarantine.c
    return {reason: fetch_all(engine, sa.select(q.batch_id, q.row_number, q.column_name, q.value, q.entity_key,
                                            q.payload)
                          .where(q.spec_name == spec_name, q.reason == reason)
                          .order_by(q.quarantined_at.desc(), q.batch_id, q.row_number).limit(per_reason))
            for reason in reasons}


def dataset_version_rows(engine: Engine, spec_name: str, limit: int) -> list[dict[str, Any]]:
    d = dataset_versions.c
    return fetch_all(engine, sa.select(dataset_versions).where(d.spec_name == spec_name).order_by(d.created_at.desc())
                 .limit(limit))


# ---------------------------------------------------------------- predictions
def published_partitions(engine: Engine, spec_name: str, limit: int) -> list[str]:
    """Partitions with a published scoring run, newest first."""
    r = scoring_runs.c
    rows = fetch_all(engine, sa.select(r.partition_date).where(r.spec_name == spec_name, r.status == "published")
                 .group_by(r.partition_date).order_by(r.partition_date.desc()).limit(limit))
    return [row["partition_date"] for row in rows]


def scoring_run_rows(engine: Engine, spec_name: str, limit: int) -> list[dict[str, Any]]:
    r = scoring_runs.c
    return fetch_all(engine, sa.select(r.run_id, r.partition_date, r.model_version, r.status, r.rows,
                                   r.started_at, r.finished_at, r.error)
                 .where(r.spec_name == spec_name).order_by(r.started_at.desc()).limit(limit))


# ---------------------------------------------------------------- monitoring
def decay_rows(engine: Engine, spec_name: str, metric: str) -> list[dict[str, Any]]:
    """(window, partition_date, value) of the overall realised ``metric``, per partition and rolling."""
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(m.window, m.partition_date, m.value)
                 .where(m.spec_name == spec_name, m.check_name == "decay", m.metric == metric,
                        m.subject == "", m.window.in_(["partition", "rolling"]), m.value.is_not(None))
                 .order_by(m.partition_date))


def decay_threshold(engine: Engine, spec_name: str, metric: str) -> float | None:
    """The newest alert threshold of the rolling decay metric."""
    m = monitoring_metrics.c
    rows = fetch_all(engine, sa.select(m.threshold).where(
        m.spec_name == spec_name, m.check_name == "decay", m.metric == metric, m.subject == "",
        m.window == "rolling", m.threshold.is_not(None)).order_by(m.partition_date.desc()).limit(1))
    return float(rows[0]["threshold"]) if rows else None


def decay_alert_counts(engine: Engine, spec_name: str) -> list[dict[str, Any]]:
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(m.partition_date, sa.func.count().label("n"))
                 .where(m.spec_name == spec_name, m.check_name == "decay", m.status == "alert")
                 .group_by(m.partition_date))


def retrain_request_dates(engine: Engine, spec_name: str) -> list[str]:
    r = retraining.c
    return [row["as_of"] for row in fetch_all(engine, sa.select(r.as_of).where(r.spec_name == spec_name,
                                                                            r.action == "retrain"))]


def first_served(engine: Engine, spec_name: str) -> dict[str, str]:
    """Model version -> the first partition it published."""
    s = scoring_runs.c
    return {row["model_version"]: row["first"] for row in fetch_all(
        engine, sa.select(s.model_version, sa.func.min(s.partition_date).label("first"))
        .where(s.spec_name == spec_name, s.status == "published").group_by(s.model_version))}


def champion_moves(engine: Engine, spec_name: str) -> list[dict[str, Any]]:
    """(model_version, action) of every promotion and rollback."""
    p = promotions.c
    return fetch_all(engine, sa.select(p.model_version, p.action).where(p.spec_name == spec_name,
                                                                     p.action.in_(["promote", "rollback"])))


def newest_drift_partition(engine: Engine, spec_name: str) -> str | None:
    m = monitoring_metrics.c
    rows = fetch_all(engine, sa.select(sa.func.max(m.partition_date).label("p")).where(
        m.spec_name == spec_name, m.check_name == "drift", m.metric == "psi", m.subject != ""))
    return rows[0]["p"] if rows else None


def feature_drift(engine: Engine, spec_name: str, partition: str) -> list[dict[str, Any]]:
    """PSI and status of every feature on one partition, largest first."""
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(m.subject, m.value, m.status, m.rows, m.threshold).where(
        m.spec_name == spec_name, m.check_name == "drift", m.metric == "psi", m.subject != "",
        m.partition_date == partition).order_by(m.value.desc(), m.subject))


def recent_alerts(engine: Engine, spec_name: str, limit: int) -> list[dict[str, Any]]:
    m = monitoring_metrics.c
    return fetch_all(engine, sa.select(m.partition_date, m.window, m.check_name, m.metric, m.subject,
                                   m.value, m.threshold, m.model_version, m.measured_at)
                 .where(m.spec_name == spec_name, m.status == "alert")
                 .order_by(m.partition_date.desc(), m.check_name, m.metric, m.subject).limit(limit))


def retraining_rows(engine: Engine, spec_name: str, limit: int) -> list[dict[str, Any]]:
    r = retraining.c
    return fetch_all(engine, sa.select(retraining).where(r.spec_name == spec_name).order_by(r.decided_at.desc())
                 .limit(limit))
