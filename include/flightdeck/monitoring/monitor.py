"""Monitoring: what the monitoring DAG measures about the model in production, and when it asks to retrain.

Every check writes figures (metric, value, threshold, status, model version, partition, run)
to ``fd_monitoring_metrics`` and, where the ML Test Score has a test for it, evidence to
``fd_test_evidence`` for the champion (``monitor_1`` ... ``monitor_7``):

============  ===========================================================================  =========
check         what                                                                         test
============  ===========================================================================  =========
dependencies  fingerprint of the installed packages and of each source's delivered schema  monitor_1
invariants    the spec's GX suite ran on every scoring batch (the scoring run records it)   monitor_2
skew          a sample of scored rows rebuilt from the raw delivery with the training code  monitor_3
staleness     champion age (data and registry) and input freshness                         monitor_4
stability     NaN, infinite, out-of-range and extreme scores                               monitor_5
performance   scoring throughput and peak memory against the rolling median of runs        monitor_6
decay         realised quality once labels arrive, per partition and rolling, per slice     monitor_7
drift         PSI + KS / chi-squared of each feature against the training reference        (decay)
score_drift   PSI + KS of the scores against the reference scores                          (decay)
online        requests, invalid share and latency of the request log (REST and queue)     (serving)
online_skew   online score = precomputed score for the same input and version (1e-9)      (serving)
online_drift  features and scores of the logged online rows against the reference         (serving)
============  ===========================================================================  =========

Per-partition figures are keyed by (check, partition): a re-run replaces them, so labels
delivered twice or a monitoring run repeated never count twice. :func:`decide_retraining`
turns alerts of the spec's ``monitoring.retrain_on`` checks into a retraining request,
unless the cooldown holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from flightdeck.core import warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.errors import NothingToDo
from flightdeck.core.manifests import MonitorManifest
from flightdeck.core.spec import parse_duration

# the checks live one family per module; their public names stay importable from here
from flightdeck.monitoring.decay import (  # noqa: F401
    check_decay,
    decay_figures,
    join_labels,
    labels_of,
    record_label_orphans,
    reference_metric,
    rolling_decay,
)
from flightdeck.monitoring.drift_checks import check_drift, reference_sample  # noqa: F401
from flightdeck.monitoring.figures import (  # noqa: F401
    MONITOR_TESTS,
    QUALITY_CHECKS,
    STATUSES,
    Figure,
    detail_json,
    format_figures,
    latest_figures,
    status_of,
    summarise,
)
from flightdeck.monitoring.health import (  # noqa: F401
    check_dependencies,
    check_invariants,
    check_performance,
    check_stability,
    check_staleness,
    diff_mapping,
    environment_fingerprint,
    source_schemas,
)
from flightdeck.monitoring.inputs import (  # noqa: F401
    DRIFT_ROWS,
    REFERENCE_ROWS,
    ModelCache,
    key_frame,
    published_partitions,
    read_curated,
    read_prediction_sample,
    read_predictions,
    read_scores,
)
from flightdeck.monitoring.online import check_online
from flightdeck.monitoring.skew import check_skew, raw_partition_rows  # noqa: F401
from flightdeck.serving import predictions
from flightdeck.serving.champion import NoChampionError, resolve_model

log = logging.getLogger(__name__)


def _already_monitored(ctx: StageContext) -> dict[tuple[str, str], str]:
    """(check, partition) -> the scoring run id (or labels fingerprint) a stored figure was computed from."""
    out = {}
    for row in warehouse.queries.partition_figure_sources(ctx.engine, ctx.name, ctx.spec.monitoring.decay.metric):
        d = json.loads(row["detail"] or "{}")
        out[(row["check_name"], row["partition_date"])] = f"{d.get('scoring_run_id')}|{d.get('labels_fingerprint')}"
    return out


class NothingToMonitor(NothingToDo):
    """No champion and no published predictions: a run (e.g. the scheduler's first) has nothing to measure."""


def run_monitoring(ctx: StageContext, as_of: str | None = None, partitions: Sequence[str] | None = None,
                   run_type: str = "manual") -> MonitorManifest:
    """Run every check once; returns a small manifest (counts, alerts, the champion watched).

    Args:
        as_of: the data date the run is about (default: the newest published partition).
        partitions: partitions to (re)check; default those published or labelled since they were last checked.
        run_type: scheduled | asset_triggered | manual | backfill (the evidence's credit depends on it).
    """
    spec = ctx.spec
    at = warehouse.now()
    published = published_partitions(ctx)
    if as_of is not None:
        predictions.check_partition(as_of)
    if partitions:
        for part in partitions:
            predictions.check_partition(part)
        unknown = sorted(set(partitions) - set(published))
        if unknown:
            raise ValueError(f"partitions {unknown} of spec {ctx.name!r} have no published predictions "
                             f"(published: {len(published)}, newest {max(published) if published else None})")
    try:
        champion_version = resolve_model(spec, ctx.settings).version
    except NoChampionError:
        champion_version = None
    if champion_version is None and not published:
        raise NothingToMonitor(f"spec {ctx.name!r}: no champion and no published predictions yet, nothing to "
                               "monitor (the gates promote a champion, the scoring DAG publishes its predictions)")
    if as_of is None:
        as_of = max(published) if published else at.astimezone(_zone(spec.timezone)).date().isoformat()
    done = _already_monitored(ctx)
    models = ModelCache(ctx)
    cache: dict[str, pd.DataFrame] = {}
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    per_check_partitions: dict[str, list[str]] = {}

    def guarded(check: str, partition: str, fn: Any) -> list[Figure]:
        try:
            return list(fn() or [])
        except Exception as exc:  # noqa: BLE001 - one failing check must not hide the others
            log.exception("monitoring check %s failed on %s", check, partition)
            errors[f"{check}:{partition}"] = f"{type(exc).__name__}: {exc}"
            return [Figure(check, "check_failed", None, "error", partition=partition,
                           window="run" if partition == as_of and check not in QUALITY_CHECKS else "partition",
                           detail={"error": f"{type(exc).__name__}: {exc}"})]

    run_level: list[Figure] = []
    fingerprints = None
    for part in sorted(published):
        run = published[part]
        if partitions and part not in partitions:
            continue
        serving_key = f"{run['run_id']}|None"
        new_serving = bool(partitions) or done.get(("stability", part)) != serving_key
        part_figures: list[Figure] = []
        if new_serving:
            version = str(run["model_version"])

            def serving_checks(part: str = part, run: dict[str, Any] = run, version: str = version) -> list[Figure]:
                model = models.get(version)
                scores = read_scores(ctx, part)
                curated = read_curated(ctx, part)
                if curated is None:
                    raise FileNotFoundError(f"curated partition {part} of {ctx.name!r} is gone")
                out = check_stability(ctx, scores, part, version)
                for f in out:
                    if f.metric == "mean_score":
                        f.detail = {"scoring_run_id": run["run_id"]}
                out += check_invariants(ctx, part, run)
                out += guarded("drift", part, lambda: check_drift(ctx, model, curated, scores, part))
                out += guarded("skew", part, lambda: check_skew(
                    ctx, model, curated, read_prediction_sample(ctx, part, spec.monitoring.skew_sample_rows), part))
                if any(f.status == "error" for f in out):  # not done: the next run checks this partition again
                    for f in out:
                        if f.metric == "mean_score":
                            f.detail = {"scoring_run_id": None, "retry": True}
                return out

            part_figures += guarded("stability", part, serving_checks)
            per_check_partitions.setdefault("serving", []).append(part)
        # decay: once labels arrived, and again whenever they change
        if fingerprints is None:
            from flightdeck.serving.scoring import curated_partitions

            fingerprints = curated_partitions(ctx)
        labelled_key = f"{run['run_id']}|{fingerprints.get(part)}"
        if bool(partitions) or done.get(("decay", part)) != labelled_key:
            decay = guarded("decay", part, lambda part=part, run=run: check_decay(ctx, part, run, models, cache))
            if decay:
                part_figures += decay
                per_check_partitions.setdefault("decay", []).append(part)
        for check in {f.check for f in part_figures}:
            rows = [f.row(ctx.name, spec.registered_model_name, ctx.run_id, at) for f in part_figures
                    if f.check == check]
            warehouse.replace_rows(ctx.engine, warehouse.monitoring_metrics,
                                   {"spec_name": ctx.name, "check_name": check, "partition_date": part,
                                    "window": "partition"}, rows)
        figures += part_figures

    champion = None
    if champion_version is not None:
        try:
            champion = models.get(champion_version)
        except Exception as exc:  # noqa: BLE001 - visible as error figures (and alerts), the other checks go on
            log.exception("monitoring could not load champion version %s", champion_version)
            errors["champion"] = f"{type(exc).__name__}: {exc}"
            for check in ("decay", "staleness"):
                run_level.append(Figure(check, "check_failed", None, "error", partition=as_of, window="run",
                                        model_version=champion_version,
                                        detail={"error": f"cannot load the champion: {errors['champion']}"}))
        if champion is not None:
            run_level += guarded("decay", as_of, lambda: rolling_decay(ctx, as_of, champion, published, cache))
            run_level += guarded("staleness", as_of, lambda: check_staleness(ctx, champion, as_of))
    run_level += guarded("online", as_of, lambda: check_online(ctx, champion, at, as_of))
    run_level += guarded("performance", as_of, lambda: check_performance(ctx, as_of))
    run_level += guarded("dependencies", as_of, lambda: check_dependencies(ctx, as_of))
    for f in run_level:
        if f.window == "partition":
            f.window = "run"
    for (check, window) in {(f.check, f.window) for f in run_level}:
        rows = [f.row(ctx.name, spec.registered_model_name, ctx.run_id, at) for f in run_level
                if f.check == check and f.window == window]
        warehouse.replace_rows(ctx.engine, warehouse.monitoring_metrics,
                               {"spec_name": ctx.name, "check_name": check, "partition_date": as_of,
                                "window": window}, rows)
    figures += run_level
    evidence = record_monitoring_evidence(ctx, figures, champion_version, run_type, at) if champion_version else []
    alerts = [f for f in figures if f.status in ("alert", "error") and f.subject == ""]
    return MonitorManifest(spec=ctx.name, run_id=ctx.run_id, as_of=as_of, champion=champion_version,
                           partitions=per_check_partitions, figures=len(figures),
                           status={s: sum(1 for f in figures if f.status == s) for s in STATUSES},
                           alerts=[summarise(f) for f in alerts][:50], errors=errors, evidence=evidence)


def _zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


def record_monitoring_evidence(ctx: StageContext, figures: Sequence[Figure], version: str, run_type: str,
                               at: datetime) -> list[dict[str, Any]]:
    """One ``monitor_*`` evidence row per check that ran (pass, fail on an alert, error if it crashed)."""
    from flightdeck.gates import rubric
    from flightdeck.training.pipeline import code_version

    freshness = parse_duration(ctx.spec.gates.freshness)
    rows = []
    for check, test_id in MONITOR_TESTS.items():
        mine = [f for f in figures if f.check == check]
        if not mine:
            continue
        statuses = {f.status for f in mine}
        if statuses <= {"no_labels", "insufficient"}:
            outcome = "not_run"
        elif "error" in statuses:
            outcome = "error"
        else:
            outcome = "fail" if "alert" in statuses else "pass"
        alerts = [summarise(f) for f in mine if f.status in ("alert", "error")][:20]
        rows.append({"model_name": ctx.spec.registered_model_name, "model_version": str(version), "test_id": test_id,
                     "run_id": ctx.run_id, "section": "monitor", "mode": "automated", "outcome": outcome,
                     "metrics": detail_json({"figures": len(mine), "statuses": sorted(statuses), "alerts": alerts}),
                     "threshold": None, "artifact_uri": None,
                     "detail": f"{rubric.TESTS[test_id].name}: {len(mine)} figures, {', '.join(sorted(statuses))}",
                     "dag_id": ctx.dag_id, "run_type": run_type, "code_version": code_version(),
                     "checked_at": at, "valid_until": at + freshness})
    warehouse.replace_rows(ctx.engine, warehouse.test_evidence,
                           {"model_name": ctx.spec.registered_model_name, "model_version": str(version),
                            "run_id": ctx.run_id}, rows)
    return [{"test": r["test_id"], "outcome": r["outcome"]} for r in rows]


@dataclass(frozen=True)
class RetrainDecision:
    """What the monitoring run asks of the training DAG."""

    action: str  # retrain | cooldown | none
    reasons: tuple[dict[str, Any], ...]
    as_of: str
    model_version: str | None
    cooldown_until: str | None = None
    window_start: str | None = None

    @property
    def retrain(self) -> bool:
        return self.action == "retrain"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons), "as_of": self.as_of,
                "model_version": self.model_version, "cooldown_until": self.cooldown_until,
                "window_start": self.window_start}

    def reason_text(self) -> str:
        return "; ".join(f"{r['check']} {r['metric']}{'[' + r['subject'] + ']' if r.get('subject') else ''} "
                         f"{r['value']} vs {r['threshold']} ({r['partition']}, {r['window']})" for r in self.reasons)


def retrain_reasons(ctx: StageContext, run_id: str) -> list[dict[str, Any]]:
    """The alerts of this monitoring run that the spec retrains on (``monitoring.retrain_on``)."""
    wanted = set(ctx.spec.monitoring.retrain_on)
    metric = ctx.spec.monitoring.decay.metric
    rows = warehouse.queries.run_alerts(ctx.engine, ctx.name, run_id)
    out = []
    for r in rows:
        if "decay" in wanted and r["check_name"] == "decay" and r["window"] == "rolling" and r["metric"] == metric:
            out.append(r)
        elif "drift" in wanted and ((r["check_name"] == "drift" and r["metric"] == "features_in_alert")
                                    or r["check_name"] == "score_drift"):
            out.append(r)
        elif "staleness" in wanted and r["check_name"] == "staleness" and r["metric"] == "model_data_age_days":
            out.append(r)
    return [{"check": r["check_name"], "metric": r["metric"], "subject": r["subject"], "partition": r["partition_date"],
             "window": r["window"], "value": r["value"], "threshold": r["threshold"],
             "model_version": r["model_version"]} for r in out]


def decide_retraining(ctx: StageContext, run_id: str, as_of: str, champion: str | None,
                      record: bool = True) -> RetrainDecision:
    """Turn this run's retrain-worthy alerts into a request, unless the cooldown since the last one holds.

    Every decision with a reason is recorded in ``fd_retraining`` (keyed by the monitoring
    run, so a re-run replaces it); ``none`` is not recorded. ``record=False`` only says what
    would be decided (the CLI, which cannot emit the retrain Asset, must not start a cooldown).
    """
    cfg = ctx.spec.monitoring
    reasons = tuple(retrain_reasons(ctx, run_id))
    if not reasons or champion is None:
        if record:
            warehouse.replace_rows(ctx.engine, warehouse.retraining, {"spec_name": ctx.name, "run_id": run_id}, [])
        return RetrainDecision("none", reasons, as_of, champion)
    # only requests up to this data date: re-deciding an older run must not be cooled down by a later one
    last = warehouse.queries.last_retrain_request(ctx.engine, ctx.name, other_than_run=run_id, up_to=as_of)
    cooldown = parse_duration(cfg.cooldown)
    until = (date.fromisoformat(last) + cooldown).isoformat() if last else None
    action = "cooldown" if until is not None and as_of < until else "retrain"
    window_start = None
    if cfg.retrain_window:
        window_start = (date.fromisoformat(as_of) - parse_duration(cfg.retrain_window) + timedelta(days=1)).isoformat()
    decision = RetrainDecision(action, reasons, as_of, champion, until if action == "cooldown" else
                               (date.fromisoformat(as_of) + cooldown).isoformat(), window_start)
    if not record:
        return decision
    warehouse.replace_rows(ctx.engine, warehouse.retraining, {"spec_name": ctx.name, "run_id": run_id}, [{
        "spec_name": ctx.name, "run_id": run_id, "as_of": as_of, "action": action,
        "reasons": detail_json(list(reasons)),
        "model_version": champion, "cooldown_until": decision.cooldown_until, "decided_at": warehouse.now()}])
    return decision

