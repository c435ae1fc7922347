"""Data DAG then training DAG with dag.test() on three weeks of real flights."""

from __future__ import annotations

from datetime import date

import pytest

pytestmark = pytest.mark.slow


def _states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_training_dag_registers_a_tagged_challenger(airflow_db, home, dags, flights_spec):
    import mlflow
    from flightdeck.core.settings import Settings
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay

    settings = Settings.from_env()
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
    parent = client.get_run(version.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["airflow.dag_id"] == "flights_training" and parent.data.tags["git.commit"]
    runs = client.search_runs([parent.info.experiment_id])
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags["flightdeck.family"] for r in nested} >= {"dummy", "logistic", "random_forest", "lightgbm"}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"evaluation", "spec", "data_reports"} <= artifacts
    evaluation = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"leaderboard.json", "feature_layout.json", "environment.txt"} <= evaluation
    assert {i.dataset.name.split("-")[1] for i in parent.inputs.dataset_inputs} == {"train", "validation", "test"}

    model = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    assert model.metadata.signature is not None

    # the same dataset again: nothing new to learn, so the run skips and nothing is registered
    again = dags["flights_training"].test()
    assert _states(again)["train"] == "skipped"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
