"""Delivery metrics: hand-built event timelines for the pure layer, a real warehouse and registry for the loader."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flightdeck.core import warehouse
from flightdeck.core.settings import REPO_ROOT, Settings
from flightdeck.monitoring import delivery
from flightdeck.monitoring.delivery import Promotion, QualityAlert, Rollback, compute_delivery_metrics
from flightdeck.serving import predictions

T0 = datetime(2024, 1, 1, tzinfo=UTC)
METRICS = ("deployment frequency", "lead time (data)", "lead time (code)", "mean time to restore",
           "change failure rate")


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def promo(version: str, day: float, *, data: float | None = None, code: float | None = None,
          serve: float | None = None) -> Promotion:
    """A promotion on ``day``; data arrival, commit and serving as day offsets (``None``: unknown / never)."""
    return Promotion(version, at(day), None if data is None else at(data), None if code is None else at(code),
                     None if serve is None else at(serve))


def alert(day: float, version: str | None = None, check: str = "decay") -> QualityAlert:
    return QualityAlert(at(day), check, version)


# ---------------------------------------------------------------- deployment frequency
@pytest.mark.parametrize(("promotions", "rollbacks", "start", "end", "count", "per_week", "reconfirmed"), [
    pytest.param([promo("1", 0), promo("2", 7), promo("3", 14)], [], None, None, 3, 1.5, 0, id="first-to-last"),
    pytest.param([promo("1", 0), promo("2", 7), promo("3", 14)], [], at(0), at(28), 3, 0.75, 0, id="explicit"),
    pytest.param([promo("1", 0), promo("2", 7), promo("3", 14)], [], at(7), None, 2, 2.0, 0, id="since"),
    pytest.param([promo("1", 0)], [], None, None, 1, 7.0, 0, id="at-least-a-day"),
    pytest.param([promo("1", 0), promo("1", 3), promo("2", 7)], [], None, None, 2, 2.0, 1, id="reconfirmation"),
    pytest.param([promo("1", 0), promo("2", 2), promo("2", 7)], [Rollback("2", at(3), "1")], None, None,
                 3, 3.0, 0, id="re-promotion-after-rollback"),
])
def test_deployment_frequency(promotions, rollbacks, start, end, count, per_week, reconfirmed):
    m = compute_delivery_metrics(promotions, rollbacks, [], start, end)
    assert m.promotions == count
    assert m.reconfirmations == reconfirmed
    assert m.deployments_per_week == pytest.approx(per_week)
    assert m.deployments_per_30d == pytest.approx(per_week / 7 * 30)


# ---------------------------------------------------------------- lead time
@pytest.mark.parametrize(("promotions", "data", "code", "served"), [
    pytest.param([promo("1", 10, data=8, code=5, serve=11)], timedelta(days=3), timedelta(days=6), [True],
                 id="one"),
    pytest.param([promo("1", 10, data=9, code=2, serve=10.5), promo("2", 20, data=18, code=15, serve=21),
                  promo("3", 30, data=25, code=28, serve=31)],
                 timedelta(days=3), timedelta(days=6), [True] * 3, id="median-of-three"),
    pytest.param([promo("1", 10, data=9, serve=11), promo("2", 20, data=18, serve=20.5)],
                 timedelta(days=2.25), None, [True, True], id="median-of-two-no-commits"),
    pytest.param([promo("1", 10, data=8, code=4)], timedelta(days=2), timedelta(days=6), [False],
                 id="never-served-measured-to-promotion"),
    pytest.param([promo("1", 10)], None, None, [False], id="nothing-known"),
])
def test_lead_time_medians(promotions, data, code, served):
    m = compute_delivery_metrics(promotions, [], [])
    assert m.lead_time_data == data
    assert m.lead_time_code == code
    assert [t["served"] for t in m.lead_times] == served
    assert [t["version"] for t in m.lead_times] == [p.version for p in promotions]


# ---------------------------------------------------------------- incidents and time to restore
@pytest.mark.parametrize(("promotions", "rollbacks", "alerts", "incidents", "mttr"), [
    pytest.param([promo("1", 0)], [], [alert(1, "1"), alert(1.5, "1", "drift")],
                 [(at(1), 2, None, None)], None, id="never-fixed-is-open"),
    pytest.param([promo("1", 0), promo("2", 2)], [], [alert(1, "1")],
                 [(at(1), 1, at(2), "promotion of version 2")], timedelta(days=1), id="fixed-by-promotion"),
    pytest.param([promo("1", 0), promo("2", 1)], [Rollback("2", at(1, 5), "1")], [alert(1, "2", "skew")],
                 [(at(1), 1, at(1, 5), "rollback of version 2 to 1")], timedelta(hours=5), id="fixed-by-rollback"),
    pytest.param([promo("1", 0), promo("1", 2), promo("2", 3)], [], [alert(1, "1")],
                 [(at(1), 1, at(3), "promotion of version 2")], timedelta(days=2),
                 id="re-confirming-the-alerted-version-fixes-nothing"),
    pytest.param([promo("1", 0), promo("2", 2)], [], [alert(1, None, "drift")],
                 [(at(1), 1, at(2), "promotion of version 2")], timedelta(days=1), id="data-alert-any-promotion"),
    pytest.param([promo("1", 0), promo("2", 5)], [],
                 [alert(1, "1"), alert(2, "1", "drift"), alert(4, "1", "stability"), alert(6, "2")],
                 [(at(1), 3, at(5), "promotion of version 2"), (at(6), 1, None, None)], timedelta(days=4),
                 id="alerts-while-open-join-the-incident"),
    pytest.param([promo("1", 0), promo("2", 2), promo("3", 10)], [], [alert(1, "1"), alert(4, "2")],
                 [(at(1), 1, at(2), "promotion of version 2"), (at(4), 1, at(10), "promotion of version 3")],
                 timedelta(days=3.5), id="mean-of-two"),
    pytest.param([promo("1", 0), promo("2", 2)], [], [alert(1, "1"), alert(3, "2")],
                 [(at(1), 1, at(2), "promotion of version 2"), (at(3), 1, None, None)], timedelta(days=1),
                 id="open-incident-left-out-of-the-mean"),
])
def test_incidents_and_time_to_restore(promotions, rollbacks, alerts, incidents, mttr):
    m = compute_delivery_metrics(promotions, rollbacks, alerts)
    got = [(i["started_at"], len(i["alerts"]), i["restored_at"], i["restored_by"]) for i in m.incidents]
    assert got == incidents
    assert [i["open"] for i in m.incidents] == [r is None for _, _, r, _ in incidents]
    assert [i["time_to_restore"] for i in m.incidents] == [None if r is None else r - s
                                                          for s, _, r, _ in incidents]
    assert m.mean_time_to_restore == mttr


# ---------------------------------------------------------------- change failure rate
@pytest.mark.parametrize(("promotions", "rollbacks", "alerts", "failed", "rate"), [
    pytest.param([promo("1", 0), promo("2", 1)], [], [], [], 0.0, id="clean"),
    pytest.param([promo("1", 0), promo("2", 1)], [Rollback("2", at(2), "1")], [], ["2"], 0.5, id="rolled-back"),
    pytest.param([promo("1", 0), promo("2", 2)], [], [alert(1, None, "drift")], ["1"], 0.5,
                 id="data-alert-during-tenure"),
    pytest.param([promo("1", 0), promo("2", 2)], [], [alert(3, None, "drift")], ["2"], 0.5,
                 id="data-alert-goes-to-the-champion"),
    pytest.param([promo("1", 0), promo("2", 2)], [], [alert(5, "1")], ["1"], 0.5,
                 id="late-decay-alert-names-the-replaced-version"),
    pytest.param([promo("1", 0), promo("2", 1)], [Rollback("2", at(2), "1")], [alert(3, None, "drift")], ["2"], 0.5,
                 id="data-alert-after-rollback-belongs-to-no-promotion"),
    pytest.param([promo("1", 0), promo("2", 1), promo("2", 5)], [Rollback("2", at(2), "1")], [alert(6, "2")],
                 ["2", "2"], 2 / 3, id="each-deployment-of-a-re-promoted-version-counts"),
    pytest.param([promo("1", 1)], [], [alert(0, "1", "skew")], [], 0.0, id="alert-before-promotion"),
])
def test_change_failure_rate(promotions, rollbacks, alerts, failed, rate):
    m = compute_delivery_metrics(promotions, rollbacks, alerts)
    assert [f["version"] for f in m.change_failures] == failed
    assert m.change_failure_rate == pytest.approx(rate)
    assert all(f["why"] for f in m.change_failures)


def test_no_promotions_gives_no_rate_and_empty_events_no_period():
    m = compute_delivery_metrics([], [], [alert(1, None, "drift"), alert(3, None, "drift")])
    assert (m.promotions, m.change_failure_rate, m.deployments_per_week) == (0, None, 0.0)
    assert (m.period_start, m.period_end) == (at(1), at(3))
    assert m.lead_time_data is None and m.mean_time_to_restore is None
    assert [i["open"] for i in m.incidents] == [True]
    empty = compute_delivery_metrics([], [], [])
    assert (empty.period_start, empty.deployments_per_week, empty.change_failure_rate) == (None, None, None)
    for metric in METRICS:
        assert metric in empty.table()


def test_naive_times_are_utc_and_outputs_render():
    naive = Promotion("1", datetime(2024, 1, 1), datetime(2023, 12, 31), None, datetime(2024, 1, 1, 6))
    assert naive.promoted_at == at(0) and naive.serving_at == at(0, 6)
    m = compute_delivery_metrics([naive, promo("2", 2, data=1.5)], [Rollback("2", at(3), "1")], [alert(2.5, "2")])
    doc = json.loads(json.dumps(m.to_dict()))
    assert doc["lead_time_data"] == {"seconds": 21 * 3600.0, "text": "21h 0m"}
    assert doc["mean_time_to_restore"]["seconds"] == 43200
    assert doc["change_failure_rate"] == 0.5
    table = m.table()
    for metric in METRICS:
        assert metric in table
    assert "50.0%" in table and "1 of 2 promotion(s)" in table and "never (measured to promotion)" in table
    with pytest.raises(ValueError, match="before its start"):
        compute_delivery_metrics([], [], [], at(2), at(1))


# ---------------------------------------------------------------- the loader, on a real warehouse and registry
def _git_commit() -> tuple[str, datetime] | None:
    out = subprocess.run(["git", "-C", str(REPO_ROOT), "show", "-s", "--format=%H %cI", "HEAD"],
                         capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    sha, when = out.stdout.split()
    return sha, datetime.fromisoformat(when).astimezone(UTC)


def _batch(batch_id: str, received: datetime, status: str) -> dict[str, Any]:
    return {"spec_name": "flights", "batch_id": batch_id, "source": "schedule", "file_name": f"{batch_id}.csv",
            "source_uri": f"/landing/{batch_id}.csv", "raw_uri": f"/raw/{batch_id}.csv", "bytes": 10,
            "spec_version": "x", "received_at": received, "status": status}


def _decision(version: str, action: str, run_id: str, when: datetime, previous: str | None = None,
              spec_name: str = "flights") -> dict[str, Any]:
    return {"model_name": f"flightdeck-{spec_name}", "model_version": version, "run_id": run_id, "action": action,
            "spec_name": spec_name, "decided_by": "test", "previous_champion": previous, "decided_at": when}


def _run(run_id: str, version: str, status: str, finished: datetime) -> dict[str, Any]:
    return {"spec_name": "flights", "run_id": run_id, "partition_date": f"{finished:%Y-%m-%d}",
            "predictions_table": "flights_predictions", "model_name": "flightdeck-flights", "model_version": version,
            "status": status, "started_at": finished - timedelta(minutes=5), "finished_at": finished}


def _measure(check: str, metric: str, version: str | None, status: str, when: datetime,
             partition: str = "2024-01-07") -> dict[str, Any]:
    return {"spec_name": "flights", "check_name": check, "metric": metric, "subject": "", "partition_date": partition,
            "window": "partition", "value": 0.61, "threshold": 0.65, "status": status, "model_version": version,
            "run_id": f"monitor-{when:%Y%m%d%H}", "measured_at": when}


@pytest.fixture
def populated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A SQLite warehouse and an MLflow registry with three promoted versions, a rollback and alerts."""
    import mlflow

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    env = {"FLIGHTDECK_HOME": str(tmp_path / "fd"),
           "FLIGHTDECK_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
           "FLIGHTDECK_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env(env)
    commit = _git_commit()
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    name = "flightdeck-flights"
    client.create_registered_model(name)
    source = (tmp_path / "model").as_uri()
    code_1 = f"0.1.0+{commit[0][:12]}.dirty" if commit else "0.1.0+unknown"
    for tags in ({"flightdeck.data_snapshot": "ds1", "flightdeck.code_version": code_1},
                 {"flightdeck.data_snapshot": "ds2", "flightdeck.code_version": "0.1.0+unknown"},
                 {"flightdeck.code_version": "0.1.0+deadbeefcafe"}):
        client.create_model_version(name, source=source, tags=tags)

    engine = warehouse.connect(settings.warehouse_url)
    predictions.runs_metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(warehouse.catalog.insert(), [
            _batch("b1", at(0, 6), "curated"), _batch("b2", at(1, 6), "curated"),
            _batch("b3", at(2, 6), "rejected"),  # never in a dataset
            _batch("b4", at(4, 6), "curated")])
        conn.execute(warehouse.dataset_versions.insert(), [
            {"spec_name": "flights", "version_id": "ds1", "created_at": at(2, 12), "manifest_uri": "m1"},
            {"spec_name": "flights", "version_id": "ds2", "created_at": at(5), "manifest_uri": "m2"}])
        conn.execute(warehouse.promotions.insert(), [
            _decision("1", "promote", "gate-1", at(3)),
            _decision("3", "reject", "gate-2", at(5, 12), previous="1"),
            _decision("2", "promote", "gate-3", at(6), previous="1"),
            _decision("1", "rollback", "rollback-1", at(7), previous="2"),  # restored 1, rolled back 2
            _decision("3", "promote", "gate-4", at(9), previous="1"),
            _decision("7", "promote", "gate-9", at(8), spec_name="weather")])
        conn.execute(predictions.scoring_runs.insert(), [
            _run("s0", "1", "failed", at(3, 1)), _run("s1", "1", "published", at(3, 3)),
            _run("s2", "1", "published", at(4, 3)), _run("s3", "2", "published", at(6, 2)),
            _run("s4", "1", "published", at(7, 2))])
        conn.execute(warehouse.monitoring_metrics.insert(), [
            _measure("decay", "roc_auc", "2", "alert", at(6, 12)),
            {**_measure("decay", "log_loss", "2", "alert", at(6, 13))},  # same (check, partition, version)
            _measure("stability", "nan_scores", None, "alert", at(9, 6), partition="2024-01-10"),
            _measure("drift", "psi", None, "alert", at(9, 5), partition="2024-01-10"),  # drift: no incident
            _measure("drift", "ks", None, "warn", at(8, 6), partition="2024-01-09"),
            _measure("invariants", "violations", None, "alert", at(8, 7), partition="2024-01-09"),
            _measure("staleness", "hours", None, "alert", at(8, 8), partition="2024-01-09")])
    return {"settings": settings, "committed_at": commit[1] if commit else None}


def test_loader_reads_warehouse_registry_and_git(populated):
    promotions, rollbacks, alerts = delivery.load_delivery_events(populated["settings"], "flights")
    assert promotions == [
        Promotion("1", at(3), data_arrived_at=at(1, 6), committed_at=populated["committed_at"], serving_at=at(3, 3)),
        Promotion("2", at(6), data_arrived_at=at(4, 6), committed_at=None, serving_at=at(6, 2)),
        Promotion("3", at(9), data_arrived_at=None, committed_at=None, serving_at=None),
    ]
    assert all(p.promoted_at.tzinfo is UTC for p in promotions)
    assert rollbacks == [Rollback(version="2", at=at(7), restored="1")]
    assert [(a.at, a.check, a.version) for a in alerts] == [(at(6, 12), "decay", "2"), (at(9, 6), "stability", None)]
    assert "roc_auc" in alerts[0].detail and "1 more" in alerts[0].detail

    m = compute_delivery_metrics(promotions, rollbacks, alerts)
    assert (m.promotions, m.period_start, m.period_end) == (3, at(3), at(9, 6))
    assert [f["version"] for f in m.change_failures] == ["2", "3"]
    assert m.change_failure_rate == pytest.approx(2 / 3)
    assert [(i["restored_by"], i["open"]) for i in m.incidents] == [("rollback of version 2 to 1", False),
                                                                     (None, True)]
    assert m.mean_time_to_restore == timedelta(hours=12)
    assert m.lead_time_data == timedelta(days=1, hours=20, minutes=30)  # median of 1d 21h and 1d 20h
    assert m.lead_times[2]["served"] is False


def test_loader_tolerates_empty_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    settings = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path / "fd"),
                                  "FLIGHTDECK_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
                                  "FLIGHTDECK_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert delivery.load_delivery_events(settings, "flights") == ([], [], [])


def test_commit_time_only_for_commits_git_knows():
    commit = _git_commit()
    if commit is None:
        pytest.skip("not a git checkout")
    assert delivery.commit_time(f"0.1.0+{commit[0][:12]}") == commit[1]
    assert delivery.commit_time(f"0.1.0+{commit[0][:12]}.dirty") == commit[1]
    for code in ("0.1.0+unknown", "0.1.0+deadbeefcafe", "", None, "0.1.0+--help"):
        assert delivery.commit_time(code) is None


def test_cli_prints_the_four_metrics(populated, capsys):
    from flightdeck.apps.cli import main

    assert main(["delivery-metrics", "flights"]) == 0
    out = capsys.readouterr().out
    for metric in METRICS:
        assert metric in out
    assert "66.7%" in out and "2 of 3 promotion(s)" in out
    assert main(["delivery-metrics", "flights", "--since", "2024-01-06", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["promotions"] == 2 and doc["period_start"] == "2024-01-06T00:00:00+00:00"
    assert doc["mean_time_to_restore"] == {"seconds": 43200.0, "text": "12h 0m"}
