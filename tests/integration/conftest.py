"""Fixtures of the integration tests that talk to real services on loopback.

``s3_endpoint`` runs moto's S3-compatible server in a thread on 127.0.0.1. boto3 is not
patched: every call of :class:`flightdeck.core.storage.S3Store` is a real HTTP request.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "flightdeck-test",
    "AWS_SECRET_ACCESS_KEY": "flightdeck-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # never read a developer's real AWS profile or config
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_AWS_UNSET = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of an S3-compatible server (moto) listening on a free loopback port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _AWS_ENV.items():
            mp.setenv(name, value)
        for name in _AWS_UNSET:
            mp.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_client(s3_endpoint: str):
    """A plain boto3 S3 client of the test server, for set-up and independent checks."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def make_bucket(s3_client):
    """Create a bucket with a unique name (the server lives for the whole session)."""

    def _make(stem: str) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:10]}"
        s3_client.create_bucket(Bucket=name)
        return name

    return _make


@pytest.fixture
def home(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A private FlightDeck home (lake, warehouse, MLflow) for one test, read by the operators from the env."""
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "integration-key")
    from flightdeck.apps import init as stores
    from flightdeck.core.settings import Settings

    stores.init_stores(Settings.from_env(), airflow=False)  # as `flightdeck init` does before any DAG runs
    return tmp_path / "fd"


@pytest.fixture
def dags():
    """The DAGs of the dags folder, parsed like the DAG processor does; no import errors allowed."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    return bag.dags
