"""Data DAG then training DAG with dag.test() on three weeks of real flights."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "training-key")
    return tmp_path / "fd"


def _dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_training_dag_registers_a_tagged_challenger(airflow_db, home, flights_spec):
    import mlflow
    from flightdeck import replay
    from flightdeck.settings import Settings
    from flightdeck.storage import open_store

    settings = Settings.from_env()
    dags = _dags()
    # before any data: the training run skips cleanly instead of failing
    early = dags["flights_training"].test()
    assert _states(early)["train"] == "skipped"

    replay.replay(flights_spec, open_store(settings.landing_uri), date(2013, 4, 1), date(2013, 4, 21))
    data_run = dags["flights_data"].test()
    assert data_run.state == "success", _states(data_run)
    run = dags["flights_training"].test()
    assert run.state == "success", _states(run)

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    name = flights_spec.registered_model_name
    version = client.get_model_version_by_alias(name, "challenger")
    for tag in ("flightdeck.data_snapshot", "flightdeck.training_window", "flightdeck.features",
                "flightdeck.code_version", "flightdeck.prediction_fingerprint", "validation.roc_auc",
                "validation.log_loss", "test.roc_auc", "test.log_loss", "airflow.run_id"):
        assert version.tags.get(tag), f"version tag {tag} missing"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(name, "champion")  # registering never touches champion
    parent = client.get_run(version.run_id) if version.run_id else None
    assert parent is None or parent.data.tags["airflow.dag_id"] == "flights_training"
    runs = client.search_runs([client.get_experiment_by_name("flightdeck/flights").experiment_id])
    assert sum(1 for r in runs if r.data.tags.get("mlflow.parentRunId")) >= 4, "nested candidate runs"
    artifacts = {a.path for a in client.list_artifacts(runs[-1].info.run_id)} if runs else set()
    assert artifacts is not None

    model = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    assert model.metadata.signature is not None

    # the same dataset again: nothing new to learn, so the run skips and nothing is registered
    again = dags["flights_training"].test()
    assert _states(again)["train"] == "skipped"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
