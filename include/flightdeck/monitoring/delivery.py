"""Delivery metrics: the four key software-delivery (DORA) metrics, adapted to ML models.

As in the "MLOps primer" adaptation, a *deployment* is a promotion that moves the
``champion`` alias, a *change* is a model version (data + code) and a *failure* is a
rollback or a quality alert from monitoring:

* deployment frequency: promotions per week and per 30 days;
* lead time for changes: from data arrival (newest delivery in the version's dataset) and
  from the code commit to the promoted version serving (its first published scoring run);
* mean time to restore: from a quality alert to the promotion or rollback that ended it;
* change failure rate: share of promotions rolled back or alerted on while champion.

Two layers: :func:`compute_delivery_metrics` is pure (hand-built event timelines in tests),
:func:`load_delivery_events` reads the events from the warehouse, the MLflow registry and git.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from flightdeck.core import registry, warehouse
from flightdeck.core.settings import REPO_ROOT, Settings
from flightdeck.core.spec import spec_named
from flightdeck.core.values import jsonable, utc

# quality alerts: realised quality fell (decay), scores broke (stability), features diverged (skew).
# Drift is a leading indicator of change, not a failure: it notifies but is no incident.
ALERT_CHECKS = ("decay", "stability", "skew")
"""Monitoring checks whose ``alert`` status counts as a quality alert (the start of an incident)."""

DEFINITIONS = {
    "deployment frequency": "promotions that moved the champion alias, per week and per 30 days",
    "lead time (data)": "median: newest delivery in the version's dataset -> its first published scoring run",
    "lead time (code)": "median: the version's code commit -> its first published scoring run",
    "mean time to restore": "mean: first quality alert -> next promotion of another version, or a rollback",
    "change failure rate": "share of promotions rolled back, or alerted on while champion",
}


# ---------------------------------------------------------------- the events
@dataclass(frozen=True)
class Promotion:
    """A gate promoting ``version`` to champion, with the times its lead time is measured from and to."""

    version: str
    promoted_at: datetime
    data_arrived_at: datetime | None
    committed_at: datetime | None
    serving_at: datetime | None

    def __post_init__(self) -> None:
        for name in ("promoted_at", "data_arrived_at", "committed_at", "serving_at"):
            object.__setattr__(self, name, utc(getattr(self, name)))


@dataclass(frozen=True)
class Rollback:
    """``champion`` pointed back from ``version`` (the one rolled back) to ``restored``."""

    version: str
    at: datetime
    restored: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at))


@dataclass(frozen=True)
class QualityAlert:
    """A monitoring check in ``alert`` status, about ``version`` (``None``: about the data, not a version)."""

    at: datetime
    check: str
    version: str | None
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at))


Move = Promotion | Rollback


def _move_at(move: Move) -> datetime:
    return move.promoted_at if isinstance(move, Promotion) else move.at


def _alias_moves(promotions: Iterable[Promotion], rollbacks: Iterable[Rollback]) -> tuple[list[Move], int]:
    """The events that moved ``champion``, oldest first, and how many promotions did not move it.

    A promotion of the version that already is champion (a gate re-run confirming it) moves
    nothing; a promotion after a rollback away from the version moves it again.
    """
    events: list[tuple[datetime, int, Move]] = [(p.promoted_at, 0, p) for p in promotions]
    events += [(r.at, 1, r) for r in rollbacks]
    champion: str | None = None
    moves: list[Move] = []
    reconfirmed = 0
    for _, _, event in sorted(events, key=lambda e: (e[0], e[1])):
        if isinstance(event, Promotion):
            if event.version == champion:
                reconfirmed += 1
                continue
            champion = event.version
        else:
            champion = event.restored
        moves.append(event)
    return moves, reconfirmed


# ---------------------------------------------------------------- the metrics
def _human(value: timedelta) -> str:
    """``3d 4h``, ``5h 12m``, ``42m 7s`` or ``12s``."""
    total = round(value.total_seconds())
    sign, total = ("-" if total < 0 else ""), abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {seconds}s"
    return f"{sign}{seconds}s"


def _jsonable(value: Any) -> Any:
    """:func:`flightdeck.core.values.jsonable`, with durations as seconds and their readable text."""
    if isinstance(value, timedelta):
        return {"seconds": value.total_seconds(), "text": _human(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return jsonable(value)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"


@dataclass
class DeliveryMetrics:
    """The four delivery metrics over a period, with the events each rests on."""

    period_start: datetime | None
    period_end: datetime | None
    promotions: int
    deployments_per_week: float | None
    deployments_per_30d: float | None
    lead_time_data: timedelta | None
    lead_time_code: timedelta | None
    lead_times: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    mean_time_to_restore: timedelta | None
    change_failures: list[dict[str, Any]]
    change_failure_rate: float | None
    reconfirmations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: datetimes as ISO text, durations as ``{"seconds": ..., "text": ...}``."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def table(self) -> str:
        """Aligned text: each metric, its value, the events it rests on and its definition."""
        span = ((self.period_end - self.period_start).total_seconds() / 86400
                if self.period_start and self.period_end else None)
        lines = ["delivery metrics: no promotions, rollbacks or quality alerts yet" if span is None else
                 f"delivery metrics from {_when(self.period_start)} to {_when(self.period_end)} UTC ({span:.1f} days)"]

        def basis(key: str) -> str:
            measured = [t for t in self.lead_times if t[key] is not None]
            unserved = sum(1 for t in measured if not t["served"])
            return f"{len(measured)} promotion(s)" + (f", {unserved} never served (to promotion)" if unserved else "")

        restored = [i for i in self.incidents if not i["open"]]
        still_open = len(self.incidents) - len(restored)
        rows = [
            ("deployment frequency",
             "n/a" if self.deployments_per_week is None or self.deployments_per_30d is None else
             f"{self.deployments_per_week:.2f}/week, {self.deployments_per_30d:.2f}/30 days",
             f"{self.promotions} promotion(s)"
             + (f" (+{self.reconfirmations} re-confirming the champion)" if self.reconfirmations else "")),
            ("lead time (data)", "n/a" if self.lead_time_data is None else _human(self.lead_time_data),
             basis("lead_time_data")),
            ("lead time (code)", "n/a" if self.lead_time_code is None else _human(self.lead_time_code),
             basis("lead_time_code")),
            ("mean time to restore",
             "n/a" if self.mean_time_to_restore is None else _human(self.mean_time_to_restore),
             f"{len(restored)} restored incident(s)" + (f", {still_open} open" if still_open else "")),
            ("change failure rate", "n/a" if self.change_failure_rate is None else f"{self.change_failure_rate:.1%}",
             f"{len(self.change_failures)} of {self.promotions} promotion(s)"),
        ]
        header = ("metric", "value", "based on")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        lines.append(f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:<{widths[2]}}  definition")
        for metric, value, based_on in rows:
            lines.append(f"{metric:<{widths[0]}}  {value:<{widths[1]}}  {based_on:<{widths[2]}}  "
                         f"{DEFINITIONS[metric]}")
        if self.lead_times:
            lines += ["", "lead times:"]
            for t in self.lead_times:
                data = "-" if t["lead_time_data"] is None else _human(t["lead_time_data"])
                code = "-" if t["lead_time_code"] is None else _human(t["lead_time_code"])
                lines.append(f"  version {t['version']:<5} promoted {_when(t['promoted_at'])}  "
                             f"serving {_when(t['serving_at']) if t['served'] else 'never (measured to promotion)'}"
                             f"  data {data}  code {code}")
        if self.incidents:
            lines += ["", "incidents:"]
            for i in self.incidents:
                end = ("OPEN" if i["open"] else
                       f"restored {_when(i['restored_at'])} by {i['restored_by']} after {_human(i['time_to_restore'])}")
                lines.append(f"  {_when(i['started_at'])}  {len(i['alerts'])} alert(s) "
                             f"({', '.join(i['checks'])})  {end}")
        if self.change_failures:
            lines += ["", "change failures:"]
            lines += [f"  version {f['version']:<5} promoted {_when(f['promoted_at'])}: {f['why']}"
                      for f in self.change_failures]
        return "\n".join(lines)


def _median(values: Sequence[timedelta]) -> timedelta | None:
    """The median duration (the mean of the two middle ones for an even count); None for none."""
    if not values:
        return None
    ordered, mid = sorted(values), len(values) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _fix(moves: Sequence[Move], after: datetime, versions: set[str]) -> Move | None:
    """The first rollback, or promotion of a version not alerted on, strictly after ``after``."""
    for move in moves:
        if _move_at(move) > after and (isinstance(move, Rollback) or move.version not in versions):
            return move
    return None


def _restored_by(move: Move) -> str:
    if isinstance(move, Promotion):
        return f"promotion of version {move.version}"
    return f"rollback of version {move.version} to {move.restored or '-'}"


def _incidents(alerts: Sequence[QualityAlert], moves: Sequence[Move]) -> list[dict[str, Any]]:
    groups: list[list[QualityAlert]] = []
    for alert in sorted(alerts, key=lambda a: (a.at, a.check, a.version or "")):
        if groups:
            current = groups[-1]
            fix = _fix(moves, current[0].at, {a.version for a in current if a.version})
            if fix is None or alert.at < _move_at(fix):
                current.append(alert)
                continue
        groups.append([alert])
    incidents = []
    for group in groups:
        started = group[0].at
        fix = _fix(moves, started, {a.version for a in group if a.version})
        restored_at = None if fix is None else _move_at(fix)
        incidents.append({
            "started_at": started,
            "alerts": [{"at": a.at, "check": a.check, "version": a.version, "detail": a.detail} for a in group],
            "checks": sorted({a.check for a in group}),
            "versions": sorted({a.version for a in group if a.version}),
            "restored_at": restored_at,
            "restored_by": None if fix is None else _restored_by(fix),
            "time_to_restore": None if restored_at is None else restored_at - started,
            "open": fix is None,
        })
    return incidents


def _failures(moves: Sequence[Move], alerts: Sequence[QualityAlert]) -> dict[int, list[str]]:
    """Index in ``moves`` of each failed promotion -> why."""
    why: dict[int, list[str]] = {}
    tenure_end = {i: (_move_at(moves[i + 1]) if i + 1 < len(moves) else None) for i in range(len(moves))}
    for i, move in enumerate(moves):
        if isinstance(move, Promotion) and i + 1 < len(moves) and isinstance(moves[i + 1], Rollback):
            why.setdefault(i, []).append(f"rolled back at {_when(_move_at(moves[i + 1]))}")
    for alert in sorted(alerts, key=lambda a: a.at):
        owner = None
        for i, move in enumerate(moves):
            if not isinstance(move, Promotion) or move.promoted_at > alert.at:
                continue
            if alert.version is not None and move.version == alert.version:
                owner = i  # the latest promotion of the version named, at or before the alert
            elif alert.version is None and ((end := tenure_end[i]) is None or alert.at < end):
                owner = i  # the promotion whose tenure as champion the alert falls in
        if owner is not None:
            why.setdefault(owner, []).append(f"{alert.check} alert at {_when(alert.at)}"
                                             + (f" ({alert.detail})" if alert.detail else ""))
    return why


def compute_delivery_metrics(promotions: Sequence[Promotion], rollbacks: Sequence[Rollback],
                             alerts: Sequence[QualityAlert], start: datetime | None = None,
                             end: datetime | None = None) -> DeliveryMetrics:
    """The four delivery metrics from promotion, rollback and quality-alert events.

    Rules:
        * Deployments: every promotion that moved ``champion`` counts, so a version promoted
          again after a rollback counts twice; a promotion of the version that already is
          champion (a gate re-run confirming it) moves nothing and is only counted as a
          re-confirmation; below, "promotion" means a deployment. A version's tenure as champion
          runs from its promotion to the next promotion or rollback.
        * Period: ``start``..``end``, by default the first..last event (promotion, rollback
          or alert). Promotions and incidents count when they *start* in the period; what
          happened to them (serving, rollback, alerts, restore) is taken from all the events
          given. Frequencies divide by the period's length, at least one day.
        * Lead time: from ``data_arrived_at`` and from ``committed_at`` to ``serving_at``; a
          promotion that never served is measured to its promotion time and flagged
          (``served: False``). Medians over the promotions that have the start time.
        * Incidents: alerts, oldest first, are grouped. An alert opens an incident when none is
          open; the incident closes at the first event strictly after its first alert that is
          a rollback or a promotion of a version no alert of the incident named (any promotion
          when the alerts name no version). Alerts before that close belong to the incident;
          an alert at or after it opens the next one. An incident never closed is open: it has
          no restore time and is left out of the mean time to restore.
        * Change failure: a promotion rolled back while champion (the event ending its tenure
          is a rollback), or one an alert is attributed to. An alert naming a version goes to
          the latest promotion of that version at or before it (labels arrive late, so decay
          can be seen after the version was replaced); an alert naming no version goes to the
          promotion whose tenure it falls in (none after a rollback restored an older version).
          The rate is ``None`` when the period has no promotions.
    """
    moves, _ = _alias_moves(promotions, rollbacks)
    start, end = utc(start), utc(end)
    times = [p.promoted_at for p in promotions] + [r.at for r in rollbacks] + [a.at for a in alerts]
    if start is not None and end is not None and end < start:
        raise ValueError(f"period end {end:%Y-%m-%d %H:%M} is before its start {start:%Y-%m-%d %H:%M}")
    if times:
        start = start or (min(min(times), end) if end is not None else min(times))
        end = end or max(max(times), start)
    elif start is not None or end is not None:
        start, end = start or end, end or start

    def in_period(at: datetime) -> bool:
        return start is not None and end is not None and start <= at <= end

    deployed = [(i, m) for i, m in enumerate(moves) if isinstance(m, Promotion) and in_period(m.promoted_at)]
    reconfirmations = len([p for p in promotions if in_period(p.promoted_at)]) - len(deployed)
    weeks = per_30d = None
    if start is not None and end is not None:
        days = max((end - start).total_seconds() / 86400, 1.0)
        weeks, per_30d = len(deployed) / days * 7, len(deployed) / days * 30

    lead_times: list[dict[str, Any]] = []
    for _, p in deployed:
        to = p.serving_at or p.promoted_at
        lead_times.append({
            "version": p.version, "promoted_at": p.promoted_at, "data_arrived_at": p.data_arrived_at,
            "committed_at": p.committed_at, "serving_at": p.serving_at, "served": p.serving_at is not None,
            "measured_to": to,
            "lead_time_data": None if p.data_arrived_at is None else to - p.data_arrived_at,
            "lead_time_code": None if p.committed_at is None else to - p.committed_at,
        })

    incidents = [i for i in _incidents(alerts, moves) if in_period(i["started_at"])]
    restore = [i["time_to_restore"] for i in incidents if i["time_to_restore"] is not None]

    why = _failures(moves, alerts)
    failures = [{"version": p.version, "promoted_at": p.promoted_at, "why": "; ".join(why[i])}
                for i, p in deployed if i in why]
    return DeliveryMetrics(
        period_start=start, period_end=end, promotions=len(deployed),
        deployments_per_week=weeks, deployments_per_30d=per_30d,
        lead_time_data=_median([t["lead_time_data"] for t in lead_times if t["lead_time_data"] is not None]),
        lead_time_code=_median([t["lead_time_code"] for t in lead_times if t["lead_time_code"] is not None]),
        lead_times=lead_times, incidents=incidents,
        mean_time_to_restore=sum(restore, timedelta()) / len(restore) if restore else None,
        change_failures=failures, change_failure_rate=len(failures) / len(deployed) if deployed else None,
        reconfirmations=reconfirmations)


# ---------------------------------------------------------------- the loader
def _serving_times(engine: Engine, spec_name: str, promotions: Sequence[Promotion],
                   moves: Sequence[Move]) -> list[datetime | None]:
    """Per promotion: the first published scoring run by its version, before that version is deployed again."""
    versions = sorted({p.version for p in promotions})
    if not versions:
        return []
    finished: dict[str, list[datetime]] = {}
    for run in warehouse.queries.published_run_times(engine, spec_name, versions):
        finished.setdefault(run["model_version"], []).append(utc(run["finished_at"]))
    out: list[datetime | None] = []
    for p in promotions:
        later = [m.promoted_at for m in moves if isinstance(m, Promotion) and m.version == p.version
                 and m.promoted_at > p.promoted_at]
        until = min(later) if later else None
        out.append(next((t for t in finished.get(p.version, [])
                         if t >= p.promoted_at and (until is None or t < until)), None))
    return out


def _quality_alerts(engine: Engine, spec_name: str) -> list[QualityAlert]:
    """One alert per (check, partition, model version): the earliest measurement in ``alert`` status."""
    first: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    counts: dict[tuple[str, str, str | None], int] = {}
    for row in warehouse.queries.alert_figures(engine, spec_name, ALERT_CHECKS):
        key = (row["check_name"], row["partition_date"], row["model_version"] or None)
        first.setdefault(key, row)
        counts[key] = counts.get(key, 0) + 1
    alerts = []
    for key, row in first.items():
        figure = f"{row['metric']}" + (f" of {row['subject']}" if row["subject"] else "")
        if row["value"] is not None:
            figure += f" = {row['value']:.4g}"
            if row["threshold"] is not None:
                figure += f" (limit {row['threshold']:.4g})"
        more = f", {counts[key] - 1} more figure(s)" if counts[key] > 1 else ""
        alerts.append(QualityAlert(at=row["measured_at"], check=key[0], version=key[2],
                                   detail=f"{figure}, partition {key[1]}{more}"))
    return sorted(alerts, key=lambda a: a.at)


def _data_arrival(engine: Engine, spec_name: str, snapshot: str | None, registered_at: datetime | None
                  ) -> datetime | None:
    """The newest curated delivery received by the time the dataset version was published and the model registered."""
    if not snapshot:
        return None
    created = utc(warehouse.queries.dataset_created_at(engine, spec_name, snapshot))
    if created is None:
        return None
    bound = min(created, registered_at) if registered_at is not None else created
    return utc(warehouse.queries.newest_curated_delivery(engine, spec_name, bound))


_COMMIT = re.compile(r"[^+]*\+([0-9a-f]{7,40})(?:\.dirty)?")


def commit_time(code_version: str | None) -> datetime | None:
    """Commit time of the commit in a ``flightdeck.code_version`` tag (``0.1.0+<sha>[.dirty]``), if git knows it."""
    match = _COMMIT.fullmatch(code_version or "")
    if not match:
        return None
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "show", "-s", "--format=%cI", f"{match[1]}^{{commit}}"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    if out.returncode != 0 or not text:
        return None
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def load_delivery_events(settings: Settings, spec_name: str
                         ) -> tuple[list[Promotion], list[Rollback], list[QualityAlert]]:
    """Promotions, rollbacks and quality alerts of a spec from the warehouse, the registry and git.

    Promotions and rollbacks come from ``fd_promotions`` (a rollback row names the restored
    version in ``model_version`` and the rolled-back one in ``previous_champion``); serving
    times from published ``fd_scoring_runs``; quality alerts from ``fd_monitoring_metrics``
    (status ``alert`` of the checks in :data:`ALERT_CHECKS`). Each promoted version's
    ``flightdeck.data_snapshot`` tag gives its dataset version: data arrival is the newest
    curated delivery received by the time the dataset version was published and the model
    version registered. Its ``flightdeck.code_version`` tag gives the commit, dated by git.
    """
    spec = spec_named(settings.specs_dir, spec_name)
    name = spec.registered_model_name
    engine = warehouse.connect(settings.warehouse_url)
    rows = warehouse.select_rows(engine, warehouse.promotions, {"spec_name": spec.name, "model_name": name},
                                 order_by=("decided_at", "run_id"))
    rollbacks = [Rollback(version=r["previous_champion"] or "", at=r["decided_at"], restored=r["model_version"])
                 for r in rows if r["action"] == "rollback"]
    promoted = [r for r in rows if r["action"] == "promote"]
    provenance: dict[str, tuple[datetime | None, datetime | None]] = {}
    if promoted:
        from mlflow.exceptions import MlflowException

        client = registry.mlflow_client(settings.mlflow_tracking_uri)
        for version in sorted({r["model_version"] for r in promoted}):
            try:
                mv = client.get_model_version(name, version)
            except MlflowException as exc:  # a deleted version has no provenance; a broken registry fails
                if not registry.is_not_found(exc):
                    raise
                provenance[version] = (None, None)
                continue
            tags = dict(mv.tags or {})
            registered = (datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
                          if mv.creation_timestamp else None)
            provenance[version] = (_data_arrival(engine, spec.name, tags.get("flightdeck.data_snapshot"), registered),
                                   commit_time(tags.get("flightdeck.code_version")))
    promotions = [Promotion(version=r["model_version"], promoted_at=r["decided_at"],
                            data_arrived_at=provenance[r["model_version"]][0],
                            committed_at=provenance[r["model_version"]][1], serving_at=None) for r in promoted]
    moves, _ = _alias_moves(promotions, rollbacks)
    serving = _serving_times(engine, spec.name, promotions, moves)
    promotions = [replace(p, serving_at=s) for p, s in zip(promotions, serving, strict=True)]
    return promotions, rollbacks, _quality_alerts(engine, spec.name)
