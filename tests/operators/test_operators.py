"""Operators and the landing sensor called through ``execute`` with a minimal context."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from flightdeck.core import warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.storage import open_store
from flightdeck.data import replay


@pytest.fixture
def env_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "operator-test-key")
    return Settings.from_env()


def test_stage_operators_run_the_chain_and_return_small_manifests(env_home, flights_spec):
    from flightdeck_airflow.operators import (
        IngestDeliveriesOperator,
        ProfileBatchesOperator,
        SplitDatasetOperator,
        ValidateBatchesOperator,
        WrangleBatchesOperator,
    )

    replay.replay(flights_spec, open_store(env_home.landing_uri), date(2013, 6, 3), date(2013, 6, 5))
    context = {"run_id": "manual__op-test"}
    manifests = {}
    for op_cls in (IngestDeliveriesOperator, ProfileBatchesOperator, ValidateBatchesOperator,
                   WrangleBatchesOperator, SplitDatasetOperator):
        op = op_cls(task_id=op_cls.stage, spec_name="flights")
        manifests[op_cls.stage] = op.execute(context)
    assert manifests["ingest_deliveries"]["claimed"] == 6
    assert manifests["validate_batches"]["validated"] == 6
    assert manifests["split_dataset"]["train_rows"] > 0
    assert all(len(repr(m)) < 4000 for m in manifests.values()), "manifests stay small for XCom"


def test_rejected_delivery_fails_the_task_without_retry(env_home):
    from airflow.sdk.exceptions import AirflowFailException
    from flightdeck_airflow.operators import IngestDeliveriesOperator

    landing = Path(env_home.landing_uri) / "flights"
    landing.mkdir(parents=True)
    (landing / "flights_2013-06-03.csv").write_text("")
    with pytest.raises(AirflowFailException, match="flights_2013-06-03.csv: empty file"):
        IngestDeliveriesOperator(task_id="ingest", spec_name="flights").execute({"run_id": "manual__bad"})
    batch = warehouse.list_batches(warehouse.connect(env_home.warehouse_url), "flights")[0]
    assert batch["status"] == "rejected"


def test_landing_sensor_returns_waiting_files_or_defers(env_home, flights_spec):
    from airflow.sdk.exceptions import TaskDeferred
    from flightdeck_airflow.sensors import LandingZoneSensor
    from flightdeck_airflow.triggers import LandingFilesTrigger

    sensor = LandingZoneSensor(task_id="wait", spec_name="flights", poke_interval=1, timeout=5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert isinstance(deferred.value.trigger, LandingFilesTrigger)
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "flightdeck_airflow.triggers.LandingFilesTrigger" and kwargs["spec_name"] == "flights"

    replay.replay(flights_spec, open_store(env_home.landing_uri), date(2013, 6, 3), date(2013, 6, 3))
    assert sensor.execute({}) == ["flights/flights_2013-06-03.csv", "flights/outcomes_2013-06-03.csv"]


def test_sensor_skips_when_the_trigger_times_out(env_home):
    from airflow.sdk.exceptions import AirflowSkipException
    from flightdeck_airflow.sensors import LandingZoneSensor

    sensor = LandingZoneSensor(task_id="wait", spec_name="flights")
    with pytest.raises(AirflowSkipException, match="no deliveries"):
        sensor.execute_complete({}, {"status": "timeout"})
    assert sensor.execute_complete({}, {"status": "found", "files": ["flights/a.csv"]}) == ["flights/a.csv"]
