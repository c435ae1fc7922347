"""Test session set-up: an isolated Airflow home, FlightDeck home and metadata DB.

Environment variables are set here, before anything imports Airflow.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="flightdeck-tests-"))

os.environ.update({
    "AIRFLOW_HOME": str(_SESSION_HOME / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_SESSION_HOME / 'airflow' / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    "FLIGHTDECK_HOME": str(_SESSION_HOME / "flightdeck"),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "NO_PROXY": "*",
})
(_SESSION_HOME / "airflow").mkdir(parents=True, exist_ok=True)
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include")]

import pytest  # noqa: E402
from flightdeck.settings import Settings  # noqa: E402
from flightdeck.spec import DatasetSpec, load_spec  # noqa: E402

FLIGHTS_SPEC = REPO / "include" / "specs" / "flights.yaml"


@pytest.fixture(scope="session")
def flights_spec() -> DatasetSpec:
    return load_spec(FLIGHTS_SPEC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh, private FlightDeck home for one test."""
    return Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path / "fd"),
                              "FLIGHTDECK_PSEUDONYMISATION_KEY": "test-key-not-secret",
                              "FLIGHTDECK_CHUNK_ROWS": "500"})


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Initialise the Airflow metadata DB once per session (needed by dag.test())."""
    from airflow.utils import db

    db.initdb()
