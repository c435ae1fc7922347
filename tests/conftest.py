"""Test session set-up: an isolated Airflow home, FlightDeck home and metadata DB.

Environment variables are set here, before anything imports Airflow.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where the suite records its own ML Test Score evidence (Data 7, Infra 3); `make test` sets it.
_EVIDENCE_URL = os.environ.get("FLIGHTDECK_EVIDENCE_URL")
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
from flightdeck.core.settings import Settings  # noqa: E402
from flightdeck.core.spec import DatasetSpec, load_spec  # noqa: E402

FLIGHTS_SPEC = REPO / "include" / "specs" / "flights.yaml"
PENGUINS_SPEC = REPO / "tests" / "fixtures" / "specs" / "penguins.yaml"


@pytest.fixture(scope="session")
def flights_spec() -> DatasetSpec:
    return load_spec(FLIGHTS_SPEC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh, private FlightDeck home for one test."""
    return Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path / "fd"),
                              "FLIGHTDECK_PSEUDONYMISATION_KEY": "test-key-not-secret",
                              "FLIGHTDECK_CHUNK_ROWS": "500"})


@pytest.fixture
def penguins_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A FlightDeck home whose specs folder holds the penguins fixture spec alone, its stores initialised."""
    import shutil

    from flightdeck.apps import init as stores

    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(PENGUINS_SPEC, specs / "penguins.yaml")
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_SPECS_DIR", str(specs))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "penguins-key")
    stores.init_stores(Settings.from_env(), airflow=False)
    return tmp_path / "fd"


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Initialise every store once per session, as `flightdeck init` does (dag.test() needs the metadata DB)."""
    from flightdeck.apps import init as stores

    stores.init_stores(Settings.from_env())


_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        previous = _OUTCOMES.get(report.nodeid)
        if previous != "failed":
            _OUTCOMES[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Record what this session proved about the code version, when asked to (``make test`` does)."""
    if not _EVIDENCE_URL or not _OUTCOMES:
        return
    opts = session.config.option
    if opts.file_or_dir or opts.keyword or opts.markexpr or getattr(opts, "lf", False) or opts.deselect:
        return  # only a whole-suite session speaks for the code version
    from datetime import UTC, datetime

    from flightdeck.gates import promotion as gates
    from flightdeck.training import pipeline as training

    run_type = "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "manual"
    records = gates.record_suite_evidence(_EVIDENCE_URL, dict(_OUTCOMES), training.code_version(), run_type,
                                          f"pytest__{datetime.now(UTC):%Y%m%dT%H%M%S}")
    for ev in records:
        session.config.get_terminal_writer().line(f"ML Test Score evidence: {ev.test_id} {ev.outcome} "
                                                  f"({ev.detail}) for {ev.code_version}, run type {run_type}")
