"""The production topology, natively: the flights chain through a CeleryExecutor cluster, and a fault drill.

One cluster for the module (``flightdeck.apps.cluster``): Airflow with the CeleryExecutor on
PostgreSQL (its own databases, dropped afterwards) and Redis (a dedicated db number and queue),
two Celery workers with one slot each, the scheduler, the DAG processor, the triggerer and the
API server; an MLflow server on PostgreSQL with artifacts in S3; the landing zone and the lake on
a loopback S3 server (moto, a separate process: boto3 is not patched); the warehouse on PostgreSQL.

1. Two weeks of January 2013 land, then three days of schedules: the sensor, the data DAG, the
   asset-triggered training, gate, champion-triggered scoring (mapped over the open partitions)
   and monitoring run through the real scheduler and the Celery workers.
2. The fault drill: a rescoring run of one partition; the worker running it is SIGKILLed (with
   its task processes) mid-task; the scheduler notices the missing heartbeat, the retry runs on
   the other worker, the partition ends complete with no duplicates, and a reader of the
   ``_current`` view never sees a mix of two runs.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[2]
SPEC = "flights"
DAGS = [f"{SPEC}_{kind}" for kind in ("monitoring", "scoring", "gate", "training", "data")]
HISTORY = (date(2013, 1, 1), date(2013, 1, 14))  # schedules and outcomes: the training data
OPEN = [date(2013, 1, 15) + timedelta(days=i) for i in range(3)]  # schedules only: what scoring scores
TIMINGS: dict[str, float] = {}


def _postgres_url() -> str:
    url = os.environ.get("FLIGHTDECK_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("FLIGHTDECK_TEST_POSTGRES_URL is not set under CI")
        pytest.skip("FLIGHTDECK_TEST_POSTGRES_URL is not set: no PostgreSQL for the cluster")
    return sa.engine.make_url(url).set(database=None).render_as_string(hide_password=False)


def _require_redis() -> None:
    """The broker: Redis on 127.0.0.1:6379 (.ci/run starts it); without it the test skips, except under CI."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(("127.0.0.1", 6379)) == 0:
            return
    if os.environ.get("CI"):
        pytest.fail("no Redis on 127.0.0.1:6379 under CI")
    pytest.skip("no Redis on 127.0.0.1:6379: no broker for the Celery cluster")


def _quick_specs(target: Path) -> Path:
    """The flights spec with a smaller model search and two relative gates relaxed.

    The chain, not the model's quality, is under test: on two weeks of data and one tuning trial
    the logistic baseline can beat the chosen model and the airports' calibration differs more
    than on a month, and the gate would (rightly) reject. Here the baseline is the dummy model
    and the inclusion gap is wide; every other hard gate still applies.
    """
    target.mkdir(parents=True)
    shutil.copytree(REPO / "include" / "specs" / SPEC, target / SPEC)
    doc = yaml.safe_load((REPO / "include" / "specs" / f"{SPEC}.yaml").read_text())
    doc["training"].update({"candidates": ["dummy", "logistic", "lightgbm"], "cv_folds": 2, "tune_top": 1,
                            "tuning_budget": 1})
    doc["gates"].update({"baseline": "dummy", "inclusion": {**doc["gates"]["inclusion"], "max_gap": 1.0}})
    (target / f"{SPEC}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from flightdeck.apps import cluster as launcher

    _require_redis()
    home = tmp_path_factory.mktemp("cluster")
    config = launcher.ClusterConfig(
        home=home / "fd", postgres_url=_postgres_url(), redis_url="redis://127.0.0.1:6379/5",
        suffix=f"t{uuid.uuid4().hex[:8]}", workers=2, worker_concurrency=1, api_port=0, mlflow_port=0,
        extra_env={
            # the drill: a worker that stops heartbeating is noticed within seconds, not minutes
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        })
    base = {**os.environ, "FLIGHTDECK_SPECS_DIR": str(_quick_specs(home / "specs")),
            "FLIGHTDECK_PSEUDONYMISATION_KEY": f"cluster-test-{uuid.uuid4().hex}"}
    clock = time.monotonic()
    try:
        started = launcher.start_cluster(config, base_env=base, say=print)
    except BaseException:
        launcher.drop_databases(config)  # start_cluster stopped what it started
        raise
    TIMINGS["start-up"] = time.monotonic() - clock
    mp = pytest.MonkeyPatch()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED"):
        mp.setenv(name, started.env[name])
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(name, raising=False)
    meta = sa.create_engine(started.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    warehouse = sa.create_engine(started.env["FLIGHTDECK_WAREHOUSE_URL"])
    try:
        yield started, meta, warehouse
    finally:
        meta.dispose()
        warehouse.dispose()
        mp.undo()
        started.stop(grace=10)
        launcher.drop_databases(config)
        print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in TIMINGS.items()))


def _runs(meta: sa.Engine, dag_id: str) -> list[dict[str, Any]]:
    with meta.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT run_id, run_type, state, start_date, end_date FROM dag_run WHERE dag_id = :d ORDER BY id"),
            {"d": dag_id}).mappings()]


def _tis(meta: sa.Engine, dag_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
    sql = ("SELECT run_id, task_id, map_index, state, hostname, pid, try_number FROM task_instance "
           "WHERE dag_id = :d" + (" AND run_id = :r" if run_id else ""))
    with meta.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), {"d": dag_id, "r": run_id}).mappings()]


def _finished(meta: sa.Engine, dag_id: str, run_type: str | None = None, after: Any = None) -> list[dict[str, Any]]:
    """The finished runs of ``dag_id`` (of ``run_type``, started at or after ``after``), oldest first."""
    return [run for run in _runs(meta, dag_id)
            if (run_type is None or run["run_type"] == run_type) and run["state"] in ("success", "failed")
            and (after is None or (run["start_date"] and run["start_date"] >= after))]


def _land(settings: Any) -> None:
    """The deliveries of the history days, and the schedules (no outcomes yet) of the open days."""
    from flightdeck.core.spec import load_spec
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay

    spec = load_spec(settings.specs_dir / f"{SPEC}.yaml")
    landing = open_store(settings.landing_uri, settings.s3_endpoint_url)
    replay.replay(spec, landing, *HISTORY)
    replay.replay(spec, landing, OPEN[0], OPEN[-1])
    assert spec.labels_source is not None
    for day in OPEN:
        landing.delete(f"{spec.name}/{replay.delivery_name(spec.labels_source.pattern, day)}")


def test_the_flights_chain_runs_through_the_celery_cluster(cluster):
    from flightdeck.apps import cluster as launcher
    from flightdeck.core.settings import Settings

    started, meta, warehouse = cluster
    settings = Settings.from_env(started.env)
    clock = time.monotonic()
    _land(settings)
    api = launcher.api_of(started)
    launcher.wait_until(lambda: set(DAGS) <= api.dag_ids(), "the DAG processor to parse the flights DAGs", 180,
                        started, interval=2)
    for dag_id in DAGS:
        api.unpause(dag_id)
    # unpausing makes the scheduler create the data DAG's run of the latest interval; its sensor finds the files
    try:
        data_run = launcher.wait_until(lambda: next(iter(_runs(meta, f"{SPEC}_data")), None), "the data run", 30)
    except TimeoutError:
        api.trigger(f"{SPEC}_data", "cluster__data")
        data_run = {"run_id": "cluster__data"}
    deadline = 330

    def chain_done() -> dict[str, Any] | None:
        """The champion-triggered scoring run (mapped score tasks), once a monitoring run after it finished."""
        for scoring in _finished(meta, f"{SPEC}_scoring", "asset_triggered"):
            if any(t["task_id"] == "score" and t["map_index"] >= 0
                   for t in _tis(meta, f"{SPEC}_scoring", scoring["run_id"])):
                return scoring if _finished(meta, f"{SPEC}_monitoring", after=scoring["start_date"]) else None
        return None

    try:
        scoring_run = launcher.wait_until(chain_done, "sensor → data → training → gate → scoring → monitoring",
                                          deadline, started, interval=3)
    finally:
        TIMINGS["chain"] = time.monotonic() - clock
    states = {d: [(r["run_id"], r["run_type"], r["state"]) for r in _runs(meta, d)] for d in DAGS}
    for dag_id, runs in states.items():
        assert not [r for r in runs if r[2] == "failed"], f"{dag_id}: {runs}"
    data_tis = {t["task_id"]: t for t in _tis(meta, f"{SPEC}_data", data_run["run_id"])}
    assert data_tis["wait_for_deliveries"]["state"] == "success", data_tis
    assert data_tis["split"]["state"] == "success"
    for dag_id in (f"{SPEC}_training", f"{SPEC}_gate"):
        finished = [r["state"] for r in _finished(meta, dag_id, "asset_triggered")]
        assert finished and set(finished) == {"success"}, states[dag_id]
    assert scoring_run["state"] == "success", states[f"{SPEC}_scoring"]

    # tasks ran on both workers, and the mapped scoring partitions spread across them
    workers = {f"{n}@{os.uname().nodename}" for n in started.worker_names}
    ran = [t for d in DAGS for t in _tis(meta, d) if t["state"] == "success" and t["hostname"]]
    assert {t["hostname"] for t in ran} == workers, {t["hostname"] for t in ran}
    scored = [t for t in _tis(meta, f"{SPEC}_scoring", scoring_run["run_id"])
              if t["task_id"] == "score" and t["map_index"] >= 0]
    assert len(scored) == len(OPEN) and all(t["state"] == "success" for t in scored), scored
    assert {t["hostname"] for t in scored} == workers, scored

    # the predictions landed in PostgreSQL, one partition per open day
    with warehouse.connect() as conn:
        counts = dict(conn.execute(sa.text(f"SELECT partition_date, count(*) FROM {SPEC}_predictions "
                                           "GROUP BY partition_date")).all())
    assert sorted(counts) == [d.isoformat() for d in OPEN], counts
    assert all(n > 500 for n in counts.values()), counts

    # the model is in the MLflow server, its artifacts in the S3 bucket
    import boto3
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=started.mlflow_url, registry_uri=started.mlflow_url)
    champion = client.get_model_version_by_alias(f"flightdeck-{SPEC}", "champion")
    assert champion.version == "1"
    s3 = boto3.client("s3", endpoint_url=started.s3_url)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mlflow")
            for o in page.get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]
    assert champion.run_id and any(champion.run_id in k for k in keys), "the champion's run artifacts are in S3"
    lake = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake")
            for o in page.get("Contents", [])]
    assert any(k.startswith(f"data/curated/{SPEC}/") for k in lake), "the lake is on S3"


def _scoring_status(warehouse: sa.Engine, run_id: str, partition: str) -> str | None:
    """The status of the scoring run row of (run id, partition) in fd_scoring_runs, if any."""
    with warehouse.connect() as conn:
        return conn.execute(sa.text("SELECT status FROM fd_scoring_runs WHERE spec_name = :s AND run_id = :r "
                                    "AND partition_date = :p"), {"s": SPEC, "r": run_id, "p": partition}).scalar()


class _Reader(threading.Thread):
    """Reads one partition of the ``_current`` view over and over: (rows, distinct run ids) each time."""

    def __init__(self, url: str, partition: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url)
        self.partition = partition
        self.seen: list[tuple[int, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        sql = sa.text(f"SELECT count(*), count(DISTINCT run_id) FROM {SPEC}_predictions_current "
                      "WHERE partition_date = :p")
        while not self.halt.is_set():
            with self.engine.connect() as conn:
                rows, runs = conn.execute(sql, {"p": self.partition}).one()
            self.seen.append((int(rows), int(runs)))
            time.sleep(0.05)
        self.engine.dispose()


def test_a_worker_killed_mid_scoring_the_task_retries_on_the_other_worker(cluster):
    from flightdeck.apps import cluster as launcher

    started, meta, warehouse = cluster
    partition = OPEN[1].isoformat()
    table = f"{SPEC}_predictions"
    with warehouse.connect() as conn:
        expected, before = conn.execute(sa.text(f"SELECT count(*), min(run_id) FROM {table} "
                                                "WHERE partition_date = :p"), {"p": partition}).one()
    assert expected > 500, "the chain test scored the partition first"
    reader = _Reader(started.env["FLIGHTDECK_WAREHOUSE_URL"], partition)
    reader.start()
    run_id = f"drill__{uuid.uuid4().hex[:6]}"
    api = launcher.api_of(started)
    clock = time.monotonic()
    api.trigger(f"{SPEC}_scoring", run_id, {"partitions": partition, "force": True})

    def running_score() -> dict[str, Any] | None:
        return next((t for t in _tis(meta, f"{SPEC}_scoring", run_id) if t["task_id"] == "score"
                     and t["state"] == "running" and t["hostname"]), None)

    victim_ti = launcher.wait_until(running_score, "the scoring task to run", 180, started, interval=0.2)
    victim = victim_ti["hostname"].split("@")[0]
    assert victim in started.worker_names
    survivor = next(n for n in started.worker_names if n != victim)
    # in the middle of the task: score_partition has begun (its run row says so), nothing published yet
    launcher.wait_until(lambda: _scoring_status(warehouse, run_id, partition) == "running",
                        "the scoring task to begin the partition", 120, started, interval=0.1)
    started.kill(victim)
    killed_at = time.monotonic()
    try:
        launcher.wait_until(lambda: next((r for r in _runs(meta, f"{SPEC}_scoring") if r["run_id"] == run_id
                                          and r["state"] in ("success", "failed")), None),
                            "the drill run to finish", 300, started, interval=2)
    finally:
        TIMINGS["drill (kill to success)"] = time.monotonic() - killed_at
        TIMINGS["drill (trigger to success)"] = time.monotonic() - clock
        reader.halt.set()
        reader.join(10)
    run = next(r for r in _runs(meta, f"{SPEC}_scoring") if r["run_id"] == run_id)
    assert run["state"] == "success", _tis(meta, f"{SPEC}_scoring", run_id)
    score = next(t for t in _tis(meta, f"{SPEC}_scoring", run_id) if t["task_id"] == "score")
    assert score["try_number"] > 1, score
    assert score["hostname"] == f"{survivor}@{os.uname().nodename}", score
    with meta.connect() as conn:
        first = conn.execute(sa.text("SELECT try_number, state, hostname FROM task_instance_history "
                                     "WHERE dag_id = :d AND run_id = :r AND task_id = 'score' ORDER BY try_number"),
                             {"d": f"{SPEC}_scoring", "r": run_id}).mappings().first()
    assert first is not None and first["hostname"].startswith(victim + "@") and first["state"] == "failed", first

    with warehouse.connect() as conn:
        rows, runs, after = conn.execute(sa.text(f"SELECT count(*), count(DISTINCT run_id), min(run_id) FROM {table} "
                                                 "WHERE partition_date = :p"), {"p": partition}).one()
        dupes = conn.execute(sa.text(f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE partition_date = :p "
                                     "GROUP BY year, month, day, carrier, flight, origin, sched_dep_time "
                                     "HAVING count(*) > 1) d"), {"p": partition}).scalar_one()
    assert (rows, runs, dupes) == (expected, 1, 0)
    assert after != before, "the retry republished the partition"
    assert _scoring_status(warehouse, run_id, partition) == "published"
    assert reader.seen, "the reader ran during the drill"
    assert set(reader.seen) == {(expected, 1)}, sorted(set(reader.seen))
    TIMINGS["reader queries"] = len(reader.seen)
