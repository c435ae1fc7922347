"""The cluster launcher's pure parts: names, the environment every process gets, process groups."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flightdeck.apps import cluster

PORTS = {"s3": 9101, "api": 9102, "mlflow": 9103, "trigger_logs": 9104, "worker_logs": 9105}


@pytest.mark.parametrize(("suffix", "airflow_db", "queue"), [
    ("", "flightdeck_airflow", "flightdeck"),
    ("t1234", "flightdeck_airflow_t1234", "flightdeck_t1234"),
])
def test_database_and_queue_names(tmp_path: Path, suffix: str, airflow_db: str, queue: str):
    config = cluster.ClusterConfig(home=tmp_path, postgres_url="postgresql+psycopg://u:pw@db:5432", suffix=suffix)
    assert config.database("airflow") == airflow_db
    assert config.database_url("warehouse").endswith(f"/{airflow_db.replace('airflow', 'warehouse')}")
    assert config.database_url("mlflow").startswith("postgresql+psycopg://u:pw@db:5432/")
    assert config.queue == queue


def test_every_process_gets_the_celery_topology(tmp_path: Path):
    config = cluster.ClusterConfig(home=tmp_path, redis_url="redis://127.0.0.1:6379/5", suffix="x",
                                   extra_env={"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20"})
    env = cluster.cluster_env(config, PORTS, {"PATH": "/usr/bin", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                                              "FLIGHTDECK_HOME": "/elsewhere", "FLIGHTDECK_SPECS_DIR": "/specs"})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"  # the caller's Airflow settings do not leak in
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/5"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://")
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "flightdeck_x"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/flightdeck_airflow_x")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:9102/execution/"
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "flightdeck.apps.cluster.worker_hostname"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "20"
    assert env["FLIGHTDECK_HOME"] == str(tmp_path.resolve()) and env["FLIGHTDECK_SPECS_DIR"] == "/specs"
    assert env["FLIGHTDECK_WAREHOUSE_URL"].endswith("/flightdeck_warehouse_x")
    assert env["FLIGHTDECK_LAKE_URI"].startswith("s3://") and env["FLIGHTDECK_LANDING_URI"].startswith("s3://")
    assert env["FLIGHTDECK_S3_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9101"
    assert env["FLIGHTDECK_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9103"


def test_every_variable_is_a_setting_or_an_airflow_option(tmp_path: Path):
    from airflow.configuration import conf

    from tests.unit.test_compose import settings_variables

    env = cluster.cluster_env(cluster.ClusterConfig(home=tmp_path), PORTS, {})
    described = conf.configuration_description
    for var in env:
        if var.startswith("FLIGHTDECK_"):
            assert var in settings_variables(), var
        elif var.startswith("AIRFLOW__"):
            section, _, key = var.removeprefix("AIRFLOW__").partition("__")
            assert key.lower() in described.get(section.lower(), {}).get("options", {}), var


def test_s3_credentials_are_passed_through_or_made_up(tmp_path: Path):
    config = cluster.ClusterConfig(home=tmp_path)
    given = cluster.cluster_env(config, PORTS, {"AWS_ACCESS_KEY_ID": "mine", "AWS_SECRET_ACCESS_KEY": "s"})
    assert (given["AWS_ACCESS_KEY_ID"], given["AWS_SECRET_ACCESS_KEY"]) == ("mine", "s")
    one, two = (cluster.cluster_env(config, PORTS, {}) for _ in range(2))
    assert one["AWS_SECRET_ACCESS_KEY"] != two["AWS_SECRET_ACCESS_KEY"], "made up per cluster, never a constant"


def test_worker_hostname(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(cluster.WORKER_NAME_VAR, "worker2@box")
    assert cluster.worker_hostname() == "worker2@box"
    monkeypatch.delenv(cluster.WORKER_NAME_VAR)
    assert cluster.worker_hostname() == socket.getfqdn()


def test_kill_reaches_the_process_groups_below_the_service(tmp_path: Path):
    # a leader whose child moves into a process group of its own, as Airflow's task runners do
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
              "                         start_new_session=True)\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    c = cluster.Cluster(cluster.ClusterConfig(home=tmp_path), dict(os.environ), "", "", "")
    service = c.start("leader", [sys.executable, "-c", script])
    child = int(cluster.wait_until(lambda: service.log.read_text().strip(), "the child's pid", 30))
    assert os.getpgid(child) != service.pid
    assert cluster._process_groups(service.pid) == [service.pid, child]
    c.kill("leader", signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        subprocess.run(["true"])  # let init reap it
        time.sleep(0.1)
    else:
        pytest.fail("the child in its own process group survived the kill")
    assert c.dead() == [], "a service killed on purpose is not reported dead"
