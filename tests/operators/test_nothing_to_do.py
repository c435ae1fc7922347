"""A run with nothing to do skips and says why; it never succeeds having done nothing."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest
from flightdeck.core.settings import Settings
from flightdeck.core.storage import open_store
from flightdeck.data import replay


@pytest.fixture
def env_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "nothing-key")
    return Settings.from_env()


def _manual(run_id: str = "manual__2013-03-01") -> dict[str, object]:
    return {"run_id": run_id, "dag_run": SimpleNamespace(run_type="manual", run_id=run_id)}


def test_a_manual_run_with_nothing_landed_skips_at_the_sensor_naming_where_it_looked(env_home):
    from airflow.sdk.exceptions import AirflowSkipException
    from flightdeck_airflow.sensors import LandingZoneSensor

    sensor = LandingZoneSensor(task_id="wait", spec_name="flights")
    with pytest.raises(AirflowSkipException) as skipped:
        sensor.execute(_manual())
    text = str(skipped.value)
    assert "nothing to ingest" in text and "flights_*.csv" in text and f"{env_home.landing_uri}/flights/" in text


def test_ingest_skips_when_only_duplicates_arrive_and_nothing_waits(env_home, flights_spec):
    from airflow.sdk.exceptions import AirflowSkipException
    from flightdeck.data import runners
    from flightdeck_airflow.operators import (
        IngestDeliveriesOperator,
        ProfileBatchesOperator,
        SplitDatasetOperator,
        ValidateBatchesOperator,
        WrangleBatchesOperator,
    )

    landing = open_store(env_home.landing_uri)
    replay.replay(flights_spec, landing, date(2013, 6, 3), date(2013, 6, 3))
    first = IngestDeliveriesOperator(task_id="ingest", spec_name="flights").execute(_manual("manual__1"))
    assert first["batches"] == 2
    for op_cls in (ProfileBatchesOperator, ValidateBatchesOperator, WrangleBatchesOperator, SplitDatasetOperator):
        op_cls(task_id=op_cls.stage, spec_name="flights").execute(_manual("manual__1"))

    replay.replay(flights_spec, landing, date(2013, 6, 3), date(2013, 6, 3))  # the same bytes again
    with pytest.raises(AirflowSkipException, match="nothing to ingest for flights: only duplicates"):
        IngestDeliveriesOperator(task_id="ingest", spec_name="flights").execute(_manual("manual__2"))
    assert issubclass(runners.NoCuratedData, ValueError)


def test_split_without_curated_data_skips(env_home):
    from airflow.sdk.exceptions import AirflowSkipException
    from flightdeck_airflow.operators import SplitDatasetOperator

    with pytest.raises(AirflowSkipException, match="no curated data for spec 'flights' yet"):
        SplitDatasetOperator(task_id="split", spec_name="flights").execute(_manual())


def test_dag_start_dates_let_a_historical_logical_date_run(flights_spec, tmp_path):
    from flightdeck.core.spec import load_spec
    from flightdeck_airflow.dags import START_DATE, start_date_of

    assert start_date_of(flights_spec) == START_DATE <= pendulum.datetime(2013, 1, 1, tz="UTC")
    penguins = load_spec(Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "penguins.yaml")
    assert start_date_of(penguins) == START_DATE, "a later spec start_date is the sensor's to enforce"
    early = penguins.model_copy(update={"start_date": "1999-06-01"})
    assert start_date_of(early) == pendulum.datetime(1999, 6, 1, tz="UTC")


def test_a_run_before_the_spec_start_date_skips_saying_so(env_home, tmp_path, monkeypatch):
    import shutil

    from airflow.sdk.exceptions import AirflowSkipException
    from flightdeck_airflow.sensors import LandingZoneSensor

    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "penguins.yaml", specs)
    monkeypatch.setenv("FLIGHTDECK_SPECS_DIR", str(specs))
    sensor = LandingZoneSensor(task_id="wait", spec_name="penguins")
    context = {**_manual(), "logical_date": pendulum.datetime(2005, 1, 1, tz="UTC")}
    with pytest.raises(AirflowSkipException, match="logical date 2005-01-01 is before spec penguins's "
                                                   "start_date 2007-11-01"):
        sensor.execute(context)
