"""A synthetic history for the views' tests and benchmark, written through the library's own writers.

:func:`fill_history` writes ``days`` of one spec's life: a registry with a version per
retraining and its aliases, daily deliveries (catalog, quarantine, profile and validation
reports in the lake), weekly dataset versions, daily published predictions and scoring
runs, daily monitoring figures (decay, drift per feature, alerts), retraining decisions,
gate results, ML Test Score evidence, promotions and the gate reports. Values are random
but reproducible (``seed``); ``text`` is put into every free-text field a delivery or a
user controls (file names, quarantined values, reasons), so tests can check escaping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from flightdeck.core import lake, registry, warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec
from flightdeck.core.storage import open_store
from flightdeck.gates import rubric
from flightdeck.serving import predictions


@dataclass(frozen=True)
class History:
    """What was written: the champion, the versions, the days, one key that has a prediction."""

    champion: str
    versions: list[str]
    first_day: date
    last_day: date
    key: dict[str, Any]
    rows_per_day: int


def _at(day: date, hour: int = 6) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour)


def _register(settings: Settings, spec: DatasetSpec, versions: int, source: str) -> list[str]:
    client = registry.mlflow_client(settings.mlflow_tracking_uri)
    name = spec.registered_model_name
    experiment = registry.ensure_experiment(settings.mlflow_tracking_uri, spec.name, settings.home / "mlartifacts")
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    client.create_registered_model(name)
    out = []
    for i in range(versions):
        run = client.create_run(exp_id)
        mv = client.create_model_version(name, source=source, run_id=run.info.run_id,
                                         tags={"flightdeck.code_version": "0.1.0+sample",
                                               "flightdeck.trigger": "new dataset version" if i == 0 else "retrain",
                                               "flightdeck.gate.decision": "promote"})
        out.append(str(mv.version))
    client.set_registered_model_alias(name, registry.CHAMPION, out[-1])
    client.set_registered_model_alias(name, registry.CHALLENGER, out[-1])
    if len(out) > 1:
        client.set_registered_model_alias(name, registry.PREVIOUS_CHAMPION, out[-2])
    return out


def _deliveries(settings: Settings, spec: DatasetSpec, days: list[date], text: str, rng: np.random.Generator) -> None:
    engine = warehouse.connect(settings.warehouse_url)
    store = open_store(settings.lake_uri, settings.s3_endpoint_url)
    for i, day in enumerate(days):
        for source in spec.sources:
            batch_id = f"{source}-{day:%Y%m%d}".ljust(64, "0")
            name = f"{source}-{batch_id[:16]}"
            profile = store.put_bytes(f"<html><body><h1>Profile of {source} {day}</h1></body></html>".encode(),
                                      lake.report(spec.name, "profiles", name, "html"))
            validation = store.put_bytes(f"<html><body><h1>Validation of {source} {day}</h1></body></html>".encode(),
                                         lake.report(spec.name, "validations", name, "html"))
            rows_in = int(rng.integers(800, 1000))
            bad = int(rng.integers(0, 5))
            warehouse.upsert_batch(engine, {
                "spec_name": spec.name, "batch_id": batch_id, "source": source,
                "file_name": f"{source}_{day}{text if i == 0 else ''}.csv", "source_uri": f"landing/{source}/{day}.csv",
                "raw_uri": f"raw/{batch_id}", "bytes": rows_in * 120, "batch_date": day.isoformat(),
                "spec_version": "sample", "received_at": _at(day, 5), "ingested_at": _at(day, 5), "status": "curated",
                "rows_in": rows_in, "rows_accepted": rows_in - bad, "rows_quarantined": bad,
                "profile_uri": profile.removesuffix(".html") + ".json",
                "validation_uri": validation.removesuffix(".html") + ".json", "validation_success": True,
                "curated_at": _at(day, 6), "run_id": f"scheduled__{day}", "dag_id": f"{spec.name}_data"})
            reasons = ["out_of_range", "missing_key", text or "bad_type"]
            warehouse.replace_quarantine(engine, spec.name, batch_id, [
                {"spec_name": spec.name, "batch_id": batch_id, "row_number": n + 1, "reason": reasons[n % 3][:32],
                 "column_name": "dep_delay", "entity_key": json.dumps({"flight": n}), "value": text or str(n),
                 "payload": json.dumps({"dep_delay": text or n}), "run_id": f"scheduled__{day}",
                 "quarantined_at": _at(day, 5)} for n in range(bad)])
        if day.weekday() == 0 or i == 0:
            warehouse.record_dataset_version(engine, {
                "spec_name": spec.name, "version_id": f"ds-{day:%Y%m%d}", "run_id": f"scheduled__{day}",
                "created_at": _at(day, 7), "manifest_uri": lake.dataset_manifest(spec.name, f"ds-{day:%Y%m%d}"),
                "train_rows": 900 * (i + 1) * 70 // 100, "validation_rows": 900 * (i + 1) * 15 // 100,
                "test_rows": 900 * (i + 1) * 15 // 100, "train_end": _at(day - timedelta(days=6), 0),
                "validation_end": _at(day - timedelta(days=3), 0), "test_end": _at(day, 0)})


def _predictions(settings: Settings, spec: DatasetSpec, days: list[date], served: dict[date, str], rows: int,
                 rng: np.random.Generator) -> dict[str, Any]:
    engine = warehouse.connect(settings.warehouse_url)
    pt = predictions.ensure_tables(engine, spec)
    key: dict[str, Any] = {}
    for day in days:
        n = rows
        flights = np.arange(1, n + 1)
        columns = {"year": np.full(n, day.year), "month": np.full(n, day.month), "day": np.full(n, day.day),
                   "carrier": np.array(["UA", "B6", "DL", "AA"], dtype=object)[flights % 4], "flight": flights,
                   "origin": np.array(["EWR", "JFK", "LGA"], dtype=object)[flights % 3],
                   "sched_dep_time": 500 + flights % 1400}
        keys = {k: columns.get(k, np.array([f"{k}-{j}" for j in range(n)], dtype=object)) for k in pt.keys}
        score = rng.random(n)
        run_id = f"scheduled__{day}T20:00:00"
        table = predictions.prediction_rows(pt, keys, score, (score >= 0.5).astype("int8"),
                                            rng.integers(-2**62, 2**62, n), partition=day.isoformat(),
                                            model_name=spec.registered_model_name, model_version=served[day],
                                            run_id=run_id, scored_at=_at(day, 20))
        predictions.publish_partition(engine, spec, day.isoformat(), [table], {
            "run_id": run_id, "model_name": spec.registered_model_name, "model_version": served[day],
            "started_at": _at(day, 20), "finished_at": _at(day, 21)})
        key = {k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in keys.items()}
    return key


def _figure(spec: DatasetSpec, day: date, check: str, metric: str, value: float | None, status: str,
            version: str, *, subject: str = "", window: str = "partition", threshold: float | None = None
            ) -> dict[str, Any]:
    return {"spec_name": spec.name, "check_name": check, "metric": metric, "subject": subject,
            "partition_date": day.isoformat(), "window": window, "value": value, "threshold": threshold,
            "status": status, "rows": 900, "model_name": spec.registered_model_name, "model_version": version,
            "run_id": f"monitor__{day}", "detail": "{}", "measured_at": _at(day + timedelta(days=1), 22)}


def _monitoring(settings: Settings, spec: DatasetSpec, days: list[date], served: dict[date, str],
                rng: np.random.Generator) -> list[date]:
    """Daily decay and drift figures; returns the days a retraining was requested."""
    engine = warehouse.connect(settings.warehouse_url)
    metric = spec.monitoring.decay.metric
    features = list(spec.features)
    retrains: list[date] = []
    quality = 0.72
    for i, day in enumerate(days):
        version = served[day]
        quality = 0.72 if i and served[days[i - 1]] != version else quality - 0.002
        value = float(quality + rng.normal(0, 0.01))
        limit = 0.66
        rows = [_figure(spec, day, "decay", metric, value, "ok" if value >= limit else "alert", version),
                _figure(spec, day, "decay", metric, quality, "ok" if quality >= limit else "alert", version,
                        window="rolling", threshold=limit)]
        for m in ("precision", "recall", "f1", "log_loss"):
            rows.append(_figure(spec, day, "decay", m, float(rng.random()), "ok", version))
        for f in features:
            psi = float(abs(rng.normal(0.05, 0.08)))
            rows.append(_figure(spec, day, "drift", "psi", psi, "alert" if psi >= 0.25 else "warn" if psi >= 0.1
                                else "ok", version, subject=f, threshold=0.25))
        warehouse.replace_rows(engine, warehouse.monitoring_metrics,
                               {"spec_name": spec.name, "partition_date": day.isoformat()}, rows)
        if quality < limit and (not retrains or (day - retrains[-1]).days >= 14):
            retrains.append(day)
            warehouse.replace_rows(engine, warehouse.retraining, {"spec_name": spec.name, "run_id": f"monitor__{day}"},
                                   [{"spec_name": spec.name, "run_id": f"monitor__{day}", "as_of": day.isoformat(),
                                     "action": "retrain", "model_version": version,
                                     "reasons": json.dumps([{"check": "decay", "metric": metric, "value": quality,
                                                             "threshold": limit}]),
                                     "cooldown_until": (day + timedelta(days=14)).isoformat(),
                                     "decided_at": _at(day + timedelta(days=1), 22)}])
    return retrains


def _gates(settings: Settings, spec: DatasetSpec, versions: list[str], promoted_on: dict[str, date], text: str
           ) -> None:
    engine = warehouse.connect(settings.warehouse_url)
    store = open_store(settings.lake_uri, settings.s3_endpoint_url)
    name = spec.registered_model_name
    previous = None
    for version in versions:
        day = promoted_on[version]
        run_id = f"asset_triggered__{day}"
        report = store.put_bytes(f"<html><body><h1>Gate report of v{version}</h1></body></html>".encode(),
                                 lake.gate_report(spec.name, version, run_id))
        at = _at(day, 8)
        evidence = [rubric.Evidence(test_id=t.id, mode="automated", outcome="pass" if t.number != 2 else "fail",
                                    model_name=name, model_version=version, run_id=run_id, dag_id=f"{spec.name}_gate",
                                    run_type="asset_triggered", code_version="0.1.0+sample", checked_at=at,
                                    valid_until=at + timedelta(days=3650), metrics={"value": t.number / 10},
                                    threshold={}, artifact_uri=report, detail=f"{t.name} checked")
                    for t in rubric.RUBRIC]
        warehouse.replace_rows(engine, warehouse.test_evidence, {"model_name": name, "model_version": version},
                               [e.to_row() for e in evidence])
        warehouse.replace_rows(engine, warehouse.gate_results, {"model_name": name, "model_version": version}, [
            {"model_name": name, "model_version": version, "run_id": run_id, "gate": gate, "hard": True,
             "passed": True, "value": value, "threshold": limit, "detail": f"{gate} {value} vs {limit}",
             "figures": "{}", "checked_at": at}
            for gate, value, limit in (("min_roc_auc", 0.71, 0.6), ("max_log_loss", 0.42, 0.6),
                                       ("no_regression", 0.01, -0.01), ("leakage", 0.0, 0.0))])
        reasons = "all hard gates passed" + (f"; {text}" if text else "")
        warehouse.replace_rows(engine, warehouse.promotions, {"model_name": name, "model_version": version}, [
            {"model_name": name, "model_version": version, "run_id": run_id, "action": "promote",
             "spec_name": spec.name, "decided_by": f"{spec.name}_gate/{run_id}", "previous_champion": previous,
             "ml_test_score": 6.0, "sections": json.dumps({s: 6.0 for s in rubric.SECTIONS}), "gates": "{}",
             "reasons": reasons, "report_uri": report, "decided_at": at}])
        previous = version


def fill_history(settings: Settings, spec: DatasetSpec, start: date, days: int, *, rows_per_day: int = 900,
                 text: str = "", seed: int = 0) -> History:
    """Write ``days`` of ``spec``'s history from ``start`` into the settings' warehouse, registry and lake."""
    rng = np.random.default_rng(seed)
    calendar = [start + timedelta(days=i) for i in range(days)]
    # a first model, then a new one every 30 days (the retraining loop's pace in the year replay)
    promoted_days = [calendar[0]] + calendar[30::30]
    versions = _register(settings, spec, len(promoted_days), (settings.home / "model").as_uri())
    promoted_on = dict(zip(versions, promoted_days, strict=True))
    served = {}
    current = versions[0]
    for day in calendar:
        for version, when in promoted_on.items():
            if when == day:
                current = version
        served[day] = current
    _deliveries(settings, spec, calendar, text, rng)
    key = _predictions(settings, spec, calendar, served, rows_per_day, rng)
    _monitoring(settings, spec, calendar, served, rng)
    _gates(settings, spec, versions, promoted_on, text)
    return History(versions[-1], versions, calendar[0], calendar[-1], key, rows_per_day)
