"""The MLflow store: created once however many processes open it together; "no champion" only
from the registry's own not-found answer; a broken or unreachable store names itself."""

from __future__ import annotations

import multiprocessing as mp
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flightdeck.core import registry
from flightdeck.core.settings import Settings
from flightdeck.serving import champion as serving
from mlflow.exceptions import MlflowException


def _open_fresh_store(uri: str, barrier: Any, index: int, results: Any) -> None:
    """One process: wait for the others, then open the store through the project's client."""
    try:
        barrier.wait(timeout=120)
        client = registry.mlflow_client(uri)
        client.create_registered_model(f"racer-{index}")
        client.search_experiments(max_results=5)
        results.put((index, "ok"))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which asserts
        results.put((index, f"{type(exc).__name__}: {exc}"))


def test_six_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_open_fresh_store, args=(uri, barrier, i, results)) for i in range(6)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    assert outcomes == {i: "ok" for i in range(6)}
    # the store is whole and usable afterwards
    assert registry.leftover_migration_tables(uri) == []
    client = registry.mlflow_client(uri)
    assert sorted(m.name for m in client.search_registered_models()) == [f"racer-{i}" for i in range(6)]
    from mlflow.store.db import utils as db_utils

    engine = sa.create_engine(uri)
    assert db_utils._get_schema_version(engine) == db_utils._get_latest_schema_revision()
    engine.dispose()


@pytest.mark.parametrize(("code", "message", "not_found"), [
    ("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=x not found", True),
    ("INVALID_PARAMETER_VALUE", "Registered model alias champion not found.", True),
    ("INVALID_PARAMETER_VALUE", "Invalid alias name 'v1'", False),
    ("INTERNAL_ERROR", "API request to http://127.0.0.1:1/api failed: Connection refused", False),
    ("TEMPORARILY_UNAVAILABLE", "not found", False),
])
def test_only_the_registrys_not_found_answer_means_absent(code: str, message: str, not_found: bool):
    from mlflow.protos.databricks_pb2 import ErrorCode

    assert registry.is_not_found(MlflowException(message, error_code=ErrorCode.Value(code))) is not_found


def test_no_champion_on_a_healthy_store_is_no_champion(settings: Settings, flights_spec):
    with pytest.raises(serving.NoChampionError, match="no @champion"):
        serving.resolve_model(flights_spec, settings)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_tracking_server_that_is_down_fails_naming_it(tmp_path: Path, flights_spec, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url = f"http://127.0.0.1:{_closed_port()}"
    down = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path), "FLIGHTDECK_MLFLOW_TRACKING_URI": url})
    with pytest.raises(registry.RegistryError, match=f"127.0.0.1:{url.rsplit(':', 1)[1]}") as caught:
        serving.resolve_model(flights_spec, down)
    assert not isinstance(caught.value, serving.NoChampionError)


def _broken_store(tmp_path: Path) -> str:
    """A store an interrupted migration left behind: its tables, plus alembic's temporary copy."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.init_store(uri)
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        conn.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250), value VARCHAR(5000), run_uuid VARCHAR(32))")
    registry._READY.discard(uri)  # a new process: it has not opened the store yet
    return uri


def test_a_broken_store_names_itself_and_how_to_recover(tmp_path: Path, flights_spec):
    uri = _broken_store(tmp_path)
    broken = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path), "FLIGHTDECK_MLFLOW_TRACKING_URI": uri})
    with pytest.raises(registry.RegistryError) as caught:
        serving.resolve_model(flights_spec, broken)
    message = str(caught.value)
    assert str(tmp_path / "mlflow.db") in message and "_alembic_tmp_tags" in message
    assert "flightdeck init --repair" in message


def test_repair_drops_the_leftover_copy_and_the_store_works_again(tmp_path: Path):
    uri = _broken_store(tmp_path)
    assert registry.repair_store(uri) == ["_alembic_tmp_tags"]
    client = registry.mlflow_client(uri)
    client.create_registered_model("after-repair")
    assert [m.name for m in client.search_registered_models()] == ["after-repair"]


def test_repair_refuses_a_copy_whose_original_is_gone(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        conn.execute("CREATE TABLE _alembic_tmp_widgets (id INTEGER)")
    with pytest.raises(registry.RegistryError, match="only copy"):
        registry.repair_store(uri)


def test_a_file_that_is_no_database_names_the_store(tmp_path: Path):
    (tmp_path / "mlflow.db").write_bytes(b"this is not a SQLite database" * 100)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(registry.RegistryError, match="mlflow.db"):
        registry.mlflow_client(uri)


def test_an_out_of_date_store_is_refused_in_tasks_and_migrated_by_init(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.init_store(uri)
    from mlflow.store.db import utils as db_utils

    engine = sa.create_engine(uri)
    with engine.begin() as conn:  # pretend an older MLflow made it
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0584bdc529eb'")
    engine.dispose()
    registry._READY.discard(uri)
    with pytest.raises(registry.RegistryError, match="flightdeck init"):
        registry.mlflow_client(uri)
    head = db_utils._get_latest_schema_revision()
    assert head != "0584bdc529eb"
