"""View models of the FlightDeck pages: one function per page, settings and a spec name in, dataclasses out.

Every query goes through SQLAlchemy Core with bound values; table names come from the spec
(validated identifiers). Nothing here renders HTML: :mod:`flightdeck.apps.ui.pages` does,
with autoescaping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from flightdeck.core import registry, warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec, list_spec_names, load_spec
from flightdeck.core.warehouse import pages

ALIASES = (registry.CHAMPION, registry.CHALLENGER, registry.PREVIOUS_CHAMPION)
LIMIT = 200
"""Rows a table shows at most (newest first)."""


class UnknownSpec(LookupError):
    """The URL names a spec that has no spec file."""


def spec_names(settings: Settings) -> list[str]:
    """The specs that have a spec file (cheap: file names only)."""
    return list_spec_names(settings.specs_dir)


def open_spec(settings: Settings, name: str) -> DatasetSpec:
    """The spec called ``name``; :class:`UnknownSpec` unless it is one of :func:`spec_names`."""
    if name not in spec_names(settings):
        raise UnknownSpec(f"no spec {name!r}")
    return load_spec(settings.specs_dir / f"{name}.yaml")


def engine_of(settings: Settings) -> Engine:
    return warehouse.connect(settings.warehouse_url)


def _json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


# ---------------------------------------------------------------- models
@dataclass
class VersionRow:
    """One registered version with its aliases and lineage tags."""

    version: str
    aliases: list[str]
    run_id: str | None
    created_at: datetime | None
    status: str
    trigger: str
    mlflow_url: str | None


@dataclass
class GateRow:
    gate: str
    hard: bool
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass
class ModelsView:
    """Registry versions, the champion's ML Test Score card, its gates and the decision history."""

    spec: str
    model_name: str
    versions: list[VersionRow]
    aliases: dict[str, str | None]
    card: dict[str, Any] | None
    card_error: str | None
    card_version: str | None
    gate_run: str | None
    gates: list[GateRow]
    history: list[dict[str, Any]]
    report_version: str | None


def mlflow_run_url(settings: Settings, experiment_id: str | None, run_id: str | None,
                   ui: str = "http://127.0.0.1:5000") -> str | None:
    """The MLflow UI's page of a run (``make up`` serves it on :5000); None without a run."""
    if not run_id or not experiment_id:
        return None
    base = settings.mlflow_tracking_uri if settings.mlflow_tracking_uri.startswith(("http://", "https://")) else ui
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def registry_versions(settings: Settings, spec: DatasetSpec) -> tuple[list[VersionRow], dict[str, str | None]]:
    """Every registered version of the spec's model, newest first, and alias -> version."""
    client = registry.mlflow_client(settings.mlflow_tracking_uri)
    name = spec.registered_model_name
    aliases = {a: registry.alias_version(client, name, a) for a in ALIASES}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        if version is not None:
            by_version.setdefault(version, []).append(alias)
    experiment = client.get_experiment_by_name(registry.experiment_name(spec.name))
    rows = []
    # MLflow's filter is text: the name is "flightdeck-<spec>", the spec name a checked identifier ([a-z0-9_])
    for mv in client.search_model_versions(f"name = '{name}'"):
        tags = dict(mv.tags or {})
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC) if mv.creation_timestamp else None
        status = tags.get("flightdeck.gate.decision", "not judged")
        rows.append(VersionRow(str(mv.version), by_version.get(str(mv.version), []), mv.run_id, created, status,
                               tags.get("flightdeck.trigger", ""),
                               mlflow_run_url(settings, experiment.experiment_id if experiment else None, mv.run_id)))
    rows.sort(key=lambda r: int(r.version) if r.version.isdigit() else 0, reverse=True)
    return rows, aliases


def score_card(settings: Settings, spec: DatasetSpec, version: str) -> dict[str, Any]:
    """The ML Test Score card of ``version`` from the evidence on record (the CLI's ``score-card``)."""
    from flightdeck.core.context import StageContext
    from flightdeck.gates import promotion

    return promotion.score_version(StageContext(spec, settings), version).to_dict()


def gate_results(engine: Engine, model_name: str, version: str) -> tuple[str | None, list[GateRow]]:
    """The gates of the newest gate run of ``version``."""
    run_id = pages.newest_gate_run(engine, model_name, version)
    if run_id is None:
        return None, []
    return run_id, [GateRow(r["gate"], bool(r["hard"]), bool(r["passed"]), r["value"], r["threshold"],
                            r["detail"] or "") for r in pages.gate_rows(engine, model_name, version, run_id)]


def decision_history(engine: Engine, spec_name: str, limit: int = LIMIT) -> list[dict[str, Any]]:
    """Promotions, rejections and rollbacks of a spec, newest first."""
    rows = pages.promotion_rows(engine, spec_name, limit)
    for r in rows:
        r["sections"] = _json(r["sections"], {})
    return rows


def models_view(settings: Settings, spec_name: str) -> ModelsView:
    """The Models page: versions and aliases, the shown version's score card and gates, the history."""
    spec = open_spec(settings, spec_name)
    engine = engine_of(settings)
    versions, aliases = registry_versions(settings, spec)
    shown = aliases[registry.CHAMPION] or aliases[registry.CHALLENGER] or (versions[0].version if versions else None)
    card, error = None, None
    if shown is not None:
        try:
            card = score_card(settings, spec, shown)
        except Exception as exc:  # noqa: BLE001 - the page still shows the rest, and says why
            error = f"{type(exc).__name__}: {exc}"
    gate_run, gates = gate_results(engine, spec.registered_model_name, shown) if shown else (None, [])
    report = report_uri(engine, spec.registered_model_name, shown) if shown else None
    return ModelsView(spec.name, spec.registered_model_name, versions, aliases, card, error, shown, gate_run, gates,
                      decision_history(engine, spec.name), shown if report else None)


def report_uri(engine: Engine, model_name: str, version: str) -> str | None:
    """The newest gate report of ``version`` (``fd_promotions.report_uri``)."""
    return pages.report_uri(engine, model_name, version)


def report_uri_of_run(engine: Engine, model_name: str, version: str, run_id: str) -> str | None:
    """The gate report of one decision (``fd_promotions`` row of that gate run)."""
    return pages.report_uri_of_run(engine, model_name, version, run_id)


# ---------------------------------------------------------------- data
@dataclass
class DataView:
    """The catalog, quarantine by reason with sample rows, and the dataset versions."""

    spec: str
    status_counts: dict[str, int]
    batches: list[dict[str, Any]]
    batch_total: int
    quarantine: list[dict[str, Any]]
    samples: dict[str, list[dict[str, Any]]]
    dataset_versions: list[dict[str, Any]]


def catalog_counts(engine: Engine, spec_name: str) -> dict[str, int]:
    return pages.catalog_counts(engine, spec_name)


def recent_batches(engine: Engine, spec_name: str, limit: int = LIMIT) -> list[dict[str, Any]]:
    """The newest catalog rows (by batch date, then arrival)."""
    return pages.recent_batches(engine, spec_name, limit)


def quarantine_by_reason(engine: Engine, spec_name: str) -> list[dict[str, Any]]:
    """Quarantined rows and batches per reason, most rows first."""
    return pages.quarantine_reasons(engine, spec_name)


def quarantine_samples(engine: Engine, spec_name: str, reasons: Sequence[str], per_reason: int = 5
                       ) -> dict[str, list[dict[str, Any]]]:
    """A few quarantined rows of each reason, as delivered (PII pseudonymised)."""
    return pages.quarantine_samples(engine, spec_name, reasons, per_reason)


def dataset_versions(engine: Engine, spec_name: str, limit: int = LIMIT) -> list[dict[str, Any]]:
    return pages.dataset_version_rows(engine, spec_name, limit)


def data_view(settings: Settings, spec_name: str) -> DataView:
    """The Data page."""
    spec = open_spec(settings, spec_name)
    engine = engine_of(settings)
    counts = catalog_counts(engine, spec.name)
    reasons = quarantine_by_reason(engine, spec.name)
    return DataView(spec.name, counts, recent_batches(engine, spec.name), sum(counts.values()), reasons,
                    quarantine_samples(engine, spec.name, [r["reason"] for r in reasons]),
                    dataset_versions(engine, spec.name))


def batch_report_key(settings: Settings, spec_name: str, batch_id: str, kind: str) -> str | None:
    """The lake key of a batch's profile or validation HTML report, from its catalog row; None if absent."""
    if kind not in ("profile", "validation"):
        return None
    row = warehouse.get_batch(engine_of(settings), spec_name, batch_id)
    uri = row.get(f"{kind}_uri") if row else None
    return lake_key(settings, uri[: -len(".json")] + ".html") if uri and uri.endswith(".json") else None


def lake_key(settings: Settings, uri: str | None) -> str | None:
    """The key of ``uri`` inside the lake, or None when it lies outside it (never served then)."""
    from flightdeck.core.storage import open_store

    if not uri:
        return None
    root = open_store(settings.lake_uri, settings.s3_endpoint_url).uri("").rstrip("/") + "/"
    if not uri.startswith(root) or ".." in uri[len(root):].split("/"):
        return None
    return uri[len(root):]


def read_lake(settings: Settings, key: str) -> bytes:
    from flightdeck.core.storage import open_store

    return open_store(settings.lake_uri, settings.s3_endpoint_url).read_bytes(key)


# ---------------------------------------------------------------- predictions
@dataclass
class PredictionsView:
    """A lookup by entity key, a partition's riskiest rows and the scoring runs."""

    spec: str
    keys: list[str]
    key: dict[str, str]
    found: list[dict[str, Any]] | None
    lookup_error: str | None
    partitions: list[str]
    partition: str | None
    riskiest: list[dict[str, Any]]
    runs: list[dict[str, Any]]


def published_partitions(engine: Engine, spec_name: str, limit: int = 400) -> list[str]:
    """Partitions with a published scoring run, newest first."""
    return pages.published_partitions(engine, spec_name, limit)


def riskiest(engine: Engine, spec: DatasetSpec, partition: str, limit: int = 20) -> list[dict[str, Any]]:
    """The ``limit`` highest scores of one partition (the README's query)."""
    from flightdeck.serving import predictions

    return predictions.riskiest(engine, spec, partition, limit)


def scoring_runs(engine: Engine, spec_name: str, limit: int = LIMIT) -> list[dict[str, Any]]:
    return pages.scoring_run_rows(engine, spec_name, limit)


def predictions_view(settings: Settings, spec_name: str, key: Mapping[str, str] | None = None,
                     partition: str | None = None) -> PredictionsView:
    """The Predictions page: ``key`` (column -> value, blanks ignored) looks up, ``partition`` picks the day."""
    from flightdeck.serving import predictions

    spec = open_spec(settings, spec_name)
    engine = engine_of(settings)
    given = {k: str(v).strip() for k, v in (key or {}).items() if v is not None and str(v).strip()}
    found, error = None, None
    if given:
        try:
            found = predictions.lookup(engine, spec, given, limit=50)
        except predictions.PredictionLookupError as exc:
            error = str(exc)
    parts = published_partitions(engine, spec.name)
    chosen = partition or (parts[0] if parts else None)
    rows: list[dict[str, Any]] = []
    if chosen:
        try:
            rows = riskiest(engine, spec, chosen)
        except predictions.PredictionLookupError as exc:
            error, chosen = str(exc), None
    shown = {k: str(v) for k, v in (key or {}).items()}
    return PredictionsView(spec.name, list(spec.entity_key), shown, found, error, parts, chosen, rows,
                           scoring_runs(engine, spec.name))


# ---------------------------------------------------------------- monitoring
@dataclass
class Event:
    """A mark on the decay chart: at a data date (partition)."""

    date: str
    kind: str  # alert | retrain | promote | rollback
    label: str


@dataclass
class MonitoringView:
    """Realised quality over time with its events, drift per feature, alerts, retraining, delivery metrics."""

    spec: str
    metric: str
    decay: dict[str, list[tuple[str, float]]]
    reference: float | None
    events: list[Event]
    drift_partition: str | None
    drift: list[dict[str, Any]]
    psi_warn: float
    psi_alert: float
    alerts: list[dict[str, Any]]
    retraining: list[dict[str, Any]]
    delivery: dict[str, Any] | None
    delivery_error: str | None = None
    notes: list[str] = field(default_factory=list)


def decay_series(engine: Engine, spec_name: str, metric: str) -> dict[str, list[tuple[str, float]]]:
    """window (``partition``, ``rolling``) -> [(partition, value)] of the overall realised ``metric``."""
    out: dict[str, list[tuple[str, float]]] = {"partition": [], "rolling": []}
    for r in pages.decay_rows(engine, spec_name, metric):
        out[r["window"]].append((r["partition_date"], float(r["value"])))
    return out


def decay_threshold(engine: Engine, spec_name: str, metric: str) -> float | None:
    """The newest alert threshold of the rolling decay metric."""
    return pages.decay_threshold(engine, spec_name, metric)


def chart_events(engine: Engine, spec_name: str) -> list[Event]:
    """Alerts (decay), retraining requests and promotions, placed on the data-date axis.

    A promotion is marked at the first partition its version published (when it began to serve);
    a retraining at the as-of date it was decided for.
    """
    events = [Event(row["partition_date"], "alert", f"decay alert ({row['n']})")
              for row in pages.decay_alert_counts(engine, spec_name)]
    events += [Event(day, "retrain", "retrain requested") for day in pages.retrain_request_dates(engine, spec_name)]
    first_served = pages.first_served(engine, spec_name)
    for row in pages.champion_moves(engine, spec_name):
        when = first_served.get(row["model_version"])
        if when:
            events.append(Event(when, "promote" if row["action"] == "promote" else "rollback",
                                f"{row['action']} v{row['model_version']}"))
    unique = {(e.date, e.kind, e.label): e for e in events}
    return sorted(unique.values(), key=lambda e: (e.date, e.kind))


def drift_by_feature(engine: Engine, spec_name: str) -> tuple[str | None, list[dict[str, Any]]]:
    """PSI (and its status) of every feature on the newest partition that has drift figures."""
    partition = pages.newest_drift_partition(engine, spec_name)
    if partition is None:
        return None, []
    return partition, pages.feature_drift(engine, spec_name, partition)


def recent_alerts(engine: Engine, spec_name: str, limit: int = 50) -> list[dict[str, Any]]:
    return pages.recent_alerts(engine, spec_name, limit)


def retraining_decisions(engine: Engine, spec_name: str, limit: int = 50) -> list[dict[str, Any]]:
    rows = pages.retraining_rows(engine, spec_name, limit)
    for row in rows:
        reasons = _json(row["reasons"], [])
        row["reasons"] = "; ".join(
            f"{x.get('check')} {x.get('metric')}" + (f" {x['subject']}" if x.get("subject") else "")
            + (f" = {x['value']:.4g}" if isinstance(x.get("value"), int | float) else "")
            + (f" (limit {x['threshold']:.4g})" if isinstance(x.get("threshold"), int | float) else "")
            for x in reasons if isinstance(x, dict))
    return rows


def delivery_metrics(settings: Settings, spec_name: str) -> dict[str, Any]:
    """The four delivery metrics (the CLI's ``delivery-metrics``), JSON-able."""
    from flightdeck.monitoring import delivery

    return delivery.compute_delivery_metrics(*delivery.load_delivery_events(settings, spec_name)).to_dict()


def monitoring_view(settings: Settings, spec_name: str) -> MonitoringView:
    """The Monitoring page."""
    spec = open_spec(settings, spec_name)
    engine = engine_of(settings)
    metric = spec.monitoring.decay.metric
    drift_partition, drift = drift_by_feature(engine, spec.name)
    delivery, delivery_error = None, None
    try:
        delivery = delivery_metrics(settings, spec.name)
    except Exception as exc:  # noqa: BLE001 - a registry hiccup must not hide the rest of the page
        delivery_error = f"{type(exc).__name__}: {exc}"
    return MonitoringView(spec.name, metric, decay_series(engine, spec.name, metric),
                          decay_threshold(engine, spec.name, metric), chart_events(engine, spec.name),
                          drift_partition, drift, spec.monitoring.drift.psi_warn, spec.monitoring.drift.psi_alert,
                          recent_alerts(engine, spec.name), retraining_decisions(engine, spec.name), delivery,
                          delivery_error)


# ---------------------------------------------------------------- summary (the JSON API)
def summary(settings: Settings, spec_name: str) -> dict[str, Any]:
    """Champion, challenger, the champion's score and band, the newest published partition."""
    spec = open_spec(settings, spec_name)
    engine = engine_of(settings)
    client = registry.mlflow_client(settings.mlflow_tracking_uri)
    aliases = {a: registry.alias_version(client, spec.registered_model_name, a) for a in ALIASES}
    champion = aliases[registry.CHAMPION]
    card = score_card(settings, spec, champion) if champion else None
    parts = published_partitions(engine, spec.name, limit=1)
    return {"spec": spec.name, "model": spec.registered_model_name, "aliases": aliases,
            "ml_test_score": card["final"] if card else None, "band": card["band"] if card else None,
            "sections": card["sections"] if card else None, "newest_partition": parts[0] if parts else None}


def summaries(settings: Settings) -> list[dict[str, Any]]:
    """:func:`summary` of every spec; a spec whose summary fails says why instead."""
    out = []
    for name in spec_names(settings):
        try:
            out.append(summary(settings, name))
        except Exception as exc:  # noqa: BLE001 - one broken spec must not hide the others
            out.append({"spec": name, "aliases": None, "ml_test_score": None, "newest_partition": None,
                        "error": f"{type(exc).__name__}: {exc}"})
    return out
