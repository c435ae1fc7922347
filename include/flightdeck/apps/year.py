"""The year in replay: the whole continuous-training loop over a year of real deliveries, compressed in time.

Day by day, in one process and with the same stage functions the DAGs' operators call:

1. the outcomes of day D and the schedule of day D+1 land; the data stages ingest, profile,
   validate and curate them;
2. the champion scores the open partition D+1 (validated, published atomically);
3. monitoring runs as of D: decay of D's predictions against the labels that just arrived,
   drift and skew of D+1, stability, staleness, performance, dependencies;
4. when decay (or drift, per the spec) crosses its limits and the cooldown allows, the
   loop retrains on the newest dataset version, the gates judge the challenger, and a
   promotion moves ``champion`` and rescores the open partition.

Beside it, the first model is kept and scores the same partitions without ever being
retrained (its history features stay fresh, as serving state would), so the report can
state what the loop bought in realised quality. The report: a decay chart with the
retraining and promotion events, a drift chart, the delivery metrics, as PNG and HTML.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from flightdeck.core import warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec, parse_duration, spec_named
from flightdeck.data import replay, runners
from flightdeck.monitoring import monitor as monitoring
from flightdeck.monitoring import realised
from flightdeck.serving import scoring
from flightdeck.serving.champion import ServingModel, load_history, load_serving_model
from flightdeck.training import pipeline as training

log = logging.getLogger(__name__)

QUICK_TRAINING = {"cv_folds": 2, "tuning_budget": 3}
REPORT_METRICS = ("roc_auc", "log_loss", "precision", "recall", "f1", "calibration_error", "prediction_bias")


@dataclass
class YearState:
    """What the loop keeps between days: realised pairs per model and day, events, timings."""

    pairs: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # (model, day) -> y, score
    frozen_scores: dict[str, pd.DataFrame] = field(default_factory=dict)      # day -> key columns + score
    events: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timer(self, what: str) -> Iterator[None]:
        clock = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - clock


def replay_settings(home: Path, base: Settings | None = None) -> Settings:
    """Settings of a self-contained replay home (its own warehouse, lake, landing and registry)."""
    base = base or Settings.from_env()
    env = {k: v for k, v in os.environ.items() if k.startswith("FLIGHTDECK_") and k not in (
        "FLIGHTDECK_HOME", "FLIGHTDECK_WAREHOUSE_URL", "FLIGHTDECK_LAKE_URI", "FLIGHTDECK_LANDING_URI",
        "FLIGHTDECK_MLFLOW_TRACKING_URI")}
    env["FLIGHTDECK_HOME"] = str(home)
    env.setdefault("FLIGHTDECK_SPECS_DIR", str(base.specs_dir))
    return Settings.from_env(env)


def quick_spec(spec: DatasetSpec) -> DatasetSpec:
    """The spec with a smaller model search (two CV folds, three tuning trials) to keep the year short."""
    return spec.model_copy(update={"training": spec.training.model_copy(update=QUICK_TRAINING)})


def data_stages(ctx: StageContext) -> dict[str, Any]:
    """The data DAG's stages for whatever landed: ingest, profile, validate, curate."""
    out: dict[str, Any] = {"ingest": runners.ingest_deliveries(ctx)}
    runners.profile_batches(ctx)
    runners.validate_batches(ctx)
    out["curate"] = runners.curate_batches(ctx)
    return out


def retrain_and_gate(ctx: StageContext, trigger: str, window: tuple[str | None, str | None],
                     min_score: float) -> dict[str, Any]:
    """Split, train, register, judge and decide: what the training and gate DAGs do, in order."""
    from flightdeck.gates import promotion as gates

    runners.split_dataset(ctx)
    trained = training.train_model(ctx, window, force=True, trigger=trigger)
    registered = training.register_model(ctx, trained)
    verdict = gates.judge_version(ctx, registered["version"], run_type="asset_triggered",
                                  min_ml_test_score=min_score)
    outcome = gates.decide(ctx, verdict)
    return {"version": registered["version"], "promoted": bool(outcome.get("promoted")),
            "reasons": verdict.get("reasons") or [], "chosen": trained["chosen"], "test": trained["test"]}


def _score_frame(model: ServingModel, curated: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    scored = model.score_curated(curated).frame
    return monitoring.key_frame(scored, keys).assign(score=scored["score"].to_numpy())


def _pairs(ctx: StageContext, scored: pd.DataFrame, curated: pd.DataFrame) -> pd.DataFrame:
    """(y, score) of scored rows whose labels arrived."""
    keys = list(ctx.spec.entity_key)
    target = ctx.spec.target.name
    lab = curated[curated[target].notna()]
    right = monitoring.key_frame(lab, keys).assign(y=lab[target].astype(int).to_numpy())
    return scored.merge(right.drop_duplicates(keys), on=keys, how="inner")[["y", "score"]]


def run_year(spec_name: str, home: Path, start: date, end: date, bootstrap_days: int = 31, quick: bool = True,
             out_dir: Path | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Replay ``start``..``end`` through the whole loop; returns the summary and writes the report.

    The first ``bootstrap_days`` are delivered at once and train the first champion.
    """
    settings = replay_settings(home)
    spec = spec_named(settings.specs_dir, spec_name)
    if quick:
        spec = quick_spec(spec)
    out_dir = out_dir or home / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = warehouse.connect(settings.warehouse_url)
    if warehouse.list_batches(engine, spec.name):
        raise RuntimeError(f"{home} already holds a replay of {spec.name!r}; pass a new --home (nothing is reused)")
    state = YearState()
    landing = StageContext(spec, settings).landing
    source = replay.load_replay_source(spec)
    by_day: dict[date, list[tuple[replay.Delivery, bytes]]] = {}
    for delivery, payload in replay.cut_deliveries(spec, source, start, end + timedelta(days=1)):
        by_day.setdefault(delivery.day, []).append((delivery, payload))
    labels_source = spec.labels_source_name

    def deliver(day: date, kinds: tuple[str, ...]) -> int:
        n = 0
        for delivery, payload in by_day.get(day, []):
            role = "labels" if delivery.source == labels_source else "features"
            if role in kinds:
                landing.put_bytes(payload, f"{spec.name}/{delivery.file_name}")
                n += delivery.rows
        return n

    def ctx_for(kind: str, day: date) -> StageContext:
        return StageContext(spec, settings, run_id=f"year__{kind}__{day.isoformat()}", dag_id=f"{spec.name}_{kind}")

    min_score = settings.min_ml_test_score
    boot_end = start + timedelta(days=bootstrap_days - 1)
    echo(f"year in replay: {spec.name} {start}..{end}, bootstrap {start}..{boot_end}, home {home}"
         + (" (quick model search)" if quick else ""))
    d = start
    while d <= boot_end:
        deliver(d, ("features", "labels"))
        d += timedelta(days=1)
    deliver(boot_end + timedelta(days=1), ("features",))
    ctx = ctx_for("data", boot_end)
    with state.timer("data"):
        data_stages(ctx)
    with state.timer("training+gates"):
        first = retrain_and_gate(ctx_for("training", boot_end), "bootstrap", (None, None), min_score)
    if not first["promoted"]:
        raise RuntimeError(f"the first model (version {first['version']}) was not promoted: {first['reasons']}")
    state.events.append({"date": boot_end.isoformat(), "kind": "promote", "version": first["version"],
                         "detail": f"bootstrap model ({first['chosen']})"})
    echo(f"  {boot_end}: v{first['version']} ({first['chosen']}) promoted; test {first['test']}")
    frozen = load_serving_model(spec, settings, version=first["version"], workdir=ctx.workdir)
    keys = list(spec.entity_key)

    day = boot_end
    started = time.monotonic()
    while day < end:
        nxt = day + timedelta(days=1)
        # end of day D: D's outcomes and D+1's schedule land; the data DAG runs
        if day > boot_end:  # the bootstrap delivered its last day's outcomes and the next schedule already
            deliver(day, ("labels",))
            deliver(nxt, ("features",))
        with state.timer("data"):
            data_stages(ctx_for("data", day))
        # scoring: the champion scores the open partitions (D+1), loaded once for the day
        sctx = ctx_for("scoring", day)
        with state.timer("scoring"):
            model = scoring.load_model(sctx)
            for part in scoring.partitions_to_score(sctx, model.version):
                scoring.score_partition(sctx, part, model.version, model=model)
        # the never-retrained model scores the same partition with today's history
        with state.timer("frozen model"):
            frozen.history = load_history(sctx.lake, spec, frozen.wrangle_params, sctx.workdir)
            curated_next = monitoring.read_curated(sctx, nxt.isoformat())
            if curated_next is not None:
                state.frozen_scores[nxt.isoformat()] = _score_frame(frozen, curated_next, keys)
        # monitoring as of D: decay of D (labels just arrived), drift and skew of D+1
        mctx = ctx_for("monitoring", day)
        with state.timer("monitoring"):
            manifest = monitoring.run_monitoring(mctx, as_of=day.isoformat(), run_type="scheduled")
            decision = monitoring.decide_retraining(mctx, mctx.run_id, day.isoformat(), manifest["champion"])
        record_realised(state, sctx, day.isoformat(), keys)
        for a in manifest["alerts"]:
            if a["check"] == "decay" and a["window"] == "rolling":
                state.events.append({"date": day.isoformat(), "kind": "alert", "version": a["model_version"],
                                     "detail": f"rolling {a['metric']} {a['value']} (limit {a['threshold']})"})
        if decision.action == "cooldown":
            echo(f"  {day}: alert, cooldown until {decision.cooldown_until}: {decision.reason_text()}")
        if decision.retrain:
            reason = decision.reason_text()
            echo(f"  {day}: retraining: {reason}")
            state.events.append({"date": day.isoformat(), "kind": "retrain", "version": None, "detail": reason})
            window = (decision.window_start, day.isoformat()) if decision.window_start else (None, None)
            with state.timer("training+gates"):
                outcome = retrain_and_gate(ctx_for("training", day), f"monitoring {mctx.run_id}: {reason}",
                                           window, min_score)
            kind = "promote" if outcome["promoted"] else "reject"
            state.events.append({"date": day.isoformat(), "kind": kind, "version": outcome["version"],
                                 "detail": "; ".join(outcome["reasons"])[:300] or outcome["chosen"]})
            verb = "promoted" if outcome["promoted"] else "rejected"
            echo(f"  {day}: v{outcome['version']} ({outcome['chosen']}) {verb}"
                 + (f": {'; '.join(outcome['reasons'])[:200]}" if outcome["reasons"] else ""))
            if outcome["promoted"]:  # the champion Asset: rescore the open partitions with the new version
                with state.timer("scoring"):
                    _rescore(ctx_for("rescoring", day))
        if (day - boot_end).days % 30 == 0:
            echo(f"  {day}: {len(state.pairs) // 2} labelled days, champion v{manifest['champion']}, "
                 f"{time.monotonic() - started:.0f}s")
        day = nxt
    summary = write_report(spec, settings, state, start, end, boot_end, out_dir, quick)
    summary["seconds"] = {k: round(v, 1) for k, v in state.seconds.items()}
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str, sort_keys=True))
    return summary


def record_realised(state: YearState, ctx: StageContext, day: str, keys: list[str]) -> None:
    """Keep (label, score) of day ``day`` for the loop's published predictions and the frozen model's."""
    curated = monitoring.read_curated(ctx, day)
    if curated is None or day not in state.frozen_scores:
        return
    state.pairs[("frozen", day)] = _pairs(ctx, state.frozen_scores[day], curated)
    published = monitoring.read_predictions(ctx, day)
    state.pairs[("loop", day)] = _pairs(ctx, monitoring.key_frame(published, keys)
                                        .assign(score=published["score"].to_numpy()), curated)


def _rescore(ctx: StageContext) -> int:
    model = scoring.load_model(ctx)
    parts = scoring.partitions_to_score(ctx, model.version)
    return sum(scoring.score_partition(ctx, p, model.version, model=model)["rows"] for p in parts)


# ---------------------------------------------------------------- the report
def realised_series(state: YearState, spec: DatasetSpec, threshold: float, window_days: int) -> pd.DataFrame:
    """Per-day and rolling realised metrics of the loop's champions and the frozen first model."""
    rows = []
    days = sorted({d for _, d in state.pairs})
    for model in ("loop", "frozen"):
        for i, day in enumerate(days):
            pair = state.pairs.get((model, day))
            if pair is None or pair.empty:
                continue
            m = realised.realised_metrics(pair["y"].to_numpy(), pair["score"].to_numpy(), threshold)
            rows += [{"partition_date": day, "model": model, "metric": k, "window": "partition", "value": v,
                      "rows": m["rows"]} for k, v in m.items() if k in REPORT_METRICS]
            lo = (date.fromisoformat(day) - timedelta(days=window_days)).isoformat()
            frames = [state.pairs[(model, x)] for x in days[: i + 1] if x > lo and (model, x) in state.pairs]
            joined = pd.concat(frames, ignore_index=True)
            r = realised.realised_metrics(joined["y"].to_numpy(), joined["score"].to_numpy(), threshold)
            rows += [{"partition_date": day, "model": model, "metric": k, "window": "rolling", "value": v,
                      "rows": r["rows"]} for k, v in r.items() if k in REPORT_METRICS]
    return pd.DataFrame(rows)


def drift_series(engine: Any, spec_name: str) -> pd.DataFrame:
    rows = warehouse.queries.feature_psi(engine, spec_name)
    return pd.DataFrame(rows, columns=["partition_date", "subject", "value"]).rename(
        columns={"subject": "feature", "value": "psi"})


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def comparison_table(state: YearState, threshold: float) -> pd.DataFrame:
    """Realised quality over the whole replay: the loop's champions, the frozen model, the difference."""
    out = {}
    for model in ("loop", "frozen"):
        frames = [p for (m, _), p in sorted(state.pairs.items()) if m == model and len(p)]
        if not frames:
            continue
        joined = pd.concat(frames, ignore_index=True)
        m = realised.realised_metrics(joined["y"].to_numpy(), joined["score"].to_numpy(), threshold)
        out[model] = {k: m[k] for k in ("rows", *REPORT_METRICS)}
    table = pd.DataFrame(out).T
    if {"loop", "frozen"} <= set(out):
        diff = {k: _difference(out["loop"][k], out["frozen"][k]) for k in REPORT_METRICS}
        table.loc["loop - frozen"] = {"rows": None, **diff}
    table.index.name = "model"
    return table


def data_time_delivery(state: YearState) -> dict[str, Any]:
    """The delivery metrics in replay (data) time: days, not the minutes the compressed replay took."""
    from flightdeck.monitoring import delivery

    def at(day: str) -> datetime:
        return datetime.fromisoformat(day).replace(tzinfo=UTC)

    promotions, alerts = [], []
    for e in state.events:
        if e["kind"] == "promote":
            promoted = at(e["date"])
            promotions.append(delivery.Promotion(version=str(e["version"]), promoted_at=promoted,
                                                 data_arrived_at=promoted, committed_at=None,
                                                 serving_at=promoted + timedelta(days=1)))
        elif e["kind"] == "alert":
            alerts.append(delivery.QualityAlert(at=at(e["date"]), check="decay", version=e["version"]))
    metrics = delivery.compute_delivery_metrics(promotions, [], alerts)
    return metrics.to_dict()


def write_report(spec: DatasetSpec, settings: Settings, state: YearState, start: date, end: date, boot_end: date,
                 out_dir: Path, quick: bool = True) -> dict[str, Any]:
    from flightdeck.apps import year_report
    from flightdeck.monitoring import delivery

    engine = warehouse.connect(settings.warehouse_url)
    threshold = spec.serving.threshold or spec.training.threshold
    window_days = parse_duration(spec.monitoring.decay.window).days
    series = realised_series(state, spec, threshold, window_days)
    events = pd.DataFrame(state.events, columns=["date", "kind", "version", "detail"])
    decay_png = year_report.render_decay_chart(series, events, out_dir / "decay.png")
    drift = drift_series(engine, spec.name)
    drift_png = year_report.render_drift_chart(drift, out_dir / "drift.png", psi_warn=spec.monitoring.drift.psi_warn,
                                               psi_alert=spec.monitoring.drift.psi_alert, events=events)
    comparison = comparison_table(state, threshold)
    wall = delivery.compute_delivery_metrics(*delivery.load_delivery_events(settings, spec.name))
    data_time = data_time_delivery(state)
    kinds = events["kind"].value_counts().to_dict() if len(events) else {}
    summary = {"spec": spec.name, "replay": f"{start}..{end}", "bootstrap": f"{start}..{boot_end}",
               "labelled days": len({d for _, d in state.pairs}), "retrainings": kinds.get("retrain", 0),
               "promotions": kinds.get("promote", 0), "rejections": kinds.get("reject", 0),
               "decay alerts": kinds.get("alert", 0), "decay metric": spec.monitoring.decay.metric,
               "rolling window": spec.monitoring.decay.window, "cooldown": spec.monitoring.cooldown,
               "training search": "quick" if quick else "spec"}
    delivery_rows = {f"{k} (replay days)": v for k, v in _flat(data_time).items()}
    delivery_rows.update({f"{k} (wall clock, compressed)": v for k, v in _flat(wall.to_dict()).items()})
    html = year_report.render_year_report(out_dir / "year_in_replay.html",
                                          title=f"FlightDeck: {spec.title} — the year in replay",
                                          decay_png=decay_png, drift_png=drift_png, summary=summary,
                                          comparison=comparison.reset_index(), delivery=delivery_rows, events=events)
    series.to_csv(out_dir / "realised.csv", index=False)
    events.to_csv(out_dir / "events.csv", index=False)
    return {**summary, "comparison": json.loads(comparison.to_json(orient="index")),
            "delivery_replay_days": data_time, "delivery_wall_clock": wall.to_dict(),
            "report": str(html), "decay_png": str(decay_png), "drift_png": str(drift_png)}


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    keep = ("deployments_per_week", "deployments_per_30d", "lead_time_data", "lead_time_code",
            "mean_time_to_restore", "change_failure_rate", "promotions")
    out = {}
    for k in keep:
        v = d.get(k)
        if isinstance(v, dict):
            v = v.get("text", v.get("seconds"))
        if isinstance(v, float):
            v = round(v, 4)
        out[k] = v
    return out

