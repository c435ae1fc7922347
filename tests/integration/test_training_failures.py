"""Training failure behaviour: a killed training registers nothing, and bad windows fail clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from flightdeck.core.settings import Settings
from flightdeck.core.storage import open_store
from flightdeck.data import replay, runners
from flightdeck.training import pipeline as training
from flightdeck.training.train import TrainingDataError

pytestmark = pytest.mark.slow
RUN_ID = "manual__kill-test"


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flights_spec):
    """Two weeks of real flights through the data stages, without Airflow."""
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "failure-key")
    settings = Settings.from_env()
    replay.replay(flights_spec, open_store(settings.landing_uri), date(2013, 5, 1), date(2013, 5, 14))
    ctx = runners.StageContext(flights_spec, settings, run_id="data-run")
    for stage in (runners.ingest_deliveries, runners.profile_batches, runners.validate_batches,
                  runners.curate_batches, runners.split_dataset):
        stage(ctx)
    return runners.StageContext(flights_spec, settings, run_id=RUN_ID, dag_id="flights_training")


def _client(settings: Settings):
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.MlflowClient()


def _runs(client, status: str | None = None):
    exp = client.get_experiment_by_name("flightdeck/flights")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`airflow.run_id` = '{RUN_ID}'")
    return [r for r in runs if status is None or r.info.status == status]


def test_killed_training_registers_nothing_and_the_rerun_succeeds(prepared):
    settings = prepared.settings
    code = ("from flightdeck.data import runners\n"
            "from flightdeck.training import pipeline as training\n"
            "from flightdeck.core.settings import Settings\n"
            "from flightdeck.core.spec import load_spec\n"
            "s = Settings.from_env()\n"
            "ctx = runners.StageContext(load_spec(s.specs_dir / 'flights.yaml'), s, "
            f"run_id={RUN_ID!r}, dag_id='flights_training')\n"
            "training.train_model(ctx)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = _client(settings)
    try:
        deadline = time.monotonic() + 300
        while not _runs(client, "RUNNING") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, "training finished before it could be killed"
        time.sleep(2)  # well inside candidate comparison
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    name = prepared.spec.registered_model_name
    assert client.search_model_versions(f"name = '{name}'") == [], "a killed training registered a version"
    assert _runs(client, "RUNNING"), "the killed attempt's parent run stays RUNNING"

    trained = training.train_model(prepared)  # the retry of the same DAG run
    assert not _runs(client, "RUNNING"), "the stale attempt is marked KILLED"
    assert {r.info.status for r in _runs(client) if "mlflow.parentRunId" not in r.data.tags} == {"KILLED", "FINISHED"}
    registered = training.register_model(prepared, trained)
    assert registered["version"] == "1"
    assert training.register_model(prepared, trained)["version"] == "1", "registering twice does not duplicate"


def test_training_window_without_data_fails_clearly_and_registers_nothing(prepared, capsys):
    with pytest.raises(TrainingDataError, match="train split is empty"):
        training.train_model(prepared, window=("2012-01-01", "2012-01-31"))
    from flightdeck.apps.cli import main

    assert main(["train", "flights", "--window-start", "2012-01-01", "--window-end", "2012-01-31"]) == 2
    assert "train split is empty" in capsys.readouterr().err
    client = _client(prepared.settings)
    name = prepared.spec.registered_model_name
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001
        versions = []
    assert versions == []
