"""The production tracking set-up: an MLflow server whose artifacts live in S3.

A real ``mlflow server`` process on loopback (SQLite backend, ``--artifacts-destination``
an S3 bucket on the moto server), with FlightDeck pointed at it by
``FLIGHTDECK_MLFLOW_TRACKING_URI`` alone.
"""

from __future__ import annotations

import os
import socket
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

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path, s3_endpoint: str, make_bucket):
    bucket = make_bucket("mlflow-artifacts")
    port = _free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    exe = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", f"s3://{bucket}/artifacts"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        yield url, bucket
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_training_tracks_and_registers_through_a_server_with_s3_artifacts(
        tmp_path, monkeypatch, mlflow_server, s3_client, flights_spec):
    url, bucket = mlflow_server
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "server-key")
    monkeypatch.setenv("FLIGHTDECK_MLFLOW_TRACKING_URI", url)
    settings = Settings.from_env()
    spec = flights_spec.model_copy(update={"training": flights_spec.training.model_copy(
        update={"candidates": ("dummy", "lightgbm"), "tune_top": 1, "tuning_budget": 1})})
    replay.replay(spec, open_store(settings.landing_uri), date(2013, 8, 1), date(2013, 8, 10))
    ctx = runners.StageContext(spec, settings, run_id="data")
    for stage in (runners.ingest_deliveries, runners.validate_batches, runners.curate_batches,
                  runners.split_dataset):
        stage(ctx)
    train_ctx = runners.StageContext(spec, settings, run_id="manual__server", dag_id="flights_training")
    trained = training.train_model(train_ctx)
    registered = training.register_model(train_ctx, trained)

    import mlflow

    mlflow.set_tracking_uri(url)
    version = mlflow.MlflowClient().get_model_version_by_alias(spec.registered_model_name, "challenger")
    assert version.version == registered["version"] == "1"
    keys = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert any(k.endswith("leaderboard.json") for k in keys), "run artifacts are stored in S3"
    assert any(k.endswith("MLmodel") for k in keys), "the model is stored in S3"
    model = mlflow.pyfunc.load_model(f"models:/{spec.registered_model_name}@challenger")
    assert model.metadata.signature is not None
    assert not (Path(settings.home) / "mlartifacts").exists(), "nothing was written to local artifacts"
