"""Operators and the landing sensor called through ``execute`` with a minimal context."""

from __future__ import annotations

import json
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
    from flightdeck.core import manifests as contracts

    typed = {"ingest_deliveries": contracts.IngestManifest, "profile_batches": contracts.ProfileManifest,
             "validate_batches": contracts.ValidateManifest, "curate_batches": contracts.CurateManifest,
             "split_dataset": contracts.DatasetManifest}
    for stage, manifest in manifests.items():
        assert set(manifest) == set(typed[stage].__annotations__), f"{stage} pushes exactly its declared keys"
        assert json.loads(json.dumps(manifest)) == manifest, f"{stage}'s manifest is plain JSON"


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


# ---------------------------------------------------------------- how a stage ends, mapped once
def _errors():
    from flightdeck.core.spec import SpecError
    from flightdeck.data.ingest import DeliveryError, QualityGateError
    from flightdeck.data.split import LeakageError
    from flightdeck.gates.checks import GateError
    from flightdeck.monitoring.monitor import NothingToMonitor
    from flightdeck.serving.champion import ChampionLoadError, NoChampionError, ScoringInputError
    from flightdeck.training.features import FeatureError
    from flightdeck.training.pipeline import AlreadyTrained, NoDatasetError
    from flightdeck.training.train import TrainingDataError

    rejected = (SpecError, DeliveryError, QualityGateError, LeakageError, FeatureError, TrainingDataError, GateError,
                ChampionLoadError, ScoringInputError)
    nothing = (NoDatasetError, AlreadyTrained, NoChampionError, NothingToMonitor)
    return rejected, nothing


def test_every_stage_error_says_how_its_run_ends():
    from flightdeck.core.errors import NothingToDo, Rejected

    rejected, nothing = _errors()
    assert all(issubclass(e, Rejected) and not issubclass(e, NothingToDo) for e in rejected)
    assert all(issubclass(e, NothingToDo) and not issubclass(e, Rejected) for e in nothing)


@pytest.mark.parametrize(("error", "airflow_exception"), [
    ("rejected", "AirflowFailException"),
    ("nothing", "AirflowSkipException"),
])
def test_the_base_operator_maps_rejected_to_fail_and_nothing_to_do_to_skip(error, airflow_exception):
    from airflow.sdk import exceptions
    from flightdeck_airflow.operators import FlightDeckStageOperator

    rejected, nothing = _errors()
    op = FlightDeckStageOperator(task_id="t", spec_name="flights")
    for cls in rejected if error == "rejected" else nothing:
        def stage(cls=cls):
            if cls.__name__ == "DeliveryError":
                raise cls("flights_2013-01-05.csv", "DeliveryError: why, naming what")
            raise cls(f"{cls.__name__}: why, naming what")

        with pytest.raises(getattr(exceptions, airflow_exception), match=f"{cls.__name__}: why"):
            op.run_stage(stage)


def test_any_other_error_propagates_so_airflow_retries():
    from flightdeck_airflow.operators import FlightDeckStageOperator

    op = FlightDeckStageOperator(task_id="t", spec_name="flights")

    def stage():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        op.run_stage(stage)
    assert op.run_stage(lambda x: x + 1, 1) == 2
