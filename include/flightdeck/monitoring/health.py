"""Run health: numerical stability of the scores, the serving batch's invariants, staleness of the
model and its inputs, scoring performance against its rolling median, and dependency/schema
changes (Monitor 1, 2, 4, 6).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import registry, warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.spec import parse_duration
from flightdeck.core.values import utc
from flightdeck.monitoring.figures import Figure, status_of
from flightdeck.serving import predictions
from flightdeck.serving.champion import ServingModel


def check_stability(ctx: StageContext, scores: np.ndarray, partition: str, version: str | None) -> list[Figure]:
    """NaN, infinite and out-of-range scores must not exist; extreme scores are watched (Monitor 5)."""
    cfg = ctx.spec.monitoring
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    nan, inf = int(np.isnan(s).sum()), int(np.isinf(s).sum())
    finite = s[np.isfinite(s)]
    out_of_range = int(((finite < 0) | (finite > 1)).sum())
    in_range = finite[(finite >= 0) & (finite <= 1)]  # out-of-range scores are counted above, not twice
    extreme = int(((in_range < cfg.extreme_score) | (in_range > 1 - cfg.extreme_score)).sum())
    share = extreme / n if n else 0.0
    mk = lambda metric, value, status, threshold: Figure(  # noqa: E731
        "stability", metric, value, status, threshold, partition=partition, rows=n, model_version=version)
    return [mk("nan_scores", float(nan), status_of(nan > 0), 0.0),
            mk("infinite_scores", float(inf), status_of(inf > 0), 0.0),
            mk("out_of_range_scores", float(out_of_range), status_of(out_of_range > 0), 0.0),
            mk("extreme_share", share, status_of(share > cfg.max_extreme_share, share > cfg.max_extreme_share / 2),
               cfg.max_extreme_share),
            mk("mean_score", float(finite.mean()) if finite.size else None, "ok" if finite.size else "insufficient",
               None)]


def check_invariants(ctx: StageContext, partition: str, run: dict[str, Any]) -> list[Figure]:
    """The spec's GX suite ran on the scoring batch and held (Monitor 2); batches refused count too."""
    details = json.loads(run.get("details") or "{}")
    validation = details.get("validation")
    refused = [r for r in predictions.list_runs(ctx.engine, ctx.name, partition) if r["status"] == "invalid"]
    v = run.get("model_version")
    if not validation and not run.get("rows"):
        return [Figure("invariants", "validated", None, "insufficient", 1.0, partition=partition, rows=0,
                       model_version=v, detail={"why": "an empty partition: nothing to validate"})]
    if not validation:
        return [Figure("invariants", "validated", 0.0, "alert", 1.0, partition=partition, rows=run.get("rows"),
                       model_version=v, detail={"why": "the scoring run recorded no validation of its batch"})]
    ok = bool(validation.get("success"))
    return [Figure("invariants", "validated", 1.0 if ok else 0.0, status_of(not ok, bool(validation.get("warnings"))),
                   1.0, partition=partition, rows=validation.get("rows"), model_version=v,
                   detail={k: validation.get(k) for k in ("hard_failures", "warnings", "report_uri")}),
            Figure("invariants", "refused_batches", float(len(refused)), status_of(False, bool(refused)), 0.0,
                   partition=partition, model_version=v,
                   detail={"runs": [r["run_id"] for r in refused][:10]})]


def check_staleness(ctx: StageContext, champion: ServingModel, as_of: str) -> list[Figure]:
    """Champion age in data time and in the registry, and input freshness (Monitor 4)."""
    spec = ctx.spec
    max_age = parse_duration(spec.gates.max_model_age)
    max_input = parse_duration(spec.monitoring.max_input_age)
    v = champion.version
    figures = []
    row = warehouse.select_rows(ctx.engine, warehouse.dataset_versions,
                                {"spec_name": ctx.name, "version_id": champion.resolved.dataset_version})
    data_end = row[0]["test_end"] if row else None
    if data_end is not None:
        end_day = pd.Timestamp(data_end).tz_localize("UTC") if pd.Timestamp(data_end).tzinfo is None \
            else pd.Timestamp(data_end)
        age = (pd.Timestamp(as_of).tz_localize(spec.timezone) - end_day.tz_convert(spec.timezone)).days
        figures.append(Figure("staleness", "model_data_age_days", float(age), status_of(age > max_age.days),
                              float(max_age.days), partition=as_of, window="run", model_version=v,
                              detail={"newest_training_data": str(data_end)}))
    created = _registry_created(ctx, v)
    if created is not None:
        age_days = (warehouse.now() - created).total_seconds() / 86400
        figures.append(Figure("staleness", "model_registry_age_days", age_days, status_of(age_days > max_age.days),
                              float(max_age.days), partition=as_of, window="run", model_version=v,
                              detail={"registered_at": created.isoformat()}))
    batches = warehouse.list_batches(ctx.engine, ctx.name, source=spec.features_source_name,
                                     statuses=("curated",))
    if batches:
        newest = max(utc(b["received_at"]) for b in batches)
        hours = (warehouse.now() - newest).total_seconds() / 3600
        newest_date = max((b["batch_date"] for b in batches if b["batch_date"]), default=None)
        figures.append(Figure("staleness", "input_age_hours", hours,
                              status_of(hours > max_input.total_seconds() / 3600),
                              max_input.total_seconds() / 3600, partition=as_of, window="run", model_version=v,
                              detail={"newest_delivery": newest.isoformat(), "newest_batch_date": newest_date}))
    else:
        figures.append(Figure("staleness", "input_age_hours", None, "alert", max_input.total_seconds() / 3600,
                              partition=as_of, window="run", model_version=v, detail={"why": "no curated input"}))
    return figures


def _registry_created(ctx: StageContext, version: str) -> datetime | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = registry.mlflow_client(ctx.settings.mlflow_tracking_uri).get_model_version(
            ctx.spec.registered_model_name, version)
    except MlflowException as exc:  # a version the registry no longer has: a missing figure
        if registry.is_not_found(exc):
            return None
        raise
    return datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)


def check_performance(ctx: StageContext, as_of: str) -> list[Figure]:
    """Scoring throughput and peak memory of the newest run against the rolling median (Monitor 6).

    The ratio to the median of the previous ``performance_window`` runs catches a sudden
    regression; the median of the recent half against the older half catches a slow one.
    """
    cfg = ctx.spec.monitoring
    runs = [r for r in predictions.list_runs(ctx.engine, ctx.name) if r["status"] == "published"
            and r["finished_at"] is not None and (r["rows"] or 0) > 0]
    per_run: dict[str, dict[str, float]] = {}
    for r in sorted(runs, key=lambda r: utc(r["started_at"])):
        agg = per_run.setdefault(r["run_id"], {"rows": 0.0, "seconds": 0.0, "peak_rss_mb": 0.0,
                                               "started": utc(r["started_at"]).timestamp()})
        agg["rows"] += r["rows"]
        agg["seconds"] += max((utc(r["finished_at"]) - utc(r["started_at"])).total_seconds(), 1e-3)
        resources = json.loads(r["details"] or "{}").get("resources") or {}
        agg["peak_rss_mb"] = max(agg["peak_rss_mb"], float(resources.get("peak_rss_mb") or 0.0))
    ordered = sorted(per_run.items(), key=lambda kv: kv[1]["started"])
    if len(ordered) < 2:
        return [Figure("performance", "rows_per_s_ratio", None, "insufficient", 1 / cfg.max_slowdown,
                       partition=as_of, window="run", detail={"runs": len(ordered)})]
    latest_id, latest = ordered[-1]
    previous = [r for _, r in ordered[-1 - cfg.performance_window:-1]]
    tput = [r["rows"] / r["seconds"] for r in previous]
    now_tput = latest["rows"] / latest["seconds"]
    median = float(np.median(tput))
    ratio = now_tput / median if median else None
    figures = [Figure("performance", "rows_per_s", now_tput, "ok", None, partition=as_of, window="run",
                      rows=int(latest["rows"]), detail={"scoring_run_id": latest_id}),
               Figure("performance", "rows_per_s_ratio", ratio,
                      status_of(ratio is not None and ratio < 1 / cfg.max_slowdown), 1 / cfg.max_slowdown,
                      partition=as_of, window="run", detail={"median_rows_per_s": median, "runs": len(previous)})]
    mems = [r["peak_rss_mb"] for r in previous if r["peak_rss_mb"]]
    if mems and latest["peak_rss_mb"]:
        mem_ratio = latest["peak_rss_mb"] / float(np.median(mems))
        figures.append(Figure("performance", "peak_rss_ratio", mem_ratio, status_of(mem_ratio > cfg.max_slowdown),
                              cfg.max_slowdown, partition=as_of, window="run",
                              detail={"peak_rss_mb": latest["peak_rss_mb"], "median_mb": float(np.median(mems))}))
    history = [r["rows"] / r["seconds"] for _, r in ordered[-2 * cfg.performance_window:]]
    if len(history) >= 6:
        half = len(history) // 2
        trend = float(np.median(history[half:]) / np.median(history[:half]))
        figures.append(Figure("performance", "throughput_trend", trend, status_of(trend < 1 / cfg.max_slowdown,
                                                                               trend < 0.8),
                              1 / cfg.max_slowdown, partition=as_of, window="rolling",
                              detail={"runs": len(history)}))
    return figures


def environment_fingerprint() -> dict[str, str]:
    """Installed distributions -> version."""
    out = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower()] = dist.version
    return dict(sorted(out.items()))


def source_schemas(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """Source -> the schema of its newest delivered batch (as the catalog recorded it)."""
    out = {}
    for name in ctx.spec.sources:
        batches = [b for b in warehouse.list_batches(ctx.engine, ctx.name, source=name) if b.get("schema_json")]
        if batches:
            out[name] = json.loads(batches[-1]["schema_json"])
    return out


def check_dependencies(ctx: StageContext, as_of: str) -> list[Figure]:
    """Fingerprints of the environment and of each upstream schema against the previous run (Monitor 1)."""
    at = warehouse.now()
    current = {"packages": environment_fingerprint(),
               **{f"schema:{s}": schema for s, schema in source_schemas(ctx).items()}}
    fp = warehouse.fingerprints
    figures = []
    rows = []
    for kind, content in current.items():
        text = json.dumps(content, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        prev = warehouse.queries.previous_fingerprint(ctx.engine, ctx.name, kind, other_than_run=ctx.run_id)
        rows.append({"spec_name": ctx.name, "run_id": ctx.run_id, "kind": kind, "digest": digest, "content": text,
                     "measured_at": at})
        if prev is None:
            figures.append(Figure("dependencies", "changed", 0.0, "ok", 0.0, subject=kind, partition=as_of,
                                  window="run", detail={"baseline": digest[:12]}))
            continue
        changes = diff_mapping(json.loads(prev["content"]), content) if prev["digest"] != digest else {}
        figures.append(Figure("dependencies", "changed", float(bool(changes)), status_of(bool(changes)), 0.0,
                              subject=kind, partition=as_of, window="run",
                              detail={"previous_run": prev["run_id"], "changes": changes}))
    warehouse.replace_rows(ctx.engine, fp, {"spec_name": ctx.name, "run_id": ctx.run_id}, rows)
    return figures


def diff_mapping(before: Any, after: Any) -> dict[str, Any]:
    """Added, removed and changed keys between two fingerprints."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return {"changed": {"before": before, "after": after}} if before != after else {}
    added = {k: after[k] for k in after.keys() - before.keys()}
    removed = {k: before[k] for k in before.keys() - after.keys()}
    changed = {k: [before[k], after[k]] for k in before.keys() & after.keys() if before[k] != after[k]}
    return {k: v for k, v in (("added", added), ("removed", removed), ("changed", changed)) if v}

