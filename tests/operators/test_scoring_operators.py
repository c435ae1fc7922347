"""The scoring report operator sums its mapped score tasks, however many ran."""

from __future__ import annotations

import pytest


class _Ti:
    def __init__(self, value):
        self.value = value

    def xcom_pull(self, task_ids):
        return self.value


def _manifest(partition: str, rows: int, unknown: dict[str, int]) -> dict:
    return {"partition": partition, "rows": rows, "empty": rows == 0, "model_version": "1",
            "unknown_categories": unknown}


@pytest.mark.parametrize(("pulled", "partitions", "rows", "unknown"), [
    # one mapped instance: Airflow hands back its value, not a list of one (seen in the demo)
    (_manifest("2013-02-01", 926, {"dest": 2}), ["2013-02-01"], 926, {"dest": 2}),
    ([_manifest("2013-02-01", 926, {"dest": 2}), _manifest("2013-02-02", 0, {"dest": 1, "carrier": 3})],
     ["2013-02-01", "2013-02-02"], 926, {"dest": 3, "carrier": 3}),
    (None, [], 0, {}),
    ([None], [], 0, {}),
])
def test_report_sums_single_and_mapped_manifests(pulled, partitions, rows, unknown):
    from flightdeck_airflow.scoring import ScoringReportOperator

    summary = ScoringReportOperator(task_id="report", spec_name="flights").execute({"ti": _Ti(pulled)})
    assert (summary["partitions"], summary["rows"], summary["unknown_categories"]) == (partitions, rows, unknown)
    assert summary["empty"] == [p for p in partitions if p == "2013-02-02"]


# ---------------------------------------------------------------- ResolveChampionOperator
class _DagRun:
    run_type = "scheduled"
    run_id = "scheduled__2026-12-07T01:00:00+00:00"


def _resolve(monkeypatch: pytest.MonkeyPatch, tracking_uri: str, home) -> object:
    from flightdeck_airflow.scoring import ResolveChampionOperator

    monkeypatch.setenv("FLIGHTDECK_HOME", str(home))
    monkeypatch.setenv("FLIGHTDECK_MLFLOW_TRACKING_URI", tracking_uri)
    op = ResolveChampionOperator(task_id="champion", spec_name="flights")
    return op.execute({"run_id": _DagRun.run_id, "dag_run": _DagRun()})


def test_no_champion_yet_skips_the_run_saying_why(monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="no @champion version yet"):
        _resolve(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


def test_a_registry_that_is_down_fails_the_task_naming_it(monkeypatch, tmp_path):
    """Not a quiet skip: an unreachable tracking server is an error that names the server."""
    import socket

    from airflow.sdk.exceptions import AirflowSkipException
    from flightdeck.core.registry import RegistryError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(RegistryError, match=f"http://127.0.0.1:{port}") as caught:
        _resolve(monkeypatch, f"http://127.0.0.1:{port}", tmp_path)
    assert not isinstance(caught.value, AirflowSkipException)


def test_a_broken_store_fails_the_task_naming_it_and_the_repair(monkeypatch, tmp_path):
    import sqlite3

    from flightdeck.core import registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.init_store(uri)
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        conn.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250))")
    registry._READY.discard(uri)
    with pytest.raises(registry.RegistryError, match="flightdeck init --repair"):
        _resolve(monkeypatch, uri, tmp_path)
