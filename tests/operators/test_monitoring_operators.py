"""Monitoring operators through ``execute`` with a minimal context: when the retrain Asset
fires and what its extra carries, and why a training run trains (the retrain request, new
data, the schedule, a person)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

RUN = "scheduled__2013-03-01T06:00:00+00:00"


class _Ti:
    def __init__(self, value):
        self.value = value

    def xcom_pull(self, task_ids):
        return self.value


class _OutletEvents(dict):
    """Like Airflow's outlet event accessors: an accessor per asset, created on first use."""

    def __missing__(self, asset):
        self[asset] = SimpleNamespace(extra={})
        return self[asset]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private FlightDeck home (warehouse and registry) for the operators' ``Settings.from_env()``."""
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.delenv("FLIGHTDECK_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("FLIGHTDECK_MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "fd"


def _ctx(run_id: str = RUN, **monitoring):
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.data.runners import StageContext

    settings = Settings.from_env()
    spec = load_spec(settings.specs_dir / "flights.yaml")
    if monitoring:
        spec = spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update=monitoring)})
    return StageContext(spec, settings, run_id=run_id)


def _decay_alert(run_id: str, as_of: str) -> None:
    """What a monitoring run stores when the rolling ROC AUC fell below the version's promise."""
    from flightdeck.core import warehouse
    from flightdeck.monitoring.monitor import Figure

    ctx = _ctx(run_id)
    row = Figure("decay", "roc_auc", 0.61, "alert", 0.67, partition=as_of, window="rolling", rows=4000,
                 model_version="3").row(ctx.name, ctx.spec.registered_model_name, run_id,
                                        datetime(2013, 3, 1, tzinfo=UTC))
    with ctx.engine.begin() as conn:
        conn.execute(warehouse.monitoring_metrics.insert(), [row])


def _request(run_id: str, as_of: str, champion: str | None = "3"):
    """Run RequestRetrainingOperator once; returns (result or exception, the outlet events)."""
    from flightdeck_airflow.assets import retrain_asset
    from flightdeck_airflow.monitoring import RequestRetrainingOperator

    op = RequestRetrainingOperator(task_id="request_retraining", spec_name="flights",
                                   outlets=[retrain_asset("flights")])
    events = _OutletEvents()
    context = {"run_id": run_id, "ti": _Ti({"as_of": as_of, "champion": champion}), "outlet_events": events,
               "dag_run": SimpleNamespace(run_type="scheduled", run_id=run_id)}
    return op.execute(context), events


# ---------------------------------------------------------------- RequestRetrainingOperator
@pytest.mark.parametrize(("alert", "champion"), [(False, "3"), (True, None)])
def test_request_skips_without_a_reason_and_fires_no_event(home, alert, champion):
    """No retrain-worthy alert (or no champion to replace): skipped, so the Asset does not fire."""
    from airflow.sdk.exceptions import AirflowSkipException

    if alert:
        _decay_alert(RUN, "2013-03-01")
    with pytest.raises(AirflowSkipException, match="no alert calls for retraining"):
        _request(RUN, "2013-03-01", champion)


def test_request_fires_the_retrain_asset_with_the_reasons(home):
    """A decay alert: the outlet event's extra carries the reason, the as-of date and the run."""
    from flightdeck.core import warehouse
    from flightdeck_airflow.assets import retrain_asset

    _decay_alert(RUN, "2013-03-01")
    decision, events = _request(RUN, "2013-03-01")
    assert decision["action"] == "retrain" and decision["cooldown_until"] == "2013-03-15"
    extra = events[retrain_asset("flights")].extra
    assert extra == {"reason": "decay roc_auc 0.61 vs 0.67 (2013-03-01, rolling)", "as_of": "2013-03-01",
                     "monitoring_run_id": RUN, "window_start": None, "model_version": "3"}
    assert list(events) == [retrain_asset("flights")]
    stored = warehouse.select_rows(_ctx().engine, warehouse.retraining, {"spec_name": "flights"})
    assert [(r["run_id"], r["action"]) for r in stored] == [(RUN, "retrain")]


def test_request_skips_naming_the_cooldown_date(home):
    """A second alert inside the P14D cooldown: skipped with the date the cooldown ends, recorded."""
    from airflow.sdk.exceptions import AirflowSkipException
    from flightdeck.core import warehouse

    first, later = "scheduled__2013-03-01", "scheduled__2013-03-05"
    _decay_alert(first, "2013-03-01")
    _decay_alert(later, "2013-03-05")
    assert _request(first, "2013-03-01")[0]["action"] == "retrain"
    with pytest.raises(AirflowSkipException, match=r"cooldown until 2013-03-15: decay roc_auc 0.61 vs 0.67"):
        _request(later, "2013-03-05")
    stored = {r["run_id"]: r["action"] for r in
              warehouse.select_rows(_ctx().engine, warehouse.retraining, {"spec_name": "flights"})}
    assert stored == {first: "retrain", later: "cooldown"}


# ---------------------------------------------------------------- TrainModelOperator.training_trigger
def _event(extra):
    return SimpleNamespace(extra=extra)


def _trigger_context(kind: str, events: dict | None = None) -> dict:
    return {"dag_run": SimpleNamespace(run_type=kind, run_id=f"{kind}__2013-03-02"),
            "triggering_asset_events": events or {}}


def _assets():
    from flightdeck_airflow.assets import retrain_asset, training_data_asset

    return retrain_asset("flights"), training_data_asset("flights")


EXTRA = {"reason": "decay roc_auc 0.61 vs 0.67 (2013-03-01, rolling)", "as_of": "2013-03-01",
         "monitoring_run_id": "scheduled__2013-03-01", "window_start": None, "model_version": "3"}
MONITORING_REASON = "monitoring scheduled__2013-03-01 (as of 2013-03-01): decay roc_auc 0.61 vs 0.67 " \
                    "(2013-03-01, rolling)"


@pytest.mark.parametrize(("kind", "events", "reason", "request_"), [
    pytest.param("asset_triggered", lambda r, d: {r: [_event(EXTRA)]}, MONITORING_REASON, EXTRA,
                 id="retrain event: the monitoring reason and its extra"),
    pytest.param("asset_triggered", lambda r, d: {d: [_event({"version": "x"})], r: [_event(EXTRA)]},
                 MONITORING_REASON, EXTRA, id="retrain event next to a data event"),
    pytest.param("asset_triggered", lambda r, d: {r: [_event({**EXTRA, "as_of": "2013-02-01"}), _event(EXTRA)]},
                 MONITORING_REASON, EXTRA, id="the newest retrain event wins"),
    pytest.param("asset_triggered", lambda r, d: {d: [_event(EXTRA)]}, MONITORING_REASON, EXTRA,
                 id="an event whose extra names a monitoring run"),
    pytest.param("asset_triggered", lambda r, d: {d: [_event({})]}, "new dataset version", None,
                 id="data event only: new dataset version"),
    pytest.param("asset_triggered", lambda r, d: {d: [_event(None)]}, "new dataset version", None,
                 id="data event without extra"),
    pytest.param("scheduled", lambda r, d: {}, "weekly schedule", None, id="scheduled"),
    pytest.param("manual", lambda r, d: {}, "manual run by manual__2013-03-02", {}, id="manual: an empty request"),
    pytest.param("backfill", lambda r, d: {}, "backfill run by backfill__2013-03-02", {}, id="backfill"),
])
def test_training_trigger_says_why_a_run_trains(kind, events, reason, request_):
    """A retrain event carries the monitoring reason and its extra as the request; new data and
    the schedule are no request; a person's run is an empty request (it trains)."""
    from flightdeck_airflow.operators import TrainModelOperator

    retrain, data = _assets()
    assert TrainModelOperator.training_trigger(_trigger_context(kind, events(retrain, data))) == (reason, request_)


def test_training_trigger_reads_the_run_type_enum():
    """Airflow hands a DagRunType enum, not a string."""
    from airflow.utils.types import DagRunType
    from flightdeck_airflow.operators import TrainModelOperator

    context = {"dag_run": SimpleNamespace(run_type=DagRunType.MANUAL, run_id="manual__x")}
    assert TrainModelOperator.training_trigger(context) == ("manual run by manual__x", {})
    context["dag_run"].run_type = DagRunType.ASSET_TRIGGERED
    assert TrainModelOperator.training_trigger(context) == ("new dataset version", None)


# ---------------------------------------------------------------- TrainModelOperator._may_retrain_on_data
def test_new_data_retrains_while_nothing_is_registered(home):
    """An empty registry (no champion yet): a new dataset version trains the first model."""
    from flightdeck_airflow.operators import TrainModelOperator

    ctx = _ctx()
    assert ctx.spec.monitoring.retrain_on_new_data is False
    assert ctx.settings.mlflow_tracking_uri.startswith(f"sqlite:///{home}")
    assert TrainModelOperator._may_retrain_on_data(ctx) is True


def test_new_data_alone_does_not_replace_a_champion_unless_the_spec_says_so(home):
    """With a champion registered, only ``monitoring.retrain_on_new_data`` retrains on new data."""
    import mlflow
    from flightdeck_airflow.operators import TrainModelOperator

    ctx = _ctx()
    mlflow.set_tracking_uri(ctx.settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    name = ctx.spec.registered_model_name
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=(home / "model").as_uri())
    client.set_registered_model_alias(name, "champion", mv.version)

    assert TrainModelOperator._may_retrain_on_data(ctx) is False
    assert TrainModelOperator._may_retrain_on_data(_ctx(retrain_on_new_data=True)) is True
